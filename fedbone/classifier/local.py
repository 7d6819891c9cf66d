"""Local classifier training and inference on one site's prepared cache.

Flower-free: the federation layer calls :func:`train_local` with the weights
it received and sends back the result; a notebook can call it directly. The
loop's pieces live in :mod:`fedbone.classifier.steps`, device, seeding and
batch reading in :mod:`fedbone.classifier.runtime`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.nn import functional

from fedbone.classifier.augment import AugmentSpec
from fedbone.classifier.errors import TrainingError
from fedbone.classifier.runtime import (
    TrainingImages,
    input_channels,
    iter_batches,
    read_batch,
    resolve_device,
    seed_everything,
    to_model_input,
)
from fedbone.classifier.sampling import Sampling, epoch_indices
from fedbone.classifier.steps import (
    EarlyStopping,
    EpochRunner,
    Stepper,
    proximal_anchor,
)
from fedbone.errors import Problem

__all__ = [
    "TrainResult",
    "TrainSpec",
    "evaluate_split",
    "labelled_rows",
    "predict",
    "predict_images",
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
        Class balancing per epoch (see :mod:`fedbone.classifier.sampling`).
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


def labelled_rows(
    cache: TrainingImages, task: str, split: str
) -> tuple[np.ndarray, np.ndarray]:
    """Return the positions and 0/1 labels of ``split`` rows labelled for ``task``.

    Parameters
    ----------
    cache
        The site's prepared cache.
    task
        ``bm`` or ``ca``.
    split
        ``train``, ``val`` or ``test``; rows whose label is unknown are left out.
    """
    positions = cache.indices(split)
    labels = cache.labels(task)[positions]
    known = labels >= 0
    return positions[known], labels[known]


def _logits(
    model: nn.Module,
    read: Callable[[np.ndarray], torch.Tensor],
    positions: np.ndarray,
    batch_size: int,
    device: torch.device,
    amp: bool,
) -> torch.Tensor:
    channels = input_channels(model)
    model.eval()
    outputs = []
    with (
        torch.inference_mode(),
        torch.autocast(device.type, dtype=torch.float16, enabled=amp),
    ):
        for chunk in iter_batches(positions, batch_size):
            images = to_model_input(read(chunk), channels)
            outputs.append(model(images.to(device)).float().cpu())
    return torch.cat(outputs) if outputs else torch.zeros(0)


def predict(
    model: nn.Module,
    cache: TrainingImages,
    indices: np.ndarray,
    *,
    batch_size: int = 64,
    device: str = "auto",
) -> np.ndarray:
    """Return the model's probability for each image ``indices`` of ``cache``.

    The model is moved to ``device`` and left in eval mode.

    Parameters
    ----------
    model
        A classifier mapping ``(B, C, H, W)`` to ``(B,)`` logits.
    cache
        The site's prepared cache.
    indices
        Row positions in ``cache`` to score, in the order wanted back.
    batch_size
        Images per forward pass.
    device
        ``auto`` (CUDA if present), ``cpu``, ``cuda`` or ``cuda:N``; mixed
        precision is used on CUDA.
    """
    target = resolve_device(device)
    model.to(target)
    positions = np.asarray(indices, dtype=np.int64)
    logits = _logits(
        model,
        lambda chunk: read_batch(cache, chunk),
        positions,
        batch_size,
        target,
        target.type == "cuda",
    )
    return torch.sigmoid(logits).double().numpy()


def predict_images(
    model: nn.Module,
    images: np.ndarray,
    *,
    batch_size: int = 64,
    device: str = "auto",
) -> np.ndarray:
    """Return the model's probability for each of ``(N, H, W)`` canvases in [0, 1].

    As :func:`predict`, for images held in memory (enhanced scans, synthetic
    images) rather than rows of a cache.

    Parameters
    ----------
    model
        A classifier mapping ``(B, C, H, W)`` to ``(B,)`` logits.
    images
        The canvases, in the order wanted back.
    batch_size
        Images per forward pass.
    device
        ``auto`` (CUDA if present), ``cpu``, ``cuda`` or ``cuda:N``.
    """
    target = resolve_device(device)
    model.to(target)
    pixels = np.asarray(images, dtype=np.float32)
    logits = _logits(
        model,
        lambda chunk: torch.from_numpy(np.ascontiguousarray(pixels[chunk])),
        np.arange(len(pixels)),
        batch_size,
        target,
        target.type == "cuda",
    )
    return torch.sigmoid(logits).double().numpy()


def _validation(
    model: nn.Module,
    cache: TrainingImages,
    data: tuple[np.ndarray, np.ndarray],
    batch_size: int,
    device: torch.device,
    amp: bool,
) -> tuple[float | None, float | None]:
    positions, labels = data
    if len(positions) == 0:
        return None, None
    logits = _logits(
        model,
        lambda chunk: read_batch(cache, chunk),
        positions,
        batch_size,
        device,
        amp,
    )
    targets = torch.from_numpy(labels).float()
    loss = float(functional.binary_cross_entropy_with_logits(logits, targets))
    both_classes = len(np.unique(labels)) == 2
    auc = float(roc_auc_score(labels, logits.numpy())) if both_classes else None
    return loss, auc


def evaluate_split(
    model: nn.Module,
    cache: TrainingImages,
    task: str,
    split: str,
    *,
    batch_size: int = 64,
    device: str = "auto",
) -> tuple[int, float | None, float | None]:
    """Score ``model`` on the labelled rows of ``split``.

    Parameters
    ----------
    model
        A classifier mapping ``(B, C, H, W)`` to ``(B,)`` logits.
    cache
        The site's prepared cache.
    task
        ``bm`` or ``ca``.
    split
        ``train``, ``val`` or ``test``; rows with an unknown label are skipped.
    batch_size
        Images per forward pass.
    device
        ``auto`` (CUDA if present), ``cpu``, ``cuda`` or ``cuda:N``.

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


def _training_data(cache: TrainingImages, task: str) -> tuple[np.ndarray, np.ndarray]:
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
    cache: TrainingImages,
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
    anchor = proximal_anchor(model, global_params) if spec.proximal_mu > 0 else []
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=spec.lr,
        weight_decay=spec.weight_decay,
    )
    step = Stepper(model, optimizer, spec, anchor, device, amp)
    val_batch = 4 * spec.batch_size  # inference holds no gradients
    epoch_runner = EpochRunner(model, cache, task, step, spec)
    rng = np.random.default_rng(spec.seed)
    stopper = (
        EarlyStopping(spec.early_stopping_patience)
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
