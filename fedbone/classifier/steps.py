"""The pieces of a local training loop: optimiser step, epoch, early stopping.

:func:`fedbone.classifier.local.train_local` wires them together; each holds one
concern so that the loop itself reads in one screen.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from fedbone.classifier.augment import Augmenter
from fedbone.classifier.errors import TrainingError
from fedbone.classifier.runtime import (
    TrainingImages,
    input_channels,
    iter_batches,
    read_batch,
    to_model_input,
)
from fedbone.errors import Problem

if TYPE_CHECKING:
    from fedbone.classifier.local import TrainSpec

__all__ = ["EarlyStopping", "EpochRunner", "Stepper", "proximal_anchor"]


def proximal_anchor(
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


class EarlyStopping:
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
        """Record an epoch's ``(val_loss, val_auc)``; True when training should stop.

        Parameters
        ----------
        epoch
            Number of the epoch just run, counted from 1.
        metrics
            ``(val_loss, val_auc)`` of that epoch; the AUC is compared when
            defined, otherwise the lower loss wins.
        model
            The model being trained; its state is copied when this epoch is
            the best so far.
        """
        loss, auc = metrics
        score = auc if auc is not None else -(loss or 0.0)
        if score > self.best_score:
            self.best_score, self.best_epoch = score, epoch
            self.best_state = copy.deepcopy(model.state_dict())
            self.best_metrics = metrics
        return epoch - self.best_epoch >= self.patience


class EpochRunner:
    """One pass over an epoch's draw: read, shape, augment, step."""

    def __init__(
        self,
        model: nn.Module,
        cache: TrainingImages,
        task: str,
        step: Stepper,
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
        self.channels = input_channels(model)
        self.labels = cache.labels(task)

    def __call__(self, order: np.ndarray) -> float:
        """Train on positions ``order``; return the mean BCE over its images."""
        order = order[: self.max_images]
        labels = self.labels
        self.model.train()
        total = 0.0
        for chunk in iter_batches(order, self.batch_size):
            canvases = to_model_input(read_batch(self.cache, chunk), self.channels)
            targets = torch.from_numpy(labels[chunk])
            total += self.step(self.augmenter(canvases), targets) * len(chunk)
        return total / len(order)


class Stepper:
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
