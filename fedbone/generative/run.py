"""A site's GAN run: train in chunks, checkpoint, select the checkpoint by FD.

Haberl et al. (2025) selected their StyleGAN2 by FID. At a fedbone site the
reference set is the site's own held-out real scans (val and test splits),
which never leave it: after every ``checkpoint_every`` steps the EMA generator
draws images with the held-out class mix, and the Fréchet distance, KID and
precision/recall (k = 3) between the embedded held-out scans and the embedded
generated images are recorded with the checkpoint's sha256, and so is the
**class-conditional FD** (intra-FD): the mean over classes with at least
:data:`MIN_CLASS_IMAGES` held-out scans of the FD between that class's
held-out scans and images generated for that class. At the end the
checkpoint with the lowest intra-FD (the overall FD when no class has enough
scans) is loaded back into the trainer. Selecting by the overall FD rewarded a
generator that ignores its label: the generated set holds every class in equal
numbers while a site's held-out scans are mostly negatives, so a generator
that draws negatives for every label scored best.
Only :meth:`GanRunResult.to_metrics` (scalars) is meant to leave the site.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedbone.classifier.errors import TrainingError
from fedbone.errors import Problem
from fedbone.generative.audit.similarity import FeatureFn
from fedbone.generative.fidelity.distances import (
    frechet_distance,
    kernel_inception_distance,
    precision_recall,
)
from fedbone.generative.trainer import GanTrainer

__all__ = [
    "MIN_CLASS_IMAGES",
    "CheckpointInfo",
    "GanRunResult",
    "GanRunSpec",
    "generator_fidelity",
    "select_best",
    "train_site_gan",
]

logger = logging.getLogger(__name__)

# Precision/recall use k = 3 neighbours, so each feature set needs 4 rows.
_PR_NEIGHBOURS = 3
_MIN_ROWS = _PR_NEIGHBOURS + 1
#: Held-out scans a class needs to count in the class-conditional FD.
MIN_CLASS_IMAGES = 8


@dataclass(frozen=True)
class GanRunSpec:
    """Length and checkpointing of a site's GAN run.

    Parameters
    ----------
    steps
        Training steps of this run.
    checkpoint_every
        Steps between checkpoints; a last, shorter chunk ends the run when
        ``steps`` is not a multiple.
    fd_images_per_class
        Images generated per class present in the held-out scans, for the
        fidelity metrics of each checkpoint.
    seed
        Seed of those images' latents (the same for every checkpoint, so the
        checkpoints are compared on the same draws) and of the KID subsets.
    """

    steps: int
    checkpoint_every: int
    fd_images_per_class: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        problems = [
            Problem("not-positive", f"is {getattr(self, name)}; use >= 1", name)
            for name in ("steps", "checkpoint_every")
            if getattr(self, name) < 1
        ]
        if self.fd_images_per_class < _MIN_ROWS:
            problems.append(
                Problem(
                    "too-few-fd-images",
                    f"is {self.fd_images_per_class}; precision/recall with k = "
                    f"{_PR_NEIGHBOURS} needs at least {_MIN_ROWS} (64 is typical)",
                    "fd_images_per_class",
                )
            )
        TrainingError.raise_if_any("GanRunSpec", problems)


@dataclass(frozen=True)
class CheckpointInfo:
    """One saved checkpoint and its fidelity on the held-out real scans.

    Parameters
    ----------
    step
        The trainer's total step count when saved.
    path
        Checkpoint file (site-local).
    sha256
        Digest of the file, for provenance of the images it generates.
    fd
        Fréchet distance between held-out and generated features.
    kid
        Mean KID over subsets.
    precision, recall
        Improved precision and recall, k = 3.
    intra_fd
        Mean per-class FD over classes with at least :data:`MIN_CLASS_IMAGES`
        held-out scans (``nan`` when none has).
    """

    step: int
    path: str
    sha256: str
    fd: float
    kid: float
    precision: float
    recall: float
    intra_fd: float = math.nan

    @property
    def selection_score(self) -> float:
        """The intra-FD, or the overall FD when no class had enough scans."""
        return self.fd if math.isnan(self.intra_fd) else self.intra_fd


@dataclass(frozen=True)
class GanRunResult:
    """Outcome of :func:`train_site_gan`.

    Parameters
    ----------
    checkpoints
        Every checkpoint of the run, in step order.
    best
        The selected checkpoint (lowest FD), now loaded in the trainer.
    seconds
        Wall time of the run, fidelity metrics included.
    images_seen
        Real images drawn by this run's training steps.
    """

    checkpoints: tuple[CheckpointInfo, ...]
    best: CheckpointInfo
    seconds: float
    images_seen: int

    def to_metrics(self) -> dict[str, float]:
        """Return flat kebab-case scalars that may leave the site.

        ``best-*`` for the selected checkpoint, ``fd-step-<n>``,
        ``kid-step-<n>``, ``precision-step-<n>`` and ``recall-step-<n>`` per
        checkpoint, plus ``n-checkpoints``, ``seconds`` and ``images-seen``.
        No path and no digest (strings are not metrics).
        """
        metrics: dict[str, float] = {
            "best-step": float(self.best.step),
            "best-fd": self.best.fd,
            "best-intra-fd": self.best.intra_fd,
            "best-kid": self.best.kid,
            "best-precision": self.best.precision,
            "best-recall": self.best.recall,
            "n-checkpoints": float(len(self.checkpoints)),
            "seconds": self.seconds,
            "images-seen": float(self.images_seen),
        }
        for info in self.checkpoints:
            metrics[f"fd-step-{info.step}"] = info.fd
            metrics[f"intra-fd-step-{info.step}"] = info.intra_fd
            metrics[f"kid-step-{info.step}"] = info.kid
            metrics[f"precision-step-{info.step}"] = info.precision
            metrics[f"recall-step-{info.step}"] = info.recall
        return metrics


def select_best(checkpoints: Sequence[CheckpointInfo]) -> CheckpointInfo:
    """Return the checkpoint with the lowest intra-FD (FD without it; earliest on ties).

    Raises
    ------
    TrainingError
        ``no-checkpoints`` when the sequence is empty.
    """
    if not checkpoints:
        raise TrainingError(
            "select_best",
            [Problem("no-checkpoints", "no checkpoint to choose from; train first")],
        )
    return min(checkpoints, key=lambda info: info.selection_score)


def train_site_gan(
    trainer: GanTrainer,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    held_out: np.ndarray,
    held_out_labels: np.ndarray,
    embed: FeatureFn,
    spec: GanRunSpec,
    checkpoint_dir: Path,
) -> GanRunResult:
    """Train ``spec.steps`` steps with checkpoints; keep the one with the lowest FD.

    Parameters
    ----------
    trainer
        The site's trainer, fresh or already trained (its step count goes on,
        so checkpoint names and steps continue from ``trainer.steps``). On
        return it holds the selected checkpoint, counters included.
    images, labels
        Training scans and their class ids, as for :meth:`GanTrainer.train`.
    held_out, held_out_labels
        ``(R, height, width)`` real scans the generator never sees and their
        class ids; generated sets mirror their classes, with
        ``spec.fd_images_per_class`` images for each class present.
    embed
        Maps ``(N, H, W)`` images to ``(N, ...)`` features (flattened per row).
    spec
        Run length and checkpointing.
    checkpoint_dir
        Where ``gan-step-<step>.pt`` files are written.

    Returns
    -------
    GanRunResult
        Every checkpoint's metrics and the selected one.

    Raises
    ------
    TrainingError
        Listing every problem with the held-out scans, or a checkpoint whose
        file changed before it was loaded back.
    """
    held_out_labels = np.asarray(held_out_labels, dtype=np.int64)
    _check_held_out(trainer, held_out, held_out_labels)
    start = time.perf_counter()
    first_images_seen = trainer.images_seen
    real_features = _features(embed, held_out)
    fake_labels = np.repeat(np.unique(held_out_labels), spec.fd_images_per_class)
    checkpoints: list[CheckpointInfo] = []
    for chunk in _chunks(spec.steps, spec.checkpoint_every):
        trainer.train(images, labels, chunk)
        generated = trainer.generate(fake_labels, seed=spec.seed)
        fake_features = _features(embed, generated)
        fidelity = _fidelity(real_features, fake_features, spec.seed)
        intra_fd = class_conditional_fd(
            real_features, held_out_labels, fake_features, fake_labels
        )
        path = Path(checkpoint_dir) / f"gan-step-{trainer.steps}.pt"
        info = CheckpointInfo(
            step=trainer.steps,
            path=str(path),
            sha256=trainer.save(path),
            intra_fd=intra_fd,
            **fidelity,
        )
        logger.info(
            "GAN checkpoint step %d: FD %.4g, class-conditional FD %.4g",
            info.step,
            info.fd,
            info.intra_fd,
        )
        checkpoints.append(info)
    images_seen = trainer.images_seen - first_images_seen
    best = select_best(checkpoints)
    if best is not checkpoints[-1]:
        _load_checkpoint(trainer, best)
    logger.info(
        "GAN run: selected step %d (class-conditional FD %.4g, FD %.4g)",
        best.step,
        best.intra_fd,
        best.fd,
    )
    return GanRunResult(
        checkpoints=tuple(checkpoints),
        best=best,
        seconds=time.perf_counter() - start,
        images_seen=images_seen,
    )


def generator_fidelity(
    trainer: GanTrainer,
    held_out: np.ndarray,
    held_out_labels: np.ndarray,
    *,
    embed: FeatureFn,
    images_per_class: int,
    seed: int,
) -> dict[str, float]:
    """FD, KID and precision/recall of ``trainer``'s EMA generator on held-out scans.

    The same measure :func:`train_site_gan` records per checkpoint: generated
    images mirror the held-out classes, ``images_per_class`` per class, drawn
    with ``seed``. Returns ``fd``, ``kid``, ``precision`` and ``recall``.

    Parameters
    ----------
    trainer
        The GAN; its EMA generator is scored.
    held_out
        ``(R, H, W)`` held-out real scans on the GAN's canvas, in [0, 1].
    held_out_labels
        ``(R,)`` class id ``2 * bm + ca`` of each scan; unknown labels must be
        dropped first.
    embed
        Maps images to feature vectors (the site's feature encoder).
    images_per_class
        Images generated for each class present in ``held_out_labels``.
    seed
        Seeds the latents and the KID subsets.

    Raises
    ------
    TrainingError
        When the held-out scans or labels do not fit the GAN.
    """
    held_out_labels = np.asarray(held_out_labels, dtype=np.int64)
    _check_held_out(trainer, held_out, held_out_labels)
    fake_labels = np.repeat(np.unique(held_out_labels), images_per_class)
    generated = trainer.generate(fake_labels, seed=seed)
    return _fidelity(_features(embed, held_out), _features(embed, generated), seed)


def class_conditional_fd(
    real: np.ndarray, real_labels: np.ndarray, fake: np.ndarray, fake_labels: np.ndarray
) -> float:
    """Mean per-class FD over classes with enough scans on both sides.

    Parameters
    ----------
    real, real_labels
        Held-out features ``(R, D)`` and their class ids.
    fake, fake_labels
        Generated features ``(F, D)`` and the class each was generated for.

    Returns
    -------
    float
        The mean FD of the classes with at least :data:`MIN_CLASS_IMAGES` rows
        on each side; ``nan`` when no class has.
    """
    distances = [
        frechet_distance(real[real_labels == c], fake[fake_labels == c])
        for c in np.unique(real_labels)
        if min((real_labels == c).sum(), (fake_labels == c).sum()) >= MIN_CLASS_IMAGES
    ]
    return float(np.mean(distances)) if distances else math.nan


def _chunks(steps: int, every: int) -> list[int]:
    full, rest = divmod(steps, every)
    return [every] * full + ([rest] if rest else [])


def _features(embed: FeatureFn, images: np.ndarray) -> np.ndarray:
    features = np.asarray(embed(images), dtype=np.float64)
    return features.reshape(len(features), -1)


def _fidelity(real: np.ndarray, fake: np.ndarray, seed: int) -> dict[str, float]:
    pr = precision_recall(real, fake, k=_PR_NEIGHBOURS)
    return {
        "fd": frechet_distance(real, fake),
        "kid": kernel_inception_distance(real, fake, seed=seed)[0],
        "precision": pr.precision,
        "recall": pr.recall,
    }


def _load_checkpoint(trainer: GanTrainer, info: CheckpointInfo) -> None:
    """Load ``info`` into ``trainer`` after checking the file is the one saved."""
    data = Path(info.path).read_bytes()
    if hashlib.sha256(data).hexdigest() != info.sha256:
        raise TrainingError(
            info.path,
            [
                Problem(
                    "checkpoint-changed",
                    "the file's sha256 differs from the one recorded when it was "
                    "saved; do not touch checkpoint_dir during a run, then rerun",
                )
            ],
        )
    state = torch.load(info.path, map_location="cpu", weights_only=True)
    trainer.load_state_dict(state)


def _check_held_out(
    trainer: GanTrainer, held_out: np.ndarray, held_out_labels: np.ndarray
) -> None:
    problems: list[Problem] = []
    expected = (trainer.spec.height, trainer.spec.width)
    if held_out.ndim != 3 or held_out.shape[1:] != expected:
        problems.append(
            Problem(
                "held-out-shape",
                f"held-out scans are {held_out.shape}; expected (R, *{expected}) "
                "on the GAN's canvas",
                "held_out",
            )
        )
    if held_out_labels.shape != (len(held_out),):
        problems.append(
            Problem(
                "held-out-labels-length",
                f"{held_out_labels.shape} labels for {len(held_out)} held-out "
                "scans; pass one class id per scan",
                "held_out_labels",
            )
        )
    elif held_out_labels.size and (
        held_out_labels.min() < 0 or held_out_labels.max() >= trainer.spec.n_classes
    ):
        problems.append(
            Problem(
                "label-out-of-range",
                f"class ids must lie in [0, {trainer.spec.n_classes}); drop "
                "held-out scans with unknown labels first",
                "held_out_labels",
            )
        )
    if len(held_out) < _MIN_ROWS:
        problems.append(
            Problem(
                "too-few-held-out",
                f"{len(held_out)} held-out scans; FD model selection needs at least "
                f"{_MIN_ROWS} (more give a steadier FD)",
                "held_out",
            )
        )
    TrainingError.raise_if_any("GAN model selection", problems)
