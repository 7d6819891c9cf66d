"""Fidelity a reader can judge: synthetic vs real, next to real vs real.

An FD of 0.8 means nothing on its own: its scale depends on the feature
encoder, the image size and the number of images. So each figure here comes
with its floor, measured the same way: the distance between two *real* sets of
the same site -- its training scans and its held-out scans -- in the same
encoder, with the same number of images on each side. A generator whose FD to
the held-out scans is close to that floor draws images the encoder cannot tell
from another real sample.

Figures are computed per class of the study task (``neg`` and ``pos``: for
``bm`` the class is ``class_id // 2``, for ``ca`` ``class_id % 2``) and over
both (``all``). A class with fewer than four images on a side gets NaN:
precision/recall with k = 3 needs four rows, and fewer would give a figure no
reader should trust.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from fedbone.errors import Problem
from fedbone.generative.audit.similarity import FeatureFn
from fedbone.generative.fidelity.distances import (
    frechet_distance,
    kernel_inception_distance,
    precision_recall,
)
from fedbone.validation.errors import EvaluationError

__all__ = [
    "CLASS_GROUPS",
    "GROUPS",
    "GROUP_LABELS",
    "MEASURES",
    "MIN_IMAGES",
    "SOURCES",
    "ClassFidelity",
    "FidelityFigures",
    "FidelityReference",
    "LabelledImages",
    "fidelity_reference",
    "group_rows",
    "metric_key",
    "task_positive",
]

logger = logging.getLogger(__name__)

#: The two classes of the study task: negatives and positives.
CLASS_GROUPS = ("neg", "pos")
#: Class groups reported: each class, and both together.
GROUPS = (*CLASS_GROUPS, "all")
#: How a reader sees each group.
GROUP_LABELS = {"neg": "negative", "pos": "positive", "all": "all"}
#: What the held-out scans are compared with: the generator, or real scans.
SOURCES = ("synthetic", "real")
#: The figures of each comparison.
MEASURES = ("fd", "kid", "precision", "recall")
#: Images a side needs for any figure (precision/recall use k = 3 neighbours).
MIN_IMAGES = 4

_NEIGHBOURS = MIN_IMAGES - 1
_TASKS = ("bm", "ca")


def metric_key(measure: str, source: str, group: str) -> str:
    """Return the flat metric key, e.g. ``fd-synthetic-pos``.

    Parameters
    ----------
    measure
        One of :data:`MEASURES`.
    source
        One of :data:`SOURCES`.
    group
        One of :data:`GROUPS`.
    """
    return f"{measure}-{source}-{group}"


def task_positive(class_ids: np.ndarray, task: str) -> np.ndarray:
    """Return whether each conditioning class is positive for ``task``.

    Raises
    ------
    EvaluationError
        ``unknown-task`` for a task other than ``bm`` or ``ca``.
    """
    if task not in _TASKS:
        raise EvaluationError(
            "fidelity reference",
            [Problem("unknown-task", f"{task!r}; use one of {_TASKS}", "task")],
        )
    ids = np.asarray(class_ids, dtype=np.int64)
    return (ids // 2 if task == "bm" else ids % 2) == 1


def group_rows(class_ids: np.ndarray, task: str, group: str) -> np.ndarray:
    """Return the positions of ``class_ids`` in ``group`` (``neg``/``pos``/``all``).

    Parameters
    ----------
    class_ids
        ``(N,)`` conditioning classes ``2 * bm + ca``.
    task
        ``bm`` or ``ca``.
    group
        One of :data:`GROUPS`.
    """
    positive = task_positive(class_ids, task)
    if group == "all":
        return np.arange(len(positive))
    return np.flatnonzero(positive if group == "pos" else ~positive)


@dataclass(frozen=True)
class LabelledImages:
    """Images on one canvas with their conditioning class ``2 * bm + ca``."""

    images: np.ndarray
    class_ids: np.ndarray

    def __post_init__(self) -> None:
        if self.images.ndim != 3 or len(self.images) != len(self.class_ids):
            raise EvaluationError(
                "labelled images",
                [
                    Problem(
                        "images-labels-mismatch",
                        f"images {self.images.shape} with {len(self.class_ids)} "
                        "class ids; pass (N, H, W) images and one class id each",
                    )
                ],
            )

    def take(self, rows: np.ndarray) -> LabelledImages:
        """Return the images at ``rows``."""
        return LabelledImages(
            np.asarray(self.images[rows], dtype=np.float32), self.class_ids[rows]
        )


@dataclass(frozen=True)
class FidelityFigures:
    """One comparison with the held-out scans: FD, KID, precision and recall.

    Parameters
    ----------
    fd, kid, precision, recall
        The figures; NaN when a side had fewer than :data:`MIN_IMAGES`.
    n_held_out, n_other
        Images on each side (site-local; never sent).
    """

    fd: float
    kid: float
    precision: float
    recall: float
    n_held_out: int
    n_other: int

    def value(self, measure: str) -> float:
        """Return the figure named ``measure`` (one of :data:`MEASURES`)."""
        return float(getattr(self, measure))


@dataclass(frozen=True)
class ClassFidelity:
    """Synthetic vs held-out real, and real vs held-out real, for one group."""

    group: str
    synthetic: FidelityFigures
    real: FidelityFigures

    def of(self, source: str) -> FidelityFigures:
        """Return the figures of ``source`` (``synthetic`` or ``real``)."""
        return self.synthetic if source == "synthetic" else self.real


@dataclass(frozen=True)
class FidelityReference:
    """Per-class fidelity of the selected generator next to real vs real."""

    task: str
    classes: tuple[ClassFidelity, ...]

    def to_metrics(self, sources: tuple[str, ...] = SOURCES) -> dict[str, float]:
        """Return flat scalars such as ``fd-synthetic-pos`` and ``kid-real-all``.

        Parameters
        ----------
        sources
            Which comparisons to include; under DP a site leaves out ``real``
            (its training scans are outside the DP accountant).
        """
        return {
            metric_key(measure, source, item.group): item.of(source).value(measure)
            for item in self.classes
            for source in sources
            for measure in MEASURES
        }


def fidelity_reference(
    training: LabelledImages,
    held_out: LabelledImages,
    synthetic: LabelledImages,
    *,
    embed: FeatureFn,
    task: str,
    seed: int,
) -> FidelityReference:
    """Compare synthetic and training images with the held-out scans, per class.

    For each class group the held-out scans are compared (a) with the
    synthetic images of that group and (b) with the training scans of that
    group. For (b) the larger side is subsampled (seeded) to the smaller, so
    both real sets hold the same number of images; ``all`` joins the per-class
    subsamples, so its class mix is the held-out one.

    Parameters
    ----------
    training
        The site's training scans (only the subsampled ones are embedded).
    held_out
        The site's held-out (val and test) scans.
    synthetic
        Images of the selected generator; generate them with the held-out
        class ids so both sides have the same class mix.
    embed
        The site's feature encoder, ``(N, H, W)`` images -> ``(N, D)``.
    task
        ``bm`` or ``ca``: which label splits the classes.
    seed
        Seeds the subsamples and the KID subsets.

    Returns
    -------
    FidelityReference
        One :class:`ClassFidelity` per group of :data:`GROUPS`.
    """
    rng = np.random.default_rng(seed)
    pairs = {
        group: _matched_rows(
            group_rows(held_out.class_ids, task, group),
            group_rows(training.class_ids, task, group),
            rng,
        )
        for group in CLASS_GROUPS
    }
    pairs["all"] = (
        np.concatenate([pairs[group][0] for group in CLASS_GROUPS]),
        np.concatenate([pairs[group][1] for group in CLASS_GROUPS]),
    )
    held_features = _embed(embed, held_out.images)
    synthetic_features = _embed(embed, synthetic.images)
    train_positions = np.unique(pairs["all"][1])
    train_features = _embed(embed, training.take(train_positions).images)
    classes = []
    for group in GROUPS:
        held_rows, train_rows = pairs[group]
        real = _compare(
            held_features[held_rows],
            train_features[np.searchsorted(train_positions, train_rows)],
            seed,
            f"real vs real, {task} {group}",
        )
        fake = _compare(
            held_features[group_rows(held_out.class_ids, task, group)],
            synthetic_features[group_rows(synthetic.class_ids, task, group)],
            seed,
            f"synthetic vs real, {task} {group}",
        )
        classes.append(ClassFidelity(group, synthetic=fake, real=real))
    return FidelityReference(task, tuple(classes))


def _matched_rows(
    held: np.ndarray, train: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Subsample the larger of two row sets to the size of the smaller."""
    size = min(len(held), len(train))
    return (
        np.sort(rng.choice(held, size, replace=False)),
        np.sort(rng.choice(train, size, replace=False)),
    )


def _embed(embed: FeatureFn, images: np.ndarray) -> np.ndarray:
    if not len(images):
        return np.empty((0, 0))
    features = np.asarray(embed(images), dtype=np.float64)
    return features.reshape(len(features), -1)


def _compare(
    held: np.ndarray, other: np.ndarray, seed: int, what: str
) -> FidelityFigures:
    counts = {"n_held_out": len(held), "n_other": len(other)}
    if min(len(held), len(other)) < MIN_IMAGES:
        logger.warning(
            "fidelity %s: %d held-out and %d other images, fewer than %d; "
            "reported as NaN",
            what,
            len(held),
            len(other),
            MIN_IMAGES,
        )
        return _missing(**counts)
    try:
        pr = precision_recall(held, other, k=_NEIGHBOURS)
        return FidelityFigures(
            fd=frechet_distance(held, other),
            kid=kernel_inception_distance(held, other, seed=seed)[0],
            precision=pr.precision,
            recall=pr.recall,
            **counts,
        )
    except EvaluationError as error:
        logger.warning("fidelity %s not computed, reported as NaN: %s", what, error)
        return _missing(**counts)


def _missing(*, n_held_out: int, n_other: int) -> FidelityFigures:
    nan = math.nan
    return FidelityFigures(nan, nan, nan, nan, n_held_out, n_other)
