"""Synthesis in batches until each class has its quota of released images.

What :func:`fedbone.generative.synthesis.synthesize` repeats: generate the
images each short class still needs, curate them with the site's classifier
of the study task, audit the kept ones with a
:class:`~fedbone.generative.audit.similarity.SiteAuditor` and take released
images until each class has ``n_per_class``. The first batch makes
``n_per_class`` per class; a later one as many as the class's yield so far
says it needs (at most ``n_per_class``), from a seed derived from
``spec.seed`` and the batch number, so the same seed gives the same result.
Everything here stays at the site.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fedbone.classifier.errors import TrainingError
from fedbone.errors import Problem
from fedbone.generative.audit.similarity import AuditResult, SiteAuditor

__all__ = [
    "ClassQuota",
    "ImageGenerator",
    "SynthesisBatch",
    "SynthesisSpec",
    "fill_quotas",
    "warn_shortfalls",
]

logger = logging.getLogger(__name__)

_TASKS = ("bm", "ca")
_N_CLASSES = 4


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
        Images wanted per class after curation and audit.
    classes
        Conditioning classes ``2 * bm + ca`` to generate.
    curate_task
        ``bm`` or ``ca``: the study task whose classifier curates.
    truncation
        Truncation of the generator's style, in (0, 1] (1: none).
    seed
        Seed of the latents; batch ``k > 0`` uses a seed derived from it.
    max_attempts
        Batches at most; at most ``max_attempts * n_per_class`` images of a
        class are generated.
    """

    n_per_class: int
    classes: tuple[int, ...] = (0, 1, 2, 3)
    curate_task: str = "bm"
    truncation: float = 1.0
    seed: int = 0
    max_attempts: int = 8

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
        if self.max_attempts < 1:
            problems.append(
                Problem(
                    "bad-max-attempts",
                    f"is {self.max_attempts}; use >= 1 (batches per class at most)",
                    "max_attempts",
                )
            )
        TrainingError.raise_if_any("SynthesisSpec", problems)


@dataclass
class ClassQuota:
    """One class's progress towards ``n_per_class`` released images.

    Attributes
    ----------
    generated, kept
        Images of the class generated, and kept by curation, so far.
    passed
        Kept images the audit released, over the quota or not.
    taken
        Released images within the quota (at most ``n_per_class``).
    """

    generated: int = 0
    kept: int = 0
    passed: int = 0
    taken: int = 0

    def next_batch(self, n_per_class: int) -> int:
        """Images to generate next: the need scaled by the yield so far."""
        need = n_per_class - self.taken
        if need <= 0:
            return 0
        if self.generated == 0:
            return need
        if self.passed == 0:
            return n_per_class
        return min(n_per_class, math.ceil(need * self.generated / self.passed))

    def agreement(self) -> float:
        """Fraction of generated images curation kept (``nan`` before any)."""
        return self.kept / self.generated if self.generated else math.nan


@dataclass(frozen=True)
class SynthesisBatch:
    """One batch's curated images, their audit and which of them are taken.

    Attributes
    ----------
    images, labels
        The images curation kept and their classes, in generation order.
    audit
        Their audit; ``None`` when curation kept none.
    taken
        Per kept image: released by the audit and within its class's quota.
    """

    images: np.ndarray
    labels: np.ndarray
    audit: AuditResult | None
    taken: np.ndarray


def fill_quotas(
    trainer: ImageGenerator,
    spec: SynthesisSpec,
    classify: Callable[[np.ndarray], np.ndarray],
    auditor: SiteAuditor,
) -> tuple[dict[int, ClassQuota], list[SynthesisBatch]]:
    """Generate, curate and audit batches until every quota is full or tried.

    Parameters
    ----------
    trainer
        The generator.
    spec
        Classes, quota, curation task, truncation, seed and attempts.
    classify
        ``(N, H, W) -> (N,)`` probability that each image is positive for
        ``spec.curate_task``.
    auditor
        Audits each batch's kept images against the site's training scans.

    Returns
    -------
    tuple
        Each class's :class:`ClassQuota` and every :class:`SynthesisBatch`,
        in order.

    Raises
    ------
    TrainingError
        When ``classify`` returns the wrong number of scores or non-finite ones.
    """
    quotas = {c: ClassQuota() for c in spec.classes}
    batches: list[SynthesisBatch] = []
    for attempt in range(spec.max_attempts):
        sizes = {c: q.next_batch(spec.n_per_class) for c, q in quotas.items()}
        sizes = {c: n for c, n in sizes.items() if n > 0}
        if not sizes:
            break
        labels = np.repeat(
            np.asarray(list(sizes), dtype=np.int64), list(sizes.values())
        )
        generated = np.asarray(
            trainer.generate(
                labels,
                seed=_attempt_seed(spec.seed, attempt),
                truncation=spec.truncation,
            ),
            dtype=np.float32,
        )
        batch = _audit_batch(generated, labels, spec, classify, auditor, quotas)
        batches.append(batch)
        _log_progress(attempt, spec, sizes, batch, quotas)
    return quotas, batches


def _attempt_seed(seed: int, attempt: int) -> int:
    """Seed of batch ``attempt``: ``seed`` itself first, then derived ones."""
    if attempt == 0:
        return seed
    entropy = [seed % 2**63, attempt]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def _audit_batch(
    generated: np.ndarray,
    labels: np.ndarray,
    spec: SynthesisSpec,
    classify: Callable[[np.ndarray], np.ndarray],
    auditor: SiteAuditor,
    quotas: Mapping[int, ClassQuota],
) -> SynthesisBatch:
    """Curate and audit one batch; take released images up to each quota."""
    kept = _curate(generated, labels, spec.curate_task, classify)
    kept_labels = labels[kept]
    for c, quota in quotas.items():
        quota.generated += int((labels == c).sum())
        quota.kept += int((kept_labels == c).sum())
    if not kept.any():
        return SynthesisBatch(
            generated[kept], kept_labels, None, np.zeros(0, dtype=bool)
        )
    audit = auditor.audit(generated[kept])
    taken = _take_quota(kept_labels, audit.released, quotas, spec.n_per_class)
    return SynthesisBatch(generated[kept], kept_labels, audit, taken)


def _take_quota(
    labels: np.ndarray,
    released: np.ndarray,
    quotas: Mapping[int, ClassQuota],
    n_per_class: int,
) -> np.ndarray:
    """Mark released images in batch order until each class's quota is full."""
    taken = np.zeros(labels.size, dtype=bool)
    for c, quota in quotas.items():
        passed = np.flatnonzero(released & (labels == c))
        room = n_per_class - quota.taken
        taken[passed[:room]] = True
        quota.passed += passed.size
        quota.taken += min(passed.size, room)
    return taken


def warn_shortfalls(
    spec: SynthesisSpec, quotas: Mapping[int, ClassQuota], curation_val_auc: float
) -> None:
    """Warn about every class curation and the audit did not fill.

    Parameters
    ----------
    spec
        The quota (``n_per_class``) and the attempts made.
    quotas
        Each class's progress after the last batch.
    curation_val_auc
        Validation AUC of the curation classifier, quoted in the warning.
    """
    for c, quota in quotas.items():
        short = spec.n_per_class - quota.taken
        if short <= 0:
            continue
        logger.warning(
            "synthesis: class %d is %d short of its %d images after %d batches "
            "(%d generated, curation agreed with %.0f%%, %d passed the audit; "
            "curation classifier validation AUC %.3f): raise "
            "synthesis.max_attempts or check the generator and the curation "
            "classifier on this class",
            c,
            short,
            spec.n_per_class,
            spec.max_attempts,
            quota.generated,
            100 * quota.agreement(),
            quota.passed,
            curation_val_auc,
        )


def _log_progress(
    attempt: int,
    spec: SynthesisSpec,
    sizes: Mapping[int, int],
    batch: SynthesisBatch,
    quotas: Mapping[int, ClassQuota],
) -> None:
    """Say, per class of this batch, how far its quota is filled."""
    audit = batch.audit
    passed = audit.released if audit is not None else np.zeros(0, dtype=bool)
    for c, generated in sizes.items():
        mine = batch.labels == c
        logger.info(
            "synthesis batch %d/%d, class %d: %d generated, %d kept by curation, "
            "%d passed the audit; %d/%d released so far",
            attempt + 1,
            spec.max_attempts,
            c,
            generated,
            int(mine.sum()),
            int((passed & mine).sum()),
            quotas[c].taken,
            spec.n_per_class,
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
