"""Synthesis, curation and audit at the site that owns the generator.

1. **Generate** ``n_per_class`` images for each conditioning class.
2. **Curate** (Haberl et al. 2025): the site's classifier for the study task
   (``bm`` or ``ca``) scores every image; an image is kept only if the
   classifier agrees with the label its class implies for that task
   (``bm = class // 2``, ``ca = class % 2``, see
   :func:`fedbone.generative.trainer.class_labels`). The other task's label is not
   checked: curation uses the one classifier the study trains.
3. **Audit** every kept image against all of the site's training scans with
   :func:`fedbone.generative.audit.similarity.audit_synthetic` (release rule and
   membership inference against the held-out scans); optionally withhold the
   whole batch when the membership AUC exceeds a ceiling.

Only released images, their class ids and :meth:`SynthesisResult.summary`
(counts and audit aggregates, never an image or an index) may leave the site.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fedbone.classifier.errors import TrainingError
from fedbone.data.cache import SiteCache
from fedbone.errors import Problem
from fedbone.generative.audit.similarity import (
    AuditResult,
    AuditThresholds,
    FeatureFn,
    MsSsimFn,
    audit_synthetic,
)

__all__ = [
    "ImageGenerator",
    "SynthesisResult",
    "SynthesisSpec",
    "site_audit_inputs",
    "synthesize",
]

logger = logging.getLogger(__name__)

_TASKS = ("bm", "ca")
_N_CLASSES = 4
_HELD_OUT_SPLITS = ("val", "test")


class ImageGenerator(Protocol):
    """What synthesis needs of a generator, e.g. a ``GanTrainer``."""

    def generate(
        self, labels: np.ndarray, *, seed: int, truncation: float = 1.0
    ) -> np.ndarray:
        """Return one ``(H, W)`` image in [0, 1] per class id in ``labels``.

        Parameters
        ----------
        labels
            ``(N,)`` conditioning class ids ``2 * bm + ca`` (0..3).
        seed
            Seeds the latents: the same seed gives the same images on the
            same device.
        truncation
            Pull towards the class-mean style, in (0, 1] (1: none).
        """
        ...


@dataclass(frozen=True)
class SynthesisSpec:
    """What to generate and how to curate it.

    Parameters
    ----------
    n_per_class
        Images generated per class, before curation and audit.
    classes
        Conditioning classes ``2 * bm + ca`` to generate.
    curate_task
        ``bm`` or ``ca``: the study task whose classifier curates.
    truncation
        Truncation of the generator's style, in (0, 1] (1: none).
    seed
        Seed of the latents.
    """

    n_per_class: int
    classes: tuple[int, ...] = (0, 1, 2, 3)
    curate_task: str = "bm"
    truncation: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(int(c) for c in self.classes))
        problems = []
        if self.n_per_class < 1:
            problems.append(
                Problem(
                    "not-positive", f"is {self.n_per_class}; use >= 1", "n_per_class"
                )
            )
        if not self.classes or len(set(self.classes)) != len(self.classes):
            problems.append(
                Problem(
                    "bad-classes",
                    f"{self.classes}: list each class once, at least one",
                    "classes",
                )
            )
        if any(not 0 <= c < _N_CLASSES for c in self.classes):
            problems.append(
                Problem(
                    "class-out-of-range",
                    f"{self.classes}: classes are 2 * bm + ca, in [0, {_N_CLASSES})",
                    "classes",
                )
            )
        if self.curate_task not in _TASKS:
            problems.append(
                Problem(
                    "unknown-task",
                    f"{self.curate_task!r}; expected one of {_TASKS}",
                    "curate_task",
                )
            )
        if not 0.0 < self.truncation <= 1.0:
            problems.append(
                Problem(
                    "bad-truncation",
                    f"is {self.truncation}; expected a value in (0, 1] (1: none)",
                    "truncation",
                )
            )
        TrainingError.raise_if_any("SynthesisSpec", problems)


@dataclass(frozen=True)
class SynthesisResult:
    """Released synthetic images and the record of how they were chosen.

    Parameters
    ----------
    images
        ``(n-released, H, W)`` float32 in [0, 1]: released images only.
    class_ids
        Conditioning class of each released image.
    audit
        The audit of the curated images (site-only; empty when curation kept
        nothing and no audit ran).
    counts
        ``n-generated``, ``n-curated-out``, ``n-audited``, ``n-blocked``,
        ``n-withheld-membership``, ``n-released`` and
        ``n-released-class-<c>`` per generated class.
    checkpoint_sha256
        Digest of the generator checkpoint (provenance).
    membership_auc_ceiling
        The membership ceiling applied (``nan`` when off).
    """

    images: np.ndarray
    class_ids: np.ndarray
    audit: AuditResult
    counts: dict[str, int]
    checkpoint_sha256: str
    membership_auc_ceiling: float = math.nan

    @property
    def passed(self) -> bool:
        """True when at least one image is released (the batch may leave)."""
        return self.counts["n-released"] > 0

    def summary(self) -> dict[str, float | int | bool | str | list[float] | list[int]]:
        """Return what may leave the site: counts, audit aggregates, verdict.

        The audit's :meth:`~fedbone.generative.audit.similarity.AuditResult.summary`
        (its ``n-released`` replaced by the final count), the counts,
        ``membership-auc-ceiling``, ``membership-passed``, ``passed`` and
        ``checkpoint-sha256``. No image, no index.
        """
        summary: dict[str, float | int | bool | str | list[float] | list[int]] = {}
        summary.update(self.audit.summary())
        summary.update(self.counts)
        summary["membership-auc-ceiling"] = self.membership_auc_ceiling
        summary["membership-passed"] = self.counts["n-withheld-membership"] == 0
        summary["passed"] = self.passed
        summary["checkpoint-sha256"] = self.checkpoint_sha256
        return summary


def synthesize(
    trainer: ImageGenerator,
    spec: SynthesisSpec,
    *,
    classify: Callable[[np.ndarray], np.ndarray],
    training: np.ndarray,
    training_patient_ids: Sequence[str],
    held_out: np.ndarray | None,
    thresholds: AuditThresholds,
    checkpoint_sha256: str,
    features: FeatureFn | None = None,
    ms_ssim_fn: MsSsimFn | None = None,
    device: str = "cpu",
    membership_auc_ceiling: float | None = None,
) -> SynthesisResult:
    """Generate, curate and audit synthetic images; return the released ones.

    Parameters
    ----------
    trainer
        The selected generator (anything with ``generate(labels, seed=,
        truncation=)``, e.g. a :class:`~fedbone.generative.trainer.GanTrainer`).
    spec
        Classes, count, curation task, truncation and seed.
    classify
        ``(N, H, W) -> (N,)`` probability that each image is positive for
        ``spec.curate_task``, from the site's classifier of that study task;
        an image is kept iff ``(p >= 0.5)`` equals its class's label.
    training, training_patient_ids
        All of the site's training scans (float32 in [0, 1]) and one patient
        id each (see :func:`site_audit_inputs`).
    held_out
        Real scans the generator never saw, for the membership test; ``None``
        or an empty stack skips it.
    thresholds
        The site's release rule.
    checkpoint_sha256
        Digest of the generator checkpoint, carried into the summary.
    features, ms_ssim_fn, device
        Passed to :func:`~fedbone.generative.audit.similarity.audit_synthetic`.
    membership_auc_ceiling
        Withhold every image when the membership AUC exceeds this (``None``:
        report the AUC only). With few scans the AUC is noisy; 0.6 is a
        cautious choice for hundreds of held-out scans.

    Returns
    -------
    SynthesisResult
        Released images, their classes, the audit and the counts.

    Raises
    ------
    TrainingError
        When ``classify`` returns the wrong number of scores or non-finite ones.
    EvaluationError
        From the audit, for unusable training or held-out scans or thresholds.
    """
    labels = np.repeat(np.asarray(spec.classes, dtype=np.int64), spec.n_per_class)
    generated = np.asarray(
        trainer.generate(labels, seed=spec.seed, truncation=spec.truncation),
        dtype=np.float32,
    )
    kept = _curate(generated, labels, spec.curate_task, classify)
    if held_out is not None and len(held_out) == 0:
        held_out = None
    if kept.any():
        audit = audit_synthetic(
            generated[kept],
            training,
            training_patient_ids=training_patient_ids,
            held_out=held_out,
            thresholds=thresholds,
            features=features,
            ms_ssim_fn=ms_ssim_fn,
            device=device,
        )
    else:
        logger.warning("curation kept no synthetic image; audit skipped")
        audit = _empty_audit(thresholds)
    released = audit.released.copy()
    ceiling = math.nan if membership_auc_ceiling is None else membership_auc_ceiling
    withheld = 0
    if audit.membership_auc > ceiling:
        logger.warning(
            "membership AUC %.3f exceeds %.3f: every synthetic image withheld",
            audit.membership_auc,
            ceiling,
        )
        withheld = int(released.sum())
        released[:] = False
    images = generated[kept][released]
    class_ids = labels[kept][released]
    counts = {
        "n-generated": int(labels.size),
        "n-curated-out": int((~kept).sum()),
        "n-audited": int(kept.sum()),
        "n-blocked": audit.n_blocked,
        "n-withheld-membership": withheld,
        "n-released": int(released.sum()),
    }
    for c in spec.classes:
        counts[f"n-released-class-{c}"] = int((class_ids == c).sum())
    logger.info("synthesis: %s", counts)
    return SynthesisResult(
        images=images,
        class_ids=class_ids,
        audit=audit,
        counts=counts,
        checkpoint_sha256=checkpoint_sha256,
        membership_auc_ceiling=ceiling,
    )


def site_audit_inputs(cache: SiteCache) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Read what the audit needs from a site's cache.

    Parameters
    ----------
    cache
        The site's prepared cache.

    Returns
    -------
    tuple
        Training scans (``train`` split, labelled or not: the audit compares
        against every scan the site trains on) as float32 ``(T, H, W)``, their
        patient ids, and the held-out scans (``val`` and ``test`` splits) as
        float32 ``(R, H, W)``, possibly empty.
    """
    train = cache.indices("train")
    held_out = np.sort(np.concatenate([cache.indices(s) for s in _HELD_OUT_SPLITS]))
    return (
        np.asarray(cache.images[train], dtype=np.float32),
        [cache.index[i].patient_id for i in train],
        np.asarray(cache.images[held_out], dtype=np.float32),
    )


def _curate(
    images: np.ndarray,
    labels: np.ndarray,
    task: str,
    classify: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """Return the mask of images whose classifier verdict matches their label."""
    scores = np.asarray(classify(images), dtype=np.float64).reshape(-1)
    problems = []
    if scores.size != len(images):
        problems.append(
            Problem(
                "score-count",
                f"{scores.size} scores for {len(images)} images; classify must "
                "return one probability per image",
                "classify",
            )
        )
    elif not np.isfinite(scores).all():
        problems.append(
            Problem(
                "scores-not-finite",
                "classify returned NaN or infinite probabilities",
                "classify",
            )
        )
    TrainingError.raise_if_any("curation", problems)
    expected = labels // 2 if task == "bm" else labels % 2
    return (scores >= 0.5) == (expected == 1)


def _empty_audit(thresholds: AuditThresholds) -> AuditResult:
    """Return the audit of zero images: no verdicts, thresholds or closest pair."""
    empty = np.zeros(0)
    return AuditResult(
        released=np.zeros(0, dtype=bool),
        nearest_mse=empty,
        nearest_index=np.zeros(0, dtype=np.int64),
        nearest_feature=empty,
        max_ms_ssim=empty,
        threshold_mse=math.nan,
        threshold_feature=math.nan,
        control={},
        closest_pair={"mse": math.nan, "mae": math.nan, "ms_ssim": math.nan},
        n_blocked=0,
        membership_auc=math.nan,
        thresholds=thresholds,
    )
