"""Local classifier training with DP-SGD (Opacus) on one site's cache.

The differentially private counterpart of
:func:`fedbone.classifier.local.train_local`. What differs, and why:

- **Sampling.** Each batch is a uniform Poisson draw of the labelled training
  scans (rate ``1 / ceil(n / batch_size)``), which is what the accountants
  assume. The class-balanced resampling of non-DP training would make a scan's
  chance of being drawn depend on its label and void the accounting, so
  ``TrainSpec.sampling`` is ignored; class balance comes from ``pos_weight``
  (negatives / positives) in the BCE instead. Those label counts are the ones
  the site already reports in its census.
- **No FedProx term, no early stopping.** The proximal term is not a
  per-sample loss and would escape clipping; picking the best epoch on the
  validation split would spend that split's privacy outside the accountant.
- **No mixed precision.** Per-sample gradient norms in float16 overflow and
  distort the clipping, so AMP is off whatever ``TrainSpec.amp`` says.
- **Accounting** over the whole stream: the caller keeps an
  :class:`~fedbone.privacy.dp_sgd.AccountantState` across rounds and restarts
  and gets back the cumulative ε after this call.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fedbone.classifier.augment import Augmenter
from fedbone.classifier.errors import TrainingError
from fedbone.classifier.local import (
    TrainResult,
    TrainSpec,
    evaluate_split,
    labelled_rows,
)
from fedbone.classifier.runtime import (
    TrainingImages,
    input_channels,
    resolve_device,
    seed_everything,
    to_model_input,
)
from fedbone.errors import Problem
from fedbone.privacy.dp_sgd import (
    AccountantState,
    DpSgdSpec,
    make_dp_compatible,
    noise_for_target,
    prepare_for_dp_hooks,
)
from fedbone.privacy.errors import PrivacyError

__all__ = ["DpCallPlan", "DpTrainResult", "plan_dp_call", "train_local_dp"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DpTrainResult(TrainResult):
    """A :class:`TrainResult` plus what the run spent.

    Attributes
    ----------
    epsilon
        Cumulative ε of this stream (all calls so far) at ``delta``.
    delta
        δ of ``epsilon``.
    accountant_state
        The history to persist and pass to the next call.
    noise_multiplier
        Noise used in this call.
    sample_rate
        Poisson sampling rate of this call.
    steps
        DP-SGD steps taken in this call.
    clipping
        ``ghost`` or ``hooks``: what actually ran.
    """

    epsilon: float
    delta: float
    accountant_state: AccountantState
    noise_multiplier: float
    sample_rate: float
    steps: int
    clipping: str


@dataclass(frozen=True)
class DpCallPlan:
    """What one :func:`train_local_dp` call will spend, known before it runs.

    ``AccountantState.extended(noise_multiplier, sample_rate, steps)`` gives
    the ε the stream will have after the call, so a site can check its
    budget before training.
    """

    noise_multiplier: float
    sample_rate: float
    steps: int


def plan_dp_call(
    n_examples: int, spec: TrainSpec, dp: DpSgdSpec, planned_steps: int | None
) -> DpCallPlan:
    """Return the noise, Poisson rate and steps of a call on ``n_examples`` scans.

    The rate is Opacus' ``1 / ceil(n / batch_size)``; with
    ``dp.target_epsilon`` the noise spends the target over ``planned_steps``.

    Parameters
    ----------
    n_examples
        Number of labelled training scans the call will sample from.
    spec
        Training settings; ``batch_size``, ``epochs`` and
        ``max_batches_per_epoch`` set the rate and the step count.
        ``proximal_mu`` must be 0.
    dp
        DP-SGD settings; a fixed ``noise_multiplier`` is used as is, otherwise
        the noise is derived from ``target_epsilon``, ``delta`` and the
        accountant.
    planned_steps
        DP-SGD steps of the whole planned run (all rounds); required with
        ``dp.target_epsilon``, ignored with a fixed noise multiplier.

    Raises
    ------
    PrivacyError
        When ``spec`` or ``planned_steps`` do not fit DP-SGD.
    """
    _check_supported(spec, dp, planned_steps)
    batches = -(-n_examples // spec.batch_size)
    sample_rate = 1.0 / batches
    per_epoch = batches
    if spec.max_batches_per_epoch is not None:
        per_epoch = min(per_epoch, spec.max_batches_per_epoch)
    if dp.noise_multiplier is not None:
        noise = dp.noise_multiplier
    else:
        assert dp.target_epsilon is not None and planned_steps is not None
        noise = noise_for_target(
            dp.target_epsilon, dp.delta, sample_rate, planned_steps, dp.accountant
        )
    return DpCallPlan(noise, sample_rate, spec.epochs * per_epoch)


class _LabelledRows(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """The labelled training scans as ``(canvas (H, W), label)`` items."""

    def __init__(
        self, cache: TrainingImages, positions: np.ndarray, labels: np.ndarray
    ) -> None:
        self.cache = cache
        self.positions = positions
        self.labels = torch.from_numpy(labels.astype(np.float32))

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        row = np.asarray(self.cache.images[int(self.positions[item])])
        return torch.from_numpy(row.astype(np.float32)), self.labels[item]


def _check_supported(spec: TrainSpec, dp: DpSgdSpec, planned_steps: int | None) -> None:
    problems: list[Problem] = []
    if spec.proximal_mu > 0:
        problems.append(
            Problem(
                "proximal-in-dp",
                "the FedProx term is not a per-sample loss and would escape "
                "clipping; set proximal_mu: 0 (use FedAvg/FedAdam) with DP-SGD",
                "proximal_mu",
            )
        )
    if dp.target_epsilon is not None and (planned_steps is None or planned_steps < 1):
        problems.append(
            Problem(
                "missing-planned-steps",
                "a target epsilon needs the planned number of DP-SGD steps of the "
                "whole run (rounds x local epochs x steps per epoch)",
                "planned_steps",
            )
        )
    PrivacyError.raise_if_any("DP-SGD training", problems)
    if spec.early_stopping_patience is not None:
        logger.warning(
            "early stopping is off under DP-SGD: choosing an epoch on the "
            "validation split would spend its privacy outside the accountant"
        )


def _make_private(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    loader: DataLoader[tuple[torch.Tensor, torch.Tensor]],
    dp: DpSgdSpec,
    noise: float,
) -> tuple[nn.Module, torch.optim.Optimizer, nn.Module, DataLoader[Any], str]:
    """Wrap the training objects; ghost clipping falls back to hooks if unsupported."""
    engine = PrivacyEngine(accountant=dp.accountant)
    common = {
        "module": model,
        "optimizer": optimizer,
        "criterion": criterion,
        "data_loader": loader,
        "noise_multiplier": noise,
        "max_grad_norm": dp.max_grad_norm,
        "poisson_sampling": dp.poisson_sampling,
        # An empty Poisson draw still takes a (pure-noise) step.
        "rand_on_empty": True,
    }
    if dp.clipping == "ghost":
        try:
            module, opt, dp_criterion, dp_loader = engine.make_private(
                **common, grad_sample_mode="ghost"
            )
            return module, opt, dp_criterion, dp_loader, "ghost"
        except (NotImplementedError, ValueError) as error:
            logger.warning(
                "ghost clipping cannot wrap this model (%s); using per-sample "
                "gradient hooks instead",
                error,
            )
    module, opt, dp_loader = engine.make_private(**common, grad_sample_mode="hooks")
    return module, opt, criterion, dp_loader, "hooks"


def train_local_dp(
    model: nn.Module,
    cache: TrainingImages,
    task: str,
    spec: TrainSpec,
    dp: DpSgdSpec,
    *,
    state: AccountantState | None,
    planned_steps: int | None,
) -> DpTrainResult:
    """Train ``model`` in place with DP-SGD on the site's ``train`` split.

    Parameters
    ----------
    model
        A DP-compatible classifier (group norm), ``(B, C, H, W) -> (B,)``.
    cache
        The site's prepared cache; rows with an unknown label are skipped.
    task
        ``bm`` or ``ca``.
    spec
        Epochs, batch size, AdamW settings, augmentation, seed, device.
        ``sampling``, ``amp`` and ``early_stopping_patience`` do not apply
        (see the module docstring); ``proximal_mu`` must be 0.
    dp
        DP-SGD settings.
    state
        The stream's history so far; ``None`` starts a new stream.
    planned_steps
        DP-SGD steps of the whole planned run (all rounds); needed with
        ``dp.target_epsilon``, whose noise then spends the target over that
        many steps and is the same every round.

    Returns
    -------
    DpTrainResult
        The figures of :class:`TrainResult` plus ε, the new state, the noise,
        the sampling rate and the steps. The model is a plain module again,
        with its original state-dict keys.

    Raises
    ------
    PrivacyError
        When the model is not DP-compatible or a setting does not fit DP-SGD.
    TrainingError
        When the task, data or device do not allow a run.
    """
    started = time.perf_counter()
    make_dp_compatible(model, fix=False)
    prepare_for_dp_hooks(model)
    state = state or AccountantState(dp.accountant)
    if state.accountant != dp.accountant:
        raise PrivacyError(
            "DP-SGD training",
            [
                Problem(
                    "accountant-changed",
                    f"the stream was accounted with {state.accountant!r}, the spec "
                    f"asks for {dp.accountant!r}; keep one accountant per stream",
                    "accountant",
                )
            ],
        )
    positions, labels = labelled_rows(cache, task, "train")
    if len(positions) == 0:
        raise TrainingError(
            cache.cache_dir,
            [Problem("no-training-scans", f"no train scan is labelled for {task}")],
        )
    device = resolve_device(spec.device)
    seed_everything(spec.seed)
    model.to(device).train()
    positives = float(labels.sum())
    pos_weight = (len(labels) - positives) / positives if positives else 1.0
    criterion = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, device=device))
    loader: DataLoader[tuple[torch.Tensor, torch.Tensor]] = DataLoader(
        _LabelledRows(cache, positions, labels), batch_size=spec.batch_size
    )
    plan = plan_dp_call(len(positions), spec, dp, planned_steps)
    noise, sample_rate = plan.noise_multiplier, plan.sample_rate
    steps_per_epoch = plan.steps // spec.epochs
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=spec.lr,
        weight_decay=spec.weight_decay,
    )
    private, dp_optimizer, dp_criterion, dp_loader, clipping = _make_private(
        model, optimizer, criterion, loader, dp, noise
    )
    augmenter = Augmenter(spec.augment, spec.seed)
    channels = input_channels(model)
    losses: list[float] = []
    steps = 0
    try:
        for _ in range(spec.epochs):
            epoch_loss, epoch_images = 0.0, 0
            for step, (canvases, targets) in enumerate(dp_loader):
                if step >= steps_per_epoch:
                    break
                images = augmenter(to_model_input(canvases, channels)).to(device)
                targets = targets.to(device, torch.float32)
                dp_optimizer.zero_grad(set_to_none=True)
                loss = dp_criterion(private(images).float(), targets)
                loss.backward()
                dp_optimizer.step()
                steps += 1
                epoch_loss += float(loss.detach()) * len(targets)
                epoch_images += len(targets)
            losses.append(epoch_loss / max(1, epoch_images))
    finally:
        restored = private.to_standard_module()  # type: ignore[operator]
        restored.zero_grad(set_to_none=True)
    state = state.extended(noise, sample_rate, steps)
    if planned_steps is not None and state.steps > planned_steps:
        logger.warning(
            "this stream has taken %d DP-SGD steps, more than the %d planned: "
            "its epsilon now exceeds the target",
            state.steps,
            planned_steps,
        )
    _, val_loss, val_auc = evaluate_split(
        model, cache, task, "val", batch_size=4 * spec.batch_size, device=spec.device
    )
    result = DpTrainResult(
        n_examples=len(positions),
        epochs_run=spec.epochs,
        train_loss=losses[-1],
        val_loss=val_loss,
        val_auc=val_auc,
        best_epoch=spec.epochs,
        seconds=time.perf_counter() - started,
        epsilon=state.epsilon(dp.delta),
        delta=dp.delta,
        accountant_state=state,
        noise_multiplier=noise,
        sample_rate=sample_rate,
        steps=steps,
        clipping=clipping,
    )
    logger.info(
        "DP-trained %s on %d scans: %d steps, noise %.3f, rate %.4f, %s clipping, "
        "epsilon %.3f at delta %.2e, %.1f s",
        task,
        result.n_examples,
        steps,
        noise,
        sample_rate,
        clipping,
        result.epsilon,
        dp.delta,
        result.seconds,
    )
    return result
