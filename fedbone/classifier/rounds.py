"""One federated classifier round at a site: load the global model, train or score.

FedBN: when ``fedbn`` is set, the site overwrites the received normalisation
layers with its own from earlier rounds (``local_state``) before training, and
hands its updated normalisation layers back to be kept for the next round.
FedProx: the received global parameters anchor the proximal term.

DP-SGD (:func:`train_round_dp`): the round's spend (noise, Poisson rate, steps)
is planned first and checked against the site's budget
(:func:`fedbone.privacy.site_spending.plan_sgd_release`); only then does the
site train, and the release is written to the ledger before the weights are
returned. With a target ε the noise is set so that the study's ``rounds`` of
this training reach it; the site's ledger composes everything. The DP reply
carries no training loss: it is a statistic of the training scans outside the
accountant. Validation figures are of the validation split, as in every round.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import torch

from fedbone.classifier.dp_local import plan_dp_call, train_local_dp
from fedbone.classifier.errors import TrainingError
from fedbone.classifier.local import (
    TrainResult,
    TrainSpec,
    evaluate_split,
    labelled_rows,
    train_local,
)
from fedbone.classifier.runtime import TrainingImages
from fedbone.errors import Problem
from fedbone.models import ClassifierSpec, build_classifier
from fedbone.models.parameters import load_arrays, norm_layer_keys, state_to_arrays
from fedbone.privacy.dp_sgd import DpSgdSpec, make_dp_compatible
from fedbone.privacy.ledger import PrivacyLedger
from fedbone.privacy.site_spending import plan_sgd_release

__all__ = [
    "DpRoundSpec",
    "RoundResult",
    "evaluate_round",
    "train_round",
    "train_round_dp",
]

Arrays = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class RoundResult:
    """What a site's training round produced."""

    arrays: dict[str, np.ndarray]
    metrics: dict[str, float | int]
    local_state: dict[str, np.ndarray] | None


@dataclass(frozen=True)
class DpRoundSpec:
    """The study's DP-SGD request for one training (noise xor target ε)."""

    noise_multiplier: float | None
    target_epsilon: float | None
    max_grad_norm: float
    clipping: str
    rounds: int
    train_layers: str = "all"
    """``all``, or ``head``: only the last layer trains (the backbone frozen)."""


def _model_for_round(
    spec: ClassifierSpec,
    arrays: Arrays,
    *,
    fedbn: bool = False,
    local_state: Arrays | None = None,
) -> torch.nn.Module:
    model = build_classifier(spec)
    load_arrays(model, arrays)
    if fedbn and local_state:
        load_arrays(model, local_state, strict=False)
    return model


def _finite(value: float | None) -> float:
    return float(value) if value is not None and math.isfinite(value) else math.nan


def _arrays_as_received(
    trained: Mapping[str, np.ndarray], global_arrays: Arrays
) -> dict[str, np.ndarray]:
    # Reply in the dtypes received: aggregation may have turned integer buffers
    # (BatchNorm's num_batches_tracked) into floats, and the egress guard lets
    # out only arrays that mirror the request exactly.
    return {
        key: value.astype(np.asarray(global_arrays[key]).dtype, copy=False)
        for key, value in trained.items()
    }


def _round_metrics(
    result: TrainResult, *, with_train_loss: bool
) -> dict[str, float | int]:
    metrics: dict[str, float | int] = {"num-examples": int(result.n_examples)}
    if with_train_loss:
        metrics["train-loss"] = _finite(result.train_loss)
    metrics.update(
        {
            "val-loss": _finite(result.val_loss),
            "val-auc": _finite(result.val_auc),
            "epochs": float(result.epochs_run),
            "seconds": float(result.seconds),
        }
    )
    return metrics


def train_round(
    cache: TrainingImages,
    task: str,
    spec: ClassifierSpec,
    train_spec: TrainSpec,
    global_arrays: Arrays,
    *,
    fedbn: bool = False,
    local_state: Arrays | None = None,
) -> RoundResult:
    """Train the received global model on the site's training split.

    Parameters
    ----------
    cache
        The site's images (real, or mixed with a received synthetic pool).
    task
        The label trained (``bm``, ``ca``).
    spec
        The classifier the study trains.
    train_spec
        Local training settings of this round.
    global_arrays
        The received global model's full state.
    fedbn
        Keep the site's own normalisation layers (FedBN).
    local_state
        The site's normalisation layers from earlier FedBN rounds.

    Returns
    -------
    RoundResult
        The updated full state, the round's metrics (``num-examples`` counts
        the distinct training scans, as FedAvg weighting needs) and, for FedBN,
        the site's normalisation layers to keep.
    """
    model = _model_for_round(spec, global_arrays, fedbn=fedbn, local_state=local_state)
    anchor = {
        name: torch.from_numpy(np.asarray(global_arrays[name])).clone()
        for name, _ in model.named_parameters()
    }
    result = train_local(model, cache, task, train_spec, global_params=anchor)
    trained = state_to_arrays(model)
    kept = {key: trained[key] for key in norm_layer_keys(model)} if fedbn else None
    return RoundResult(
        _arrays_as_received(trained, global_arrays),
        _round_metrics(result, with_train_loss=True),
        kept,
    )


def train_round_dp(
    cache: TrainingImages,
    task: str,
    spec: ClassifierSpec,
    train_spec: TrainSpec,
    global_arrays: Arrays,
    dp_round: DpRoundSpec,
    ledger: PrivacyLedger,
    *,
    run_name: str,
    phase: str,
) -> RoundResult:
    """Train the received model with DP-SGD if the site's budget allows it.

    Parameters
    ----------
    cache
        The site's images.
    task
        The label trained (``bm``, ``ca``).
    spec
        The classifier the study trains (group norm: DP-SGD needs it).
    train_spec
        Local training settings of this round.
    global_arrays
        The received global model's full state.
    dp_round
        The study's DP-SGD request.
    ledger
        The site's privacy ledger, charged before the weights are returned.
    run_name, phase
        Where the release is recorded in the ledger.

    Returns
    -------
    RoundResult
        Weights (dtypes as received) and ``num-examples``, ``val-loss``,
        ``val-auc``, ``epochs``, ``seconds``, ``dp-epsilon`` (the site's
        cumulative DP-SGD ε after this round), ``dp-delta`` and
        ``dp-noise-multiplier``.

    Raises
    ------
    PrivacyError
        For a model DP-SGD cannot train (batch norm) -- before anything runs.
    BudgetExceeded
        When the round would take the site over its budget -- nothing is
        trained and nothing recorded.
    """
    model = _model_for_round(spec, global_arrays)
    make_dp_compatible(model, fix=False)
    if dp_round.train_layers == "head":
        # fewer noisy weights: the received (pretrained) backbone is kept
        for name, parameter in model.named_parameters():
            if not name.startswith("head."):
                parameter.requires_grad_(False)
    n_examples = len(labelled_rows(cache, task, "train")[0])
    if n_examples == 0:
        raise TrainingError(
            "train",
            [Problem("no-training-scans", f"no training scan labelled for {task}")],
        )
    dp = DpSgdSpec(
        noise_multiplier=dp_round.noise_multiplier,
        target_epsilon=dp_round.target_epsilon,
        max_grad_norm=dp_round.max_grad_norm,
        delta=ledger.budget.delta,
        clipping=dp_round.clipping,
    )
    probe = replace(dp, noise_multiplier=1.0, target_epsilon=None)
    steps_per_round = plan_dp_call(n_examples, train_spec, probe, None).steps
    plan = plan_dp_call(n_examples, train_spec, dp, steps_per_round * dp_round.rounds)
    release = plan_sgd_release(
        ledger, plan.noise_multiplier, plan.sample_rate, plan.steps
    )
    fixed = replace(dp, noise_multiplier=plan.noise_multiplier, target_epsilon=None)
    result = train_local_dp(
        model, cache, task, train_spec, fixed, state=release.before, planned_steps=None
    )
    release.commit(run=run_name, phase=phase, kind="classifier-round")
    metrics = _round_metrics(result, with_train_loss=False)
    metrics.update(
        {
            "dp-epsilon": release.epsilon,
            "dp-delta": release.delta,
            "dp-noise-multiplier": plan.noise_multiplier,
        }
    )
    return RoundResult(
        _arrays_as_received(state_to_arrays(model), global_arrays), metrics, None
    )


def evaluate_round(
    cache: TrainingImages,
    task: str,
    spec: ClassifierSpec,
    arrays: Arrays,
    *,
    fedbn: bool = False,
    local_state: Arrays | None = None,
) -> dict[str, float | int]:
    """Loss and AUC of the received model on the site's validation split.

    Parameters
    ----------
    cache
        The site's images.
    task
        The label scored.
    spec
        The classifier the study trains.
    arrays
        The received model's full state.
    fedbn
        Score with the site's own normalisation layers (FedBN).
    local_state
        The site's normalisation layers from earlier FedBN rounds.
    """
    model = _model_for_round(spec, arrays, fedbn=fedbn, local_state=local_state)
    n, loss, auc = evaluate_split(model, cache, task, "val")
    return {"num-examples": n, "val-loss": _finite(loss), "val-auc": _finite(auc)}
