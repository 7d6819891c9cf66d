"""Local training of the class-conditional GAN (Flower-free).

One :class:`GanTrainer` holds the generator, the discriminator, an exponential
moving average (EMA) of the generator, both Adam optimisers and the adaptive
augmentation probability. Each step trains the discriminator then the
generator with the **non-saturating logistic loss**; every ``r1_interval``-th
discriminator step adds the **R1 penalty** ``gamma/2 * |grad_x D(x)|^2`` on
(augmented) reals, scaled by the interval ("lazy regularisation"). The
penalty's gradient joins that step's loss gradient in one Adam update, so,
unlike StyleGAN2's separate regularisation step, Adam needs no correction.

Randomness: building a trainer seeds torch's global generator (initial
weights, then latents, per-pixel noise and augmentation during training) and a
numpy generator for batch draws, so CPU training is reproducible for a seed.

The EMA generator, the one :meth:`GanTrainer.generate` uses, follows
``ema = beta * ema + (1 - beta) * g`` with ``beta = 0.5 ** (batch /
ema_half_life_images)``: its half-life is counted in images, so it does not
depend on the batch size.

Conditioning labels of fakes are the labels of the real batch drawn in the
same step, so the generator sees the site's class distribution (or a uniform
one with ``class_balanced``).

**DP mode** (``dp=DpGanSpec(...)``, needs ``dp_compatible_d=True``): the
discriminator step becomes DP-SGD as described in
:mod:`fedbone.privacy.dp_gan` (Poisson-sampled reals, each paired with a fake
of its label, pair gradients clipped, Gaussian noise). Everything else is made
independent of the private data so the generator is private by
post-processing: the generator step draws uniform class labels (the site's
class mix is private), fakes for the discriminator step are generated without
updating the generator's ``w_avg``, and the augmentation probability is fixed
(ADA's adaptation reads real logits). The R1 penalty needs double
backpropagation, which Opacus' per-sample hooks do not support, so it is off.
The spending is kept in :attr:`GanTrainer.accountant` and the checkpoint.
The losses in :class:`GanTrainResult` are computed on real images and are
**not** private: keep them at the site.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from fedbone.classifier.errors import TrainingError
from fedbone.classifier.local import resolve_device
from fedbone.errors import Problem
from fedbone.generative.progress import TrainingProgress
from fedbone.models.gan import (
    AdaptiveProbability,
    ConditionalGenerator,
    GanSpec,
    ProjectionDiscriminator,
    augment,
    build_discriminator,
)
from fedbone.privacy.dp_gan import (
    DpGanSpec,
    apply_private_gradients,
    wrap_discriminator,
)
from fedbone.privacy.dp_sgd import AccountantState, DpSgdSpec
from fedbone.privacy.errors import PrivacyError

__all__ = [
    "GanTrainResult",
    "GanTrainSpec",
    "GanTrainer",
    "class_labels",
    "ema_update",
]

logger = logging.getLogger(__name__)

#: ``images(positions) -> (B, H, W)``: a reader for images not held in memory.
ImageReader = Callable[[np.ndarray], np.ndarray]
_FORMAT = 1


@dataclass(frozen=True)
class GanTrainSpec:
    """Settings of local GAN training.

    Parameters
    ----------
    steps
        Default number of steps (one discriminator and one generator update).
    batch_size
        Real images per step (and as many fakes).
    lr_g, lr_d
        Adam learning rates.
    betas
        Adam betas (``beta1 = 0`` as in StyleGAN2).
    r1_gamma
        Weight of the R1 penalty; 0 disables it.
    r1_interval
        Discriminator steps between R1 penalties (1: every step).
    ema_half_life_images
        Half-life of the generator EMA, in images.
    ema_rampup
        While few images have been seen, the half-life is at most this
        fraction of the images seen so far (StyleGAN2-ADA's ramp-up): without
        it a short run's EMA generator would still be mostly its random start.
        ``None`` keeps the full half-life from the first step.
    ada_target
        Target of ADA's ``r_t``; ``None`` disables augmentation.
    ada_speed_images
        Images over which the ADA probability may move by 1.
    class_balanced
        Draw real batches with uniform classes instead of the data's mix.
    seed
        Seeds initial weights, batch draws, latents, noise and augmentation
        (torch's global generator is seeded when the trainer is built).
    device
        ``auto`` (CUDA if present), ``cpu``, ``cuda`` or ``cuda:N``.
    amp
        bfloat16 autocast for the forward passes, on CUDA and on CPUs with
        native bfloat16 (AVX512-BF16: about 1.2x faster); R1 runs in float32.
    class_loss_weight
        Weight of the auxiliary class loss (AC-GAN): the discriminator learns
        to tell the class of *real* scans from its features, and the generator
        is rewarded when its images are told as the class they were asked for,
        which carries class features (hot spots in positives) into the images
        rather than only a plausible body. 0 disables it; needs a discriminator
        with a class head (``GanSpec.class_head``). Off in DP mode.
    diversity_weight
        Weight of the mode-seeking term (Mao et al. 2019): pairs of latents of
        one class are pushed to give different images, against a class
        collapsing to one scan. 0 disables it; off in DP mode.
    image_prior
        Before the first step, start the generator (and its EMA) from the
        per-pixel mean of the training scans
        (:meth:`~fedbone.models.gan.ConditionalGenerator.set_image_prior`).
        Ignored in DP mode: the mean image is not private.
    """

    steps: int = 1000
    batch_size: int = 16
    lr_g: float = 2e-3
    lr_d: float = 2e-3
    betas: tuple[float, float] = (0.0, 0.99)
    r1_gamma: float = 1.0
    r1_interval: int = 16
    ema_half_life_images: int = 10_000
    ema_rampup: float | None = 0.05
    ada_target: float | None = 0.6
    ada_speed_images: int = 500_000
    class_balanced: bool = False
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    class_loss_weight: float = 0.0
    diversity_weight: float = 0.0
    image_prior: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(self.betas))
        problems = []
        for name in ("batch_size", "r1_interval", "ema_half_life_images"):
            if getattr(self, name) < 1:
                problems.append(Problem("not-positive", "must be >= 1", name))
        for name in ("lr_g", "lr_d"):
            if getattr(self, name) <= 0:
                problems.append(Problem("not-positive", "must be > 0", name))
        for name in ("class_loss_weight", "diversity_weight"):
            if getattr(self, name) < 0:
                problems.append(Problem("negative", "must be >= 0", name))
        if self.steps < 0 or self.r1_gamma < 0:
            problems.append(Problem("negative", "steps and r1_gamma must be >= 0"))
        TrainingError.raise_if_any("GanTrainSpec", problems)


@dataclass(frozen=True)
class GanTrainResult:
    """Outcome of one :meth:`GanTrainer.train` call.

    ``d_loss``/``g_loss`` are means over the call's steps (logistic losses
    without R1); ``steps``/``images_seen`` are the trainer's running totals.
    """

    steps: int
    images_seen: int
    seconds: float
    d_loss: float
    g_loss: float
    ada_p: float


def class_labels(label_bm: np.ndarray, label_ca: np.ndarray) -> np.ndarray:
    """Conditioning class ``2 * bm + ca`` per image; ``-1`` where either is unknown.

    Classes: 0 no BM no CA, 1 CA only, 2 BM only, 3 both. An image with an
    unknown label (``-1`` in :meth:`fedbone.data.cache.SiteCache.labels`) has no
    class and must be left out of GAN training (``labels >= 0``): guessing "no
    CA" would teach the generator to draw unlabelled amyloid hearts as negatives.
    """
    bm = np.asarray(label_bm, dtype=np.int64)
    ca = np.asarray(label_ca, dtype=np.int64)
    return np.where((bm >= 0) & (ca >= 0), 2 * bm + ca, -1)


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """Set ``ema = beta * ema + (1 - beta) * model`` (parameters); copy buffers.

    Parameters
    ----------
    ema
        The averaged copy, updated in place.
    model
        The network being trained, of the same architecture.
    beta
        Weight kept on the old average, in [0, 1] (0 copies ``model``).
    """
    for target, source in zip(ema.parameters(), model.parameters(), strict=True):
        target.lerp_(source.detach(), 1.0 - beta)
    for ema_buffer, buffer in zip(ema.buffers(), model.buffers(), strict=True):
        ema_buffer.copy_(buffer)


def _mode_seeking_loss(images: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mode-seeking term (Mao et al. 2019) over pairs ``(i, i + half)``.

    The inverse of the image distance per latent distance: small when two
    latents of one class give visibly different images, large when the
    generator maps them to the same scan (a collapsed class).
    """
    half = len(z) // 2
    image_distance = (images[:half] - images[half : 2 * half]).abs().mean()
    latent_distance = (z[:half] - z[half : 2 * half]).abs().mean()
    return latent_distance / (image_distance + 1e-5) * 1e-2


def _read(images: np.ndarray | ImageReader, positions: np.ndarray) -> np.ndarray:
    """Rows ``positions`` as float32; a memory map is read in ascending order."""
    if callable(images):
        return np.asarray(images(positions), dtype=np.float32)
    order = np.argsort(positions, kind="stable")
    batch = np.empty((len(positions), *images.shape[1:]), dtype=np.float32)
    batch[order] = images[positions[order]]
    return batch


class GanTrainer:
    """Generator, discriminator, EMA generator, optimisers and ADA state.

    Parameters
    ----------
    spec
        GAN shape.
    train
        Training settings.
    dp_compatible_d
        Build the discriminator with per-sample operations only.
    dp
        Train the discriminator with DP-SGD (see the module notes); needs
        ``dp_compatible_d=True``.

    Raises
    ------
    PrivacyError
        When ``dp`` is set and the discriminator is not DP-compatible.
    """

    def __init__(
        self,
        spec: GanSpec,
        train: GanTrainSpec,
        *,
        dp_compatible_d: bool = False,
        dp: DpGanSpec | None = None,
    ) -> None:
        self.spec = spec
        self.train_spec = train
        self.dp_compatible_d = dp_compatible_d
        self.dp = dp
        self.device = resolve_device(train.device)
        torch.manual_seed(train.seed)
        self.generator: ConditionalGenerator = ConditionalGenerator(spec).to(
            self.device
        )
        self.discriminator: ProjectionDiscriminator = build_discriminator(
            spec, dp_compatible=dp_compatible_d
        ).to(self.device)
        # Channels-last convolutions run about 1.3x faster with oneDNN on CPU.
        for network in (self.generator, self.discriminator):
            network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if train.class_loss_weight and dp is None and not spec.class_head:
            raise TrainingError(
                "GanTrainSpec",
                [
                    Problem(
                        "no-class-head",
                        "class_loss_weight > 0 needs GanSpec(class_head=True)",
                        "class_loss_weight",
                    )
                ],
            )
        self.generator_ema = copy.deepcopy(self.generator).eval().requires_grad_(False)
        self.opt_g = torch.optim.Adam(
            self.generator.parameters(), lr=train.lr_g, betas=train.betas
        )
        self.opt_d = torch.optim.Adam(
            self.discriminator.parameters(), lr=train.lr_d, betas=train.betas
        )
        self.ada = AdaptiveProbability(
            target=train.ada_target if train.ada_target is not None else 0.6,
            speed_images=train.ada_speed_images,
        )
        self.steps = 0
        self.images_seen = 0
        self.progress = TrainingProgress(train.steps)
        self._rng = np.random.default_rng(train.seed)
        self.accountant: AccountantState | None = None
        self.noise_multiplier: float | None = None
        if dp is not None:
            self._private_d = wrap_discriminator(
                self.discriminator, per_sample=dp_compatible_d
            )
            self._private_d.disable_hooks()
            self.accountant = AccountantState(dp.sgd.accountant)
            if train.r1_gamma:
                logger.info(
                    "DP mode: R1 penalty off (Opacus' per-sample hooks cannot "
                    "double-backpropagate)"
                )

    def _check(self, images: np.ndarray | ImageReader, labels: np.ndarray) -> None:
        problems = []
        if labels.ndim != 1 or labels.size == 0:
            problems.append(
                Problem("no-labels", "labels must be a non-empty 1-D array")
            )
        elif labels.min() < 0 or labels.max() >= self.spec.n_classes:
            problems.append(
                Problem(
                    "label-out-of-range",
                    f"class ids must lie in [0, {self.spec.n_classes}); drop images "
                    "with unknown labels (class_labels(...) >= 0) first",
                    "labels",
                )
            )
        if isinstance(images, np.ndarray):
            expected = (len(labels), self.spec.height, self.spec.width)
            if images.shape != expected:
                problems.append(
                    Problem(
                        "image-shape",
                        f"images are {images.shape}, expected {expected} "
                        "(one canvas per label, at the GanSpec size)",
                        "images",
                    )
                )
        TrainingError.raise_if_any("GAN training data", problems)

    def _draw(self, labels: np.ndarray) -> np.ndarray:
        size = self.train_spec.batch_size
        if not self.train_spec.class_balanced:
            return self._rng.integers(0, len(labels), size)
        classes = np.unique(labels)
        picked = self._rng.choice(classes, size)
        return np.array([self._rng.choice(np.flatnonzero(labels == c)) for c in picked])

    def _ema_beta(self) -> float:
        spec = self.train_spec
        half_life = float(spec.ema_half_life_images)
        if spec.ema_rampup is not None:
            seen = self.images_seen + spec.batch_size
            half_life = min(half_life, max(spec.ema_rampup * seen, 1e-8))
        return float(0.5 ** (spec.batch_size / half_life))

    def _autocast(self) -> Any:
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self._amp_enabled()
        )

    def _amp_enabled(self) -> bool:
        """bfloat16 on CUDA, and on CPUs with native bfloat16 (AVX512-BF16)."""
        if not self.train_spec.amp:
            return False
        if self.device.type == "cuda":
            return True
        return self.device.type == "cpu" and torch.cpu._is_avx512_bf16_supported()

    def _class_weight(self) -> float:
        """Return the auxiliary class loss's weight (0 in DP mode)."""
        return 0.0 if self.dp is not None else self.train_spec.class_loss_weight

    def _p(self) -> float:
        if self.dp is not None:
            return self.dp.augment_p
        return self.ada.p if self.train_spec.ada_target is not None else 0.0

    def _fakes(self, labels: torch.Tensor) -> torch.Tensor:
        z = torch.randn(len(labels), self.spec.latent_dim, device=self.device)
        return self.generator(z, labels)

    def _d_step(self, real: torch.Tensor, labels: torch.Tensor) -> float:
        self.opt_d.zero_grad(set_to_none=True)
        with self._autocast():
            with torch.no_grad():
                fake = self._fakes(labels)
            fake_logits = self.discriminator(augment(fake, self._p()), labels)
            real_logits, real_classes = self.discriminator.classify(
                augment(real, self._p()), labels
            )
            loss = (
                functional.softplus(fake_logits).mean()
                + functional.softplus(-real_logits).mean()
            )
            if self._class_weight() and real_classes is not None:
                class_loss = functional.cross_entropy(real_classes.float(), labels)
                loss = loss + self._class_weight() * class_loss
        loss.float().backward()
        if self.train_spec.ada_target is not None:
            self.ada.observe(real_logits)
        if self.train_spec.r1_gamma and self.steps % self.train_spec.r1_interval == 0:
            real = real.detach().requires_grad_(True)
            logits = self.discriminator(augment(real, self._p()), labels)
            (grad,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
            penalty = grad.square().sum(dim=(1, 2, 3)).mean()
            scale = self.train_spec.r1_gamma / 2 * self.train_spec.r1_interval
            (penalty * scale).backward()
        self.opt_d.step()
        return float(loss.detach())

    def _private_d_step(
        self, real: torch.Tensor, labels: torch.Tensor, expected_batch: float
    ) -> float:
        assert self.dp is not None and self.noise_multiplier is not None
        self.opt_d.zero_grad(set_to_none=True)
        pairs = len(labels)
        loss_value = float("nan")
        if pairs:
            # Eval mode: fakes must not move w_avg by the private class mix.
            self.generator.eval()
            with torch.no_grad():
                fake = self._fakes(labels)
            self.generator.train()
            images = augment(torch.cat([real, fake]), self._p())
            self._private_d.enable_hooks()
            logits = self.discriminator(images, torch.cat([labels, labels]))
            # Summed so each per-sample gradient is that image's own loss's.
            loss = (
                functional.softplus(-logits[:pairs]).sum()
                + functional.softplus(logits[pairs:]).sum()
            )
            with warnings.catch_warnings():
                # Opacus' full backward hooks warn that the images need no
                # gradient; only the parameters' per-sample gradients matter.
                warnings.filterwarnings("ignore", "Full backward hook is firing")
                loss.backward()
            self._private_d.disable_hooks()
            loss_value = float(loss.detach()) / pairs
        apply_private_gradients(
            [p for p in self.discriminator.parameters() if p.requires_grad],
            pairs,
            expected_batch,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.dp.sgd.max_grad_norm,
        )
        self.opt_d.step()
        return loss_value

    def _private_draw(self, n: int, sample_rate: float) -> np.ndarray:
        assert self.dp is not None
        if self.dp.sgd.poisson_sampling:
            return np.flatnonzero(self._rng.random(n) < sample_rate)
        return self._rng.choice(n, min(n, self.train_spec.batch_size), replace=False)

    def _g_step(self, labels: torch.Tensor) -> float:
        self.opt_g.zero_grad(set_to_none=True)
        self.discriminator.requires_grad_(False)
        diversity = self.train_spec.diversity_weight if self.dp is None else 0.0
        if diversity and len(labels) >= 2:
            # Pairs of latents with the same class: image i and i + half.
            half = len(labels) // 2
            labels = torch.cat([labels[:half], labels[:half]])
        z = torch.randn(len(labels), self.spec.latent_dim, device=self.device)
        with self._autocast():
            fakes = self.generator(z, labels)
            logits, classes = self.discriminator.classify(
                augment(fakes, self._p()), labels
            )
            loss = functional.softplus(-logits).mean()
            if self._class_weight() and classes is not None:
                class_loss = functional.cross_entropy(classes.float(), labels)
                loss = loss + self._class_weight() * class_loss
        if diversity and len(labels) >= 2:
            loss = loss + diversity * _mode_seeking_loss(fakes.float(), z)
        loss.float().backward()
        self.discriminator.requires_grad_(True)
        self.opt_g.step()
        return float(loss.detach())

    def train(
        self, images: np.ndarray | ImageReader, labels: np.ndarray, steps: int
    ) -> GanTrainResult:
        """Run ``steps`` discriminator + generator updates.

        Parameters
        ----------
        images
            ``(N, height, width)`` floats in ``[0, 1]`` (a float16 cache memory
            map is fine), or a reader ``positions -> (B, height, width)``.
        labels
            ``(N,)`` class ids in ``[0, n_classes)`` (see :func:`class_labels`).
        steps
            Number of steps in this call.

        Returns
        -------
        GanTrainResult
            Mean losses of this call and the running totals.

        Raises
        ------
        TrainingError
            When labels or image shapes do not fit the GAN.
        """
        labels = np.asarray(labels, dtype=np.int64)
        self._check(images, labels)
        if self.dp is not None:
            return self._train_private(images, labels, steps)
        self._start_from_mean(images, len(labels))
        self.generator.train()
        self.discriminator.train()
        start = time.perf_counter()
        d_losses, g_losses = [], []
        for _ in range(steps):
            positions = self._draw(labels)
            real = torch.from_numpy(_read(images, positions))[:, None].to(self.device)
            batch_labels = torch.from_numpy(labels[positions]).to(self.device)
            d_losses.append(self._d_step(real, batch_labels))
            g_losses.append(self._g_step(batch_labels))
            ema_update(self.generator_ema, self.generator, self._ema_beta())
            self.steps += 1
            self.images_seen += len(positions)
            self.progress.step(
                self.steps, self.images_seen, (d_losses[-1], g_losses[-1]), self._p()
            )
        return self._result(start, d_losses, g_losses)

    def _start_from_mean(self, images: np.ndarray | ImageReader, n: int) -> None:
        """Set the generators' image prior to the mean scan, once, before step 1."""
        prior = self.generator.image_prior
        if not self.train_spec.image_prior or self.steps or bool(prior.any()):
            return
        total = np.zeros((self.spec.height, self.spec.width), dtype=np.float64)
        for first in range(0, n, 256):
            total += _read(images, np.arange(first, min(n, first + 256))).sum(axis=0)
        mean = torch.from_numpy(total / n).to(self.device)
        self.generator.set_image_prior(mean)
        self.generator_ema.set_image_prior(mean)
        logger.info("GAN generator starts from the mean of %d training scans", n)

    def _result(
        self, start: float, d_losses: list[float], g_losses: list[float]
    ) -> GanTrainResult:
        result = GanTrainResult(
            steps=self.steps,
            images_seen=self.images_seen,
            seconds=time.perf_counter() - start,
            d_loss=float(np.nanmean(d_losses)) if d_losses else float("nan"),
            g_loss=float(np.mean(g_losses)) if g_losses else float("nan"),
            ada_p=self.dp.augment_p if self.dp is not None else self.ada.p,
        )
        logger.info("GAN %s", result)
        return result

    def _train_private(
        self, images: np.ndarray | ImageReader, labels: np.ndarray, steps: int
    ) -> GanTrainResult:
        assert self.dp is not None and self.accountant is not None
        sample_rate = min(1.0, self.train_spec.batch_size / len(labels))
        if self.noise_multiplier is None:
            self.noise_multiplier = self.dp.noise_multiplier(
                sample_rate, self.train_spec.steps
            )
        self.generator.train()
        self.discriminator.train()
        start = time.perf_counter()
        d_losses, g_losses = [], []
        for _ in range(steps):
            positions = self._private_draw(len(labels), sample_rate)
            real = torch.zeros(0, 1, self.spec.height, self.spec.width)
            if len(positions):
                real = torch.from_numpy(_read(images, positions))[:, None]
            real = real.to(self.device)
            real_labels = torch.from_numpy(labels[positions]).to(self.device)
            d_losses.append(
                self._private_d_step(real, real_labels, sample_rate * len(labels))
            )
            self.accountant = self.accountant.extended(
                self.noise_multiplier, sample_rate, 1
            )
            # Uniform classes: the site's class mix must not reach the generator.
            g_labels = self._rng.integers(
                0, self.spec.n_classes, self.train_spec.batch_size
            )
            g_losses.append(self._g_step(torch.from_numpy(g_labels).to(self.device)))
            ema_update(self.generator_ema, self.generator, self._ema_beta())
            self.steps += 1
            self.images_seen += len(positions)
            self.progress.step(
                self.steps, self.images_seen, (d_losses[-1], g_losses[-1]), self._p()
            )
        return self._result(start, d_losses, g_losses)

    def epsilon(self, delta: float | None = None) -> float:
        """Return the ε the discriminator's DP-SGD has spent, over every call.

        Parameters
        ----------
        delta
            δ of the guarantee; the spec's ``sgd.delta`` when None.

        Raises
        ------
        PrivacyError
            When the trainer is not in DP mode.
        """
        if self.dp is None or self.accountant is None:
            raise PrivacyError(
                "GAN trainer",
                [
                    Problem(
                        "not-private",
                        "this trainer has no DP spec, so it spends no measured ε; "
                        "build it with dp=DpGanSpec(...)",
                        "dp",
                    )
                ],
            )
        return self.accountant.epsilon(self.dp.sgd.delta if delta is None else delta)

    @torch.no_grad()
    def generate(
        self,
        labels: np.ndarray,
        *,
        seed: int,
        truncation: float = 1.0,
        batch_size: int = 64,
    ) -> np.ndarray:
        """Generate one image per label from the EMA generator.

        Parameters
        ----------
        labels
            ``(N,)`` class ids.
        seed
            Seeds latents and noise: the same seed gives the same images on the
            same device.
        truncation
            Pull towards the class-mean style (1: none).
        batch_size
            Images per forward pass.

        Returns
        -------
        numpy.ndarray
            ``(N, height, width)`` float32 in ``[0, 1]``.
        """
        labels = np.asarray(labels, dtype=np.int64)
        rng = torch.Generator(device=self.device).manual_seed(seed)
        model = self.generator_ema.eval()
        out = np.empty((len(labels), self.spec.height, self.spec.width), np.float32)
        for start in range(0, len(labels), batch_size):
            chunk = torch.from_numpy(labels[start : start + batch_size]).to(self.device)
            z = torch.randn(
                len(chunk), self.spec.latent_dim, generator=rng, device=self.device
            )
            with self._autocast():
                images = model(z, chunk, truncation=truncation, generator=rng)
            out[start : start + len(chunk)] = images[:, 0].float().cpu().numpy()
        return out

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume training (tensors and plain values).

        In DP mode it also holds the DP spec, the noise multiplier in use and
        the accountant's history (JSON), so a restarted site keeps its spending.
        """
        state = {
            "format": _FORMAT,
            "spec": asdict(self.spec),
            "train": asdict(self.train_spec),
            "dp_compatible_d": self.dp_compatible_d,
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "generator_ema": self.generator_ema.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "ada_p": self.ada.p,
            "steps": self.steps,
            "images_seen": self.images_seen,
        }
        if self.dp is not None and self.accountant is not None:
            state["dp"] = asdict(self.dp)
            state["dp_noise_multiplier"] = self.noise_multiplier
            state["dp_accountant"] = self.accountant.to_json()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore weights, optimisers and counters saved by :meth:`state_dict`.

        Raises
        ------
        PrivacyError
            When a DP checkpoint is loaded into a trainer without DP: its
            privacy history would be lost.
        """
        if "dp_accountant" in state and self.dp is None:
            raise PrivacyError(
                "GAN checkpoint",
                [
                    Problem(
                        "dp-history-dropped",
                        "the checkpoint was trained with DP-SGD; build the trainer "
                        "with its dp spec (GanTrainer.load does) to keep the history",
                        "dp",
                    )
                ],
            )
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.generator_ema.load_state_dict(state["generator_ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.ada.p = float(state["ada_p"])
        self.steps = int(state["steps"])
        self.images_seen = int(state["images_seen"])
        if "dp_accountant" in state:
            self.accountant = AccountantState.from_json(state["dp_accountant"])
            noise = state["dp_noise_multiplier"]
            self.noise_multiplier = None if noise is None else float(noise)

    def save(self, path: str | Path) -> str:
        """Write a checkpoint to ``path``; return the file's sha256 (provenance)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.state_dict(), target)
        digest = hashlib.sha256(target.read_bytes()).hexdigest()
        logger.info("GAN checkpoint %s sha256 %s", target, digest)
        return digest

    @classmethod
    def load(cls, path: str | Path, *, device: str | None = None) -> GanTrainer:
        """Rebuild a trainer from a :meth:`save` checkpoint.

        Parameters
        ----------
        path
            Checkpoint file.
        device
            Override the saved device (e.g. ``cpu`` for a CUDA checkpoint).
        """
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
        if state.get("format") != _FORMAT:
            raise TrainingError(
                str(path),
                [
                    Problem(
                        "checkpoint-format", f"expected GAN checkpoint format {_FORMAT}"
                    )
                ],
            )
        train = dict(state["train"])
        if device is not None:
            train["device"] = device
        dp = state.get("dp")
        trainer = cls(
            GanSpec(**state["spec"]),
            GanTrainSpec(**train),
            dp_compatible_d=bool(state["dp_compatible_d"]),
            dp=None
            if dp is None
            else DpGanSpec(DpSgdSpec(**dp["sgd"]), augment_p=dp["augment_p"]),
        )
        trainer.load_state_dict(state)
        return trainer
