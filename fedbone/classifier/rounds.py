"""One federated round at a site: load the global model, train or score it.

FedBN: when ``fedbn`` is set, the site overwrites the received normalisation
layers with its own from earlier rounds (``local_state``) before training, and
hands its updated normalisation layers back to be kept for the next round.
FedProx: the received global parameters anchor the proximal term.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from fedbone.classifier.local import TrainSpec, evaluate_split, train_local
from fedbone.classifier.runtime import TrainingImages
from fedbone.models import ClassifierSpec, build_classifier
from fedbone.models.parameters import load_arrays, norm_layer_keys, state_to_arrays

__all__ = ["RoundResult", "evaluate_round", "train_round"]

Arrays = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class RoundResult:
    """What a site's training round produced."""

    arrays: dict[str, np.ndarray]
    metrics: dict[str, float | int]
    local_state: dict[str, np.ndarray] | None


def _model_for_round(
    spec: ClassifierSpec,
    arrays: Arrays,
    *,
    fedbn: bool,
    local_state: Arrays | None,
) -> torch.nn.Module:
    model = build_classifier(spec)
    load_arrays(model, arrays)
    if fedbn and local_state:
        load_arrays(model, local_state, strict=False)
    return model


def _finite(value: float | None) -> float:
    return float(value) if value is not None and math.isfinite(value) else math.nan


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
    # Reply in the dtypes received: aggregation may have turned integer buffers
    # (BatchNorm's num_batches_tracked) into floats, and the egress guard lets
    # out only arrays that mirror the request exactly.
    arrays = {
        key: value.astype(np.asarray(global_arrays[key]).dtype, copy=False)
        for key, value in trained.items()
    }
    metrics: dict[str, float | int] = {
        "num-examples": int(result.n_examples),
        "train-loss": _finite(result.train_loss),
        "val-loss": _finite(result.val_loss),
        "val-auc": _finite(result.val_auc),
        "epochs": float(result.epochs_run),
        "seconds": float(result.seconds),
    }
    return RoundResult(arrays, metrics, kept)


def evaluate_round(
    cache: TrainingImages,
    task: str,
    spec: ClassifierSpec,
    arrays: Arrays,
    *,
    fedbn: bool = False,
    local_state: Arrays | None = None,
) -> dict[str, float | int]:
    """Loss and AUC of the received model on the site's validation split."""
    model = _model_for_round(spec, arrays, fedbn=fedbn, local_state=local_state)
    n, loss, auc = evaluate_split(model, cache, task, "val")
    return {"num-examples": n, "val-loss": _finite(loss), "val-auc": _finite(auc)}
