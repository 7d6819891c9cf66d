"""Local classifier training and inference on one site's prepared cache.

Flower-free: the federation layer calls :func:`train_local` with the weights
it received and sends back the result; a notebook can call it directly.

Batches are read straight from the cache's float16 memory map (indices sorted
for sequential reads, then put back in order) and converted on the fly; at
these image sizes a ``DataLoader`` with worker processes costs more in
start-up and pickling than it saves, on the two cores a CPU site may have.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.nn import functional

from fedbone.data.cache import SiteCache
from fedbone.errors import Problem
from fedbone.training.augment import Augmenter, AugmentSpec
from fedbone.training.errors import TrainingError
from fedbone.training.sampling import Sampling, epoch_indices

__all__ = [
    "TrainResult",
    "TrainSpec",
    "evaluate_split",
    "labelled_rows",
    "predict",
    "read_batch",
    "resolve_device",
    "seed_everything",
    "train_local",
]

logger = logging.getLogger(__name__)

_TASKS = ("bm", "ca")


@dataclass(frozen=True)
class TrainSpec:
    """How to train a classifier locally.

    Parameters
    ----------
    epochs
        Passes over the (resampled) training split.
    batch_size
        Images per optimiser step.
    lr, weight_decay
        AdamW settings.
    sampling
        Class balancing per epoch (see :mod:`fedbone.training.sampling`).
    augment
        Training augmentation.
    early_stopping_patience
        Stop after this many epochs without a better validation score and
        restore the best weights; needs a labelled ``val`` split. ``None``
        trains all ``epochs``.
    proximal_mu
        FedProx coefficient: the loss adds ``mu / 2 * ||w - w_global||^2``.
    seed
        Seeds initial draws, sampling and augmentation.
    device
        ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
    amp
        Mixed precision (autocast + gradient scaling); used on CUDA only.
    max_batches_per_epoch
        Cap on optimiser steps per epoch (quick runs, benchmarks).

    Raises
    ------
    TrainingError
        Listing every invalid setting.
    """

    epochs: int = 1
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    sampling: Sampling = Sampling.OVERSAMPLE
    augment: AugmentSpec = field(default_factory=AugmentSpec)
    early_stopping_patience: int | None = None
    proximal_mu: float = 0.0
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    max_batches_per_epoch: int | None = None

    def __post_init__(self) -> None:
        problems: list[Problem] = []
        try:
            object.__setattr__(self, "sampling", Sampling(self.sampling))
        except ValueError:
            choices = ", ".join(s.value for s in Sampling)
            problems.append(
                Problem("unknown-sampling", f"choose one of: {choices}", "sampling")
            )
        positive = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "early_stopping_patience": self.early_stopping_patience,
            "max_batches_per_epoch": self.max_batches_per_epoch,
        }
        for name, value in positive.items():
            optional = name in ("early_stopping_patience", "max_batches_per_epoch")
            if optional and value is None:
                continue
            if not isinstance(value, int) or value < 1:
                problems.append(
                    Problem(
                        "not-positive",
                        f"got {value!r}; expected an integer >= 1"
                        + (" or null" if optional else ""),
                        name,
                    )
                )
        if not self.lr > 0:
            problems.append(Problem("not-positive", f"got {self.lr!r}", "lr"))
        for name in ("weight_decay", "proximal_mu"):
            if not getattr(self, name) >= 0:
                problems.append(
                    Problem("negative", f"got {getattr(self, name)!r}", name)
                )
        TrainingError.raise_if_any("train spec", problems)


@dataclass(frozen=True)
class TrainResult:
    """What a local training run did.

    Attributes
    ----------
    n_examples
        Number of distinct labelled training scans (not batches, not
        resampled draws): the weight of this site in FedAvg.
    epochs_run
        Epochs trained (fewer than asked when early stopping fired).
    train_loss
        Mean training BCE (without the proximal term) of the epoch whose
        weights the model holds at the end.
    val_loss, val_auc
        Validation BCE and AUC of those weights; ``None`` without a labelled
        ``val`` split (AUC also ``None`` when ``val`` has one class).
    best_epoch
        The epoch (1-based) whose weights the model holds at the end.
    seconds
        Wall time of the whole call.
    """

    n_examples: int
    epochs_run: int
    train_loss: float
    val_loss: float | None
    val_auc: float | None
    best_epoch: int
    seconds: float


def resolve_device(name: str) -> torch.device:
    """Return the torch device for a config value (``auto``: CUDA if present).

    Raises
    ------
    TrainingError
        When the name is not a device or names a CUDA device this machine
        lacks.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise TrainingError(
            "device",
            [Problem("unknown-device", f"{name!r}; use auto, cpu, cuda or cuda:N")],
        )
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(
            "device",
            [
                Problem(
                    "device-unavailable",
                    f"{name!r} was asked for but this machine has no usable "
                    "CUDA device; set device: auto or cpu",
                )
            ],
        )
    return device


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's global and torch's (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def read_batch(cache: SiteCache, positions: np.ndarray) -> torch.Tensor:
    """Read images ``positions`` (any order, repeats allowed) as ``(B, H, W)``.

    The memory map is read in ascending order and the rows put back in the
    requested order; float16 becomes float32 in torch.
    """
    order = np.argsort(positions, kind="stable")
    raw = torch.from_numpy(np.asarray(cache.images[positions[order]]))
    batch = torch.empty(raw.shape, dtype=torch.float32)
    batch[torch.from_numpy(order)] = raw.float()
    return batch


def _input_channels(model: nn.Module) -> int:
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    return int(first_conv.in_channels)


def _to_model_input(batch: torch.Tensor, channels: int) -> torch.Tensor:
    """Canvases ``(B, H, W)`` to ``(B, channels, H, W)``.

    Two channels means two views side by side, split at the middle column.
    """
    if channels == 1:
        return batch.unsqueeze(1)
    count, height, width = batch.shape
    if channels != 2 or width % 2:
        raise TrainingError(
            "model input",
            [
                Problem(
                    "channels-mismatch",
                    f"the model takes {channels} channels but the canvas is one "
                    f"{height}x{width} image; use in_channels 1, or 2 with "
                    "views: both",
                )
            ],
        )
    return batch.reshape(count, height, 2, width // 2).permute(0, 2, 1, 3).contiguous()


def labelled_rows(
    cache: SiteCache, task: str, split: str
) -> tuple[np.ndarray, np.ndarray]:
    """Return the positions and 0/1 labels of ``split`` rows labelled for ``task``."""
    positions = cache.indices(split)
    labels = cache.labels(task)[positions]
    known = labels >= 0
    return positions[known], labels[known]


def _batches(positions: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(positions), size):
        yield positions[start : start + size]


def _logits(
    model: nn.Module,
    cache: SiteCache,
    positions: np.ndarray,
    batch_size: int,
    device: torch.device,
    amp: bool,
) -> torch.Tensor:
    channels = _input_channels(model)
    model.eval()
    outputs = []
    with (
        torch.inference_mode(),
        torch.autocast(device.type, dtype=torch.float16, enabled=amp),
    ):
        for chunk in _batches(positions, batch_size):
            images = _to_model_input(read_batch(cache, chunk), channels)
            outputs.append(model(images.to(device)).float().cpu())
    return torch.cat(outputs) if outputs else torch.zeros(0)


def predict(
    model: nn.Module,
    cache: SiteCache,
    indices: np.ndarray,
    *,
    batch_size: int = 64,
    device: str = "auto",
) -> np.ndarray:
    """Return the model's probability for each image ``indices`` of ``cache``.

    The model is moved to ``device`` and left in eval mode.
    """
    target = resolve_device(device)
    model.to(target)
    positions = np.asarray(indices, dtype=np.int64)
    logits = _logits(model, cache, positions, batch_size, target, target.type == "cuda")
    return torch.sigmoid(logits).double().numpy()


def _validation(
    model: nn.Module,
    cache: SiteCache,
    data: tuple[np.ndarray, np.ndarray],
    batch_size: int,
    device: torch.device,
    amp: bool,
) -> tuple[float | None, float | None]:
    positions, labels = data
    if len(positions) == 0:
        return None, None
    logits = _logits(model, cache, positions, batch_size, device, amp)
    targets = torch.from_numpy(labels).float()
    loss = float(functional.binary_cross_entropy_with_logits(logits, targets))
    both_classes = len(np.unique(labels)) == 2
    auc = float(roc_auc_score(labels, logits.numpy())) if both_classes else None
    return loss, auc


def evaluate_split(
    model: nn.Module,
    cache: SiteCache,
    task: str,
    split: str,
    *,
    batch_size: int = 64,
    device: str = "auto",
) -> tuple[int, float | None, float | None]:
    """Score ``model`` on the labelled rows of ``split``.

    Returns
    -------
    tuple
        ``(n, loss, auc)``: the number of labelled scans, the mean binary
        cross-entropy and the AUC; ``None`` where undefined (no scans, or
        only one class for the AUC).
    """
    data = labelled_rows(cache, task, split)
    torch_device = resolve_device(device)
    model.to(torch_device)
    loss, auc = _validation(model, cache, data, batch_size, torch_device, amp=False)
    return len(data[0]), loss, auc


def _proximal_anchor(
    model: nn.Module, global_params: Mapping[str, torch.Tensor] | None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Pair each trainable parameter with its received global value.

    Without ``global_params`` the weights the model holds now are taken as
    the ones received. Parameters absent from ``global_params`` (FedBN's local
    norm layers) get no proximal term.
    """
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
    problems: list[Problem] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if global_params is None:
            anchor = param.detach().clone()
        elif name in global_params:
            anchor = torch.as_tensor(global_params[name]).to(param.device, param.dtype)
            if anchor.shape != param.shape:
                problems.append(
                    Problem(
                        "shape-mismatch",
                        f"global shape {tuple(anchor.shape)}, model "
                        f"{tuple(param.shape)}",
                        name,
                    )
                )
                continue
        else:
            continue
        pairs.append((param, anchor))
    TrainingError.raise_if_any("global parameters", problems)
    return pairs


class _EarlyStopping:
    """Keeps the best weights by validation AUC (or loss when AUC is undefined)."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best_score = -np.inf
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] = {}
        self.best_metrics: tuple[float | None, float | None] = (None, None)

    def update(
        self, epoch: int, metrics: tuple[float | None, float | None], model: nn.Module
    ) -> bool:
        """Record an epoch's ``(val_loss, val_auc)``; True when training should stop."""
        loss, auc = metrics
        score = auc if auc is not None else -(loss or 0.0)
        if score > self.best_score:
            self.best_score, self.best_epoch = score, epoch
            self.best_state = copy.deepcopy(model.state_dict())
            self.best_metrics = metrics
        return epoch - self.best_epoch >= self.patience


def _training_data(cache: SiteCache, task: str) -> tuple[np.ndarray, np.ndarray]:
    """Return the labelled training positions and labels, or say why there are none."""
    if task not in _TASKS:
        raise TrainingError(
            "task", [Problem("unknown-task", f"{task!r}; use one of {_TASKS}")]
        )
    train = labelled_rows(cache, task, "train")
    if len(train[0]) == 0:
        raise TrainingError(
            cache.cache_dir,
            [
                Problem(
                    "no-training-scans",
                    f"the train split has no scan labelled for {task}; label "
                    "some scans or give this site the validate-only role",
                )
            ],
        )
    return train


def train_local(
    model: nn.Module,
    cache: SiteCache,
    task: str,
    spec: TrainSpec,
    *,
    global_params: Mapping[str, torch.Tensor] | None = None,
) -> TrainResult:
    """Train ``model`` in place on the site's ``train`` split for ``task``.

    Parameters
    ----------
    model
        A classifier mapping ``(B, C, H, W)`` to ``(B,)`` logits.
    cache
        The site's prepared cache; rows with an unknown label are skipped.
    task
        ``bm`` or ``ca``.
    spec
        Training settings.
    global_params
        The parameters received this round, the anchor of the FedProx term
        (default: the model's weights at the call).

    Returns
    -------
    TrainResult
        Counts, losses, validation metrics and timing.

    Raises
    ------
    TrainingError
        When the task, data, device or global parameters do not allow a run.
    """
    started = time.perf_counter()
    train = _training_data(cache, task)
    val = labelled_rows(cache, task, "val")
    device = resolve_device(spec.device)
    amp = spec.amp and device.type == "cuda"
    seed_everything(spec.seed)
    model.to(device)
    anchor = _proximal_anchor(model, global_params) if spec.proximal_mu > 0 else []
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=spec.lr,
        weight_decay=spec.weight_decay,
    )
    step = _Stepper(model, optimizer, spec, anchor, device, amp)
    val_batch = 4 * spec.batch_size  # inference holds no gradients
    epoch_runner = _EpochRunner(model, cache, task, step, spec)
    rng = np.random.default_rng(spec.seed)
    stopper = (
        _EarlyStopping(spec.early_stopping_patience)
        if spec.early_stopping_patience is not None and len(val[0]) > 0
        else None
    )
    train_losses: list[float] = []
    for epoch in range(1, spec.epochs + 1):
        order = train[0][epoch_indices(spec.sampling, train[1], rng)]
        train_losses.append(epoch_runner(order))
        if stopper is not None:
            metrics = _validation(model, cache, val, val_batch, device, amp)
            logger.debug("epoch %d: val loss, auc %s", epoch, metrics)
            if stopper.update(epoch, metrics, model):
                break
    epochs_run = best_epoch = epoch
    if stopper is None:
        val_loss, val_auc = _validation(model, cache, val, val_batch, device, amp)
    else:
        best_epoch = stopper.best_epoch
        val_loss, val_auc = stopper.best_metrics
        if best_epoch != epochs_run:
            model.load_state_dict(stopper.best_state)
    result = TrainResult(
        n_examples=len(train[0]),
        epochs_run=epochs_run,
        train_loss=train_losses[best_epoch - 1],
        val_loss=val_loss,
        val_auc=val_auc,
        best_epoch=best_epoch,
        seconds=time.perf_counter() - started,
    )
    logger.info(
        "trained %s on %d scans: %d epochs (best %d), loss %.4f, val auc %s, %.1f s",
        task,
        result.n_examples,
        result.epochs_run,
        result.best_epoch,
        result.train_loss,
        "n/a" if val_auc is None else f"{val_auc:.3f}",
        result.seconds,
    )
    return result


class _EpochRunner:
    """One pass over an epoch's draw: read, shape, augment, step."""

    def __init__(
        self,
        model: nn.Module,
        cache: SiteCache,
        task: str,
        step: _Stepper,
        spec: TrainSpec,
    ) -> None:
        self.model = model
        self.cache = cache
        self.step = step
        self.batch_size = spec.batch_size
        self.max_images = (
            None
            if spec.max_batches_per_epoch is None
            else spec.max_batches_per_epoch * spec.batch_size
        )
        self.augmenter = Augmenter(spec.augment, spec.seed)
        self.channels = _input_channels(model)
        self.labels = cache.labels(task)

    def __call__(self, order: np.ndarray) -> float:
        """Train on positions ``order``; return the mean BCE over its images."""
        order = order[: self.max_images]
        labels = self.labels
        self.model.train()
        total = 0.0
        for chunk in _batches(order, self.batch_size):
            canvases = _to_model_input(read_batch(self.cache, chunk), self.channels)
            targets = torch.from_numpy(labels[chunk])
            total += self.step(self.augmenter(canvases), targets) * len(chunk)
        return total / len(order)


class _Stepper:
    """One optimiser step: BCE (+ FedProx term), autocast and gradient scaling."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        spec: TrainSpec,
        anchor: list[tuple[torch.Tensor, torch.Tensor]],
        device: torch.device,
        amp: bool,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.mu = spec.proximal_mu
        self.anchor = anchor
        self.device = device
        self.amp = amp
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """Take one step; return the batch's mean BCE."""
        images = images.to(self.device, non_blocking=True)
        targets = labels.to(self.device, torch.float32, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            logits = self.model(images)
        loss = functional.binary_cross_entropy_with_logits(logits.float(), targets)
        objective = loss
        if self.anchor:
            proximal = sum(((param - value) ** 2).sum() for param, value in self.anchor)
            objective = loss + 0.5 * self.mu * proximal
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(objective).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.detach())
