"""One site's local training round of an enhancer, on its own image pairs.

Flower-free: the federation layer calls :func:`train_enhancer` with the
arrays it received and sends back :attr:`EnhancerRound.arrays`. Training is
patch-based (Qi et al. trained on 192-pixel patches): every step draws a batch
of random scans, one random patch per scan at the same place in the input and
the target, and flips half of them left-right.

Losses, by method:

``dncnn``
    MSE of the returned image against the target (DnCNN's residual learning:
    the network predicts the noise and returns ``input - noise``).
``ddsrcnn``
    MSE against the target.
``rrdbnet``
    Qi et al.'s ``perceptual + 0.005 L1 + 0.01 BCE + 0.001 GAN`` for the
    generator: the perceptual term is the mean over feature maps of the L1
    distance between the features of output and target; the BCE is pixelwise
    binary cross-entropy of output against target, both clamped into ``[0,
    1]`` (the output into ``[1e-6, 1 - 1e-6]`` so its logarithm stays finite);
    the GAN term is the non-saturating loss from the conditional
    discriminator, which sees ``[input, candidate]``. The discriminator takes
    one step per generator step on the logistic loss (standard scans real,
    enhanced ones fake).

Optimiser state is not federated: each round starts a fresh Adam.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from fedbone.classifier.runtime import resolve_device
from fedbone.enhance.errors import EnhanceError
from fedbone.errors import Problem
from fedbone.models.enhancers import (
    DISCRIMINATOR_PREFIX,
    GENERATOR_PREFIX,
    EnhancerSpec,
    build_discriminator,
    build_enhancer,
    discriminator_arrays,
    generator_arrays,
)
from fedbone.models.errors import ModelError
from fedbone.models.parameters import load_arrays, state_to_arrays

__all__ = ["EnhancerRound", "EnhancerTraining", "Perceptual", "train_enhancer"]

logger = logging.getLogger(__name__)

#: Feature maps of a batch ``(B, 1, H, W)``, differentiable in the batch.
Perceptual = Callable[[torch.Tensor], list[torch.Tensor]]

_BCE_EPS = 1e-6


@dataclass(frozen=True)
class EnhancerTraining:
    """Settings of one local round (defaults: Qi et al.'s optimiser and losses).

    Parameters
    ----------
    epochs, steps_per_epoch
        The round runs ``epochs * steps_per_epoch`` optimiser steps.
    batch_size
        Patches per step.
    patch
        ``(height, width)`` of a training patch; at most the image size.
    lr, betas
        Adam's learning rate and betas (the paper: 2e-4, (0.9, 0.999)), for
        the enhancer and the discriminator alike.
    perceptual_weight, l1_weight, bce_weight, gan_weight
        Weights of the ``rrdbnet`` generator's loss terms (the paper: 1,
        0.005, 0.01, 0.001).

    Raises
    ------
    EnhanceError
        Listing every setting out of range.
    """

    epochs: int = 1
    steps_per_epoch: int = 50
    batch_size: int = 8
    patch: tuple[int, int] = (64, 32)
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.999)
    perceptual_weight: float = 1.0
    l1_weight: float = 0.005
    bce_weight: float = 0.01
    gan_weight: float = 0.001

    def __post_init__(self) -> None:
        problems = [
            Problem("not-positive", f"got {getattr(self, name)!r}, need >= 1", name)
            for name in ("epochs", "steps_per_epoch", "batch_size")
            if getattr(self, name) < 1
        ]
        if len(self.patch) != 2 or min(self.patch) < 1:
            problems.append(
                Problem("bad-patch", f"got {self.patch!r}, need (height, width) >= 1")
            )
        if not self.lr > 0:
            problems.append(Problem("not-positive", f"got {self.lr!r}", "lr"))
        if len(self.betas) != 2 or not all(0 <= beta < 1 for beta in self.betas):
            problems.append(
                Problem("bad-betas", f"got {self.betas!r}, need two in [0, 1)")
            )
        problems += [
            Problem("negative-weight", f"got {getattr(self, name)!r}", name)
            for name in ("perceptual_weight", "l1_weight", "bce_weight", "gan_weight")
            if getattr(self, name) < 0
        ]
        EnhanceError.raise_if_any("enhancer training", problems)

    @property
    def steps(self) -> int:
        """Optimiser steps of one round."""
        return self.epochs * self.steps_per_epoch


@dataclass(frozen=True, eq=False)
class EnhancerRound:
    """What a local round returns.

    Attributes
    ----------
    arrays
        The trained federated model's arrays (keyed as received).
    metrics
        ``train-loss`` (mean training objective of the enhancer over the
        round), ``steps``, ``seconds``; for ``rrdbnet`` also ``d-loss`` (the
        discriminator's mean logistic loss) and ``g-loss`` (the mean
        adversarial term of the generator).
    """

    arrays: dict[str, np.ndarray]
    metrics: dict[str, float]


def _check_pairs(
    inputs: np.ndarray, targets: np.ndarray, patch: tuple[int, int]
) -> list[Problem]:
    problems = []
    for name, images in (("inputs", inputs), ("targets", targets)):
        if images.ndim != 3 or images.shape[0] == 0:
            problems.append(
                Problem(
                    "bad-shape",
                    f"got shape {images.shape}, need (N, H, W) with N >= 1",
                    name,
                )
            )
        elif not np.isfinite(images).all():
            problems.append(Problem("non-finite", "NaN or infinite values", name))
    if problems:
        return problems
    if inputs.shape != targets.shape:
        problems.append(
            Problem(
                "shape-mismatch",
                f"inputs {inputs.shape} but targets {targets.shape}; pair every "
                "input with its target on the same canvas",
            )
        )
    height, width = inputs.shape[1:]
    if patch[0] > height or patch[1] > width:
        problems.append(
            Problem(
                "patch-too-large",
                f"patch {patch} exceeds the {height}x{width} images; use a smaller "
                "EnhancerTraining.patch",
            )
        )
    return problems


class _PatchSampler:
    """Random patches at the same place in inputs and targets, random flips."""

    def __init__(
        self,
        inputs: np.ndarray,
        targets: np.ndarray,
        patch: tuple[int, int],
        seed: int,
    ) -> None:
        self.inputs = inputs
        self.targets = targets
        self.patch = patch
        self.rng = np.random.default_rng(seed)

    def batch(self, size: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        count, height, width = self.inputs.shape
        rows = self.rng.integers(0, count, size)
        tops = self.rng.integers(0, height - self.patch[0] + 1, size)
        lefts = self.rng.integers(0, width - self.patch[1] + 1, size)
        flips = self.rng.random(size) < 0.5
        pair = []
        for images in (self.inputs, self.targets):
            patches = np.stack(
                [
                    images[row, top : top + self.patch[0], left : left + self.patch[1]]
                    for row, top, left in zip(rows, tops, lefts, strict=True)
                ]
            )
            patches[flips] = patches[flips, :, ::-1]
            pair.append(torch.from_numpy(patches[:, None]).to(device))
        return tuple(pair)


def _load(model: nn.Module, arrays: Mapping[str, np.ndarray], what: str) -> None:
    try:
        load_arrays(model, arrays)
    except ModelError as error:
        raise EnhanceError(f"{what} arrays", error.problems) from error


def _perceptual_loss(
    perceptual: Perceptual, output: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    with torch.no_grad():
        wanted = perceptual(target)
    produced = perceptual(output)
    distances = [(a - b).abs().mean() for a, b in zip(produced, wanted, strict=True)]
    return torch.stack(distances).mean()


class _AdversarialStep:
    """One discriminator step and one generator step of the conditional GAN."""

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        training: EnhancerTraining,
        perceptual: Perceptual | None,
    ) -> None:
        self.generator = generator
        self.discriminator = discriminator
        self.training = training
        self.perceptual = perceptual
        self.g_optimizer = torch.optim.Adam(
            generator.parameters(), lr=training.lr, betas=training.betas
        )
        self.d_optimizer = torch.optim.Adam(
            discriminator.parameters(), lr=training.lr, betas=training.betas
        )

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        weights = self.training
        with torch.no_grad():
            fake = self.generator(x)
        self.discriminator.requires_grad_(True)
        real_logits = self.discriminator(torch.cat([x, y], dim=1))
        fake_logits = self.discriminator(torch.cat([x, fake], dim=1))
        d_loss = (
            functional.softplus(-real_logits).mean()
            + functional.softplus(fake_logits).mean()
        )
        self.d_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_optimizer.step()

        self.discriminator.requires_grad_(False)
        output = self.generator(x)
        adversarial = functional.softplus(
            -self.discriminator(torch.cat([x, output], dim=1))
        ).mean()
        l1 = (output - y).abs().mean()
        bce = functional.binary_cross_entropy(
            output.clamp(_BCE_EPS, 1.0 - _BCE_EPS), y.clamp(0.0, 1.0)
        )
        loss = weights.l1_weight * l1 + weights.bce_weight * bce
        loss = loss + weights.gan_weight * adversarial
        if self.perceptual is not None:
            loss = loss + weights.perceptual_weight * _perceptual_loss(
                self.perceptual, output, y
            )
        self.g_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.g_optimizer.step()
        return {
            "train-loss": float(loss.detach()),
            "d-loss": float(d_loss.detach()),
            "g-loss": float(adversarial.detach()),
        }


class _RegressionStep:
    """One Adam step on the MSE of the enhanced patch against the target."""

    def __init__(self, enhancer: nn.Module, training: EnhancerTraining) -> None:
        self.enhancer = enhancer
        self.optimizer = torch.optim.Adam(
            enhancer.parameters(), lr=training.lr, betas=training.betas
        )

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        loss = functional.mse_loss(self.enhancer(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"train-loss": float(loss.detach())}


def train_enhancer(
    spec: EnhancerSpec,
    arrays: Mapping[str, np.ndarray],
    inputs: np.ndarray,
    targets: np.ndarray,
    *,
    training: EnhancerTraining,
    perceptual: Perceptual | None,
    seed: int,
    device: str = "cpu",
) -> EnhancerRound:
    """Train an enhancer for one local round on paired images.

    Parameters
    ----------
    spec
        The method and size; ``arrays`` must fit it.
    arrays
        The federated model's arrays (for ``rrdbnet`` both networks, keyed
        ``generator.`` and ``discriminator.``), as :func:`initial_arrays` or a
        previous round made them.
    inputs
        ``(N, H, W)`` network inputs (fast scans scaled by
        :func:`fedbone.enhance.scaling.network_input`).
    targets
        ``(N, H, W)`` standard scans divided by the same levels.
    training
        Steps, patches, optimiser and loss weights.
    perceptual
        Frozen feature extractor of the ``rrdbnet`` perceptual term, taking
        tensors on ``device``; ``None`` drops the term (logged). Unused by the
        other methods.
    seed
        Seed of patch positions and flips; the same seed, arrays and data give
        the same round on the CPU.
    device
        ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.

    Returns
    -------
    EnhancerRound
        Trained arrays (float32; int64 batch-norm counters) and metrics.

    Raises
    ------
    EnhanceError
        For images of the wrong shape or with non-finite values, a patch larger
        than the images, or arrays that do not fit ``spec``; nothing is
        trained then.
    """
    inputs = np.asarray(inputs, dtype=np.float32)
    targets = np.asarray(targets, dtype=np.float32)
    EnhanceError.raise_if_any(
        "enhancer training pairs", _check_pairs(inputs, targets, training.patch)
    )
    torch_device = resolve_device(device)
    enhancer = build_enhancer(spec)
    _load(enhancer, generator_arrays(spec, arrays), "enhancer")
    enhancer.to(torch_device).train()
    discriminator: nn.Module | None = None
    step: Callable[[torch.Tensor, torch.Tensor], dict[str, float]]
    if spec.adversarial:
        discriminator = build_discriminator(spec.width)
        _load(discriminator, discriminator_arrays(arrays), "discriminator")
        discriminator.to(torch_device).train()
        if perceptual is None:
            logger.info("no perceptual features given: the perceptual term is dropped")
        step = _AdversarialStep(enhancer, discriminator, training, perceptual)
    else:
        step = _RegressionStep(enhancer, training)

    sampler = _PatchSampler(inputs, targets, training.patch, seed)
    started = time.perf_counter()
    totals: dict[str, float] = {}
    for _ in range(training.steps):
        x, y = sampler.batch(training.batch_size, torch_device)
        for key, value in step(x, y).items():
            totals[key] = totals.get(key, 0.0) + value
    seconds = time.perf_counter() - started

    metrics = {key: value / training.steps for key, value in totals.items()}
    metrics.update(steps=float(training.steps), seconds=seconds)
    trained = state_to_arrays(enhancer.cpu())
    if discriminator is not None:
        trained = {
            **{GENERATOR_PREFIX + key: value for key, value in trained.items()},
            **{
                DISCRIMINATOR_PREFIX + key: value
                for key, value in state_to_arrays(discriminator.cpu()).items()
            },
        }
    logger.info(
        "%s round: %d steps in %.1f s, train-loss %.5f",
        spec.method,
        training.steps,
        seconds,
        metrics["train-loss"],
    )
    return EnhancerRound(arrays=trained, metrics=metrics)
