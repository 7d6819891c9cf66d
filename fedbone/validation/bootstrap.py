"""Vectorised stratified percentile bootstrap for site-side metrics.

Positives and negatives are resampled separately (stratified), so every
replicate keeps the cohort's class sizes and every replicate AUC is defined. A
statistic receives all replicates at once as a matrix of patient indices (see
:data:`BatchStatistic`); the AUC of every replicate comes from per-replicate
counts over the distinct scores, so 1,000 replicates of a few thousand patients
take about a tenth of a second.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from fedbone.errors import Problem
from fedbone.validation.errors import EvaluationError
from fedbone.validation.histograms import auc_from_counts
from fedbone.validation.inputs import check_binary_inputs, check_confidence

__all__ = [
    "BatchStatistic",
    "auc_statistic",
    "bootstrap_ci",
    "bootstrap_intervals",
    "sensitivity_statistic",
    "specificity_statistic",
]

BatchStatistic = Callable[
    [npt.NDArray[np.bool_], npt.NDArray[np.float64], npt.NDArray[np.intp]],
    npt.NDArray[np.float64],
]
"""A statistic over many bootstrap replicates at once.

Called as ``statistic(positive, scores, indices)`` with the original positive
mask and scores (length N) and an index matrix of shape (replicates, N) whose row
``r`` lists the patients drawn in replicate ``r``; returns one value per row
(``nan`` where undefined).
"""

# Bound on index-matrix entries per chunk, so memory stays ~100 MB however
# many patients or replicates are asked for.
_CHUNK_ENTRIES = 2_000_000


def auc_statistic(
    positive: npt.NDArray[np.bool_],
    scores: npt.NDArray[np.float64],
    indices: npt.NDArray[np.intp],
) -> npt.NDArray[np.float64]:
    """Compute the AUC of every replicate; a :data:`BatchStatistic`.

    Replicates only reuse the original scores, so each is summarised by its
    counts per distinct score and per class, and :func:`auc_from_counts` gives
    the exact tie-aware AUC of all rows at once.

    Parameters
    ----------
    positive
        ``(N,)`` True for each patient with the finding.
    scores
        ``(N,)`` model scores; higher means more likely positive.
    indices
        ``(replicates, N)`` patients drawn in each replicate.

    Returns
    -------
    numpy.ndarray
        One AUC per replicate, ``nan`` where a replicate lacks a class.
    """
    distinct, codes = np.unique(scores, return_inverse=True)
    replicates = indices.shape[0]
    keys = codes[indices] + distinct.size * np.arange(replicates)[:, np.newaxis]
    drawn_positive = positive[indices]
    shape = (replicates, distinct.size)
    size = replicates * distinct.size
    positive_counts = np.bincount(keys[drawn_positive], minlength=size)
    negative_counts = np.bincount(keys[~drawn_positive], minlength=size)
    return auc_from_counts(
        positive_counts.reshape(shape), negative_counts.reshape(shape)
    )


def sensitivity_statistic(threshold: float) -> BatchStatistic:
    """Build the per-replicate sensitivity at ``threshold`` (score >= it)."""

    def sensitivity(
        positive: npt.NDArray[np.bool_],
        scores: npt.NDArray[np.float64],
        indices: npt.NDArray[np.intp],
    ) -> npt.NDArray[np.float64]:
        drawn_positive = positive[indices]
        called = scores[indices] >= threshold
        return _ratio((called & drawn_positive).sum(axis=1), drawn_positive.sum(axis=1))

    return sensitivity


def specificity_statistic(threshold: float) -> BatchStatistic:
    """Build the per-replicate specificity at ``threshold`` (score < it)."""

    def specificity(
        positive: npt.NDArray[np.bool_],
        scores: npt.NDArray[np.float64],
        indices: npt.NDArray[np.intp],
    ) -> npt.NDArray[np.float64]:
        drawn_negative = ~positive[indices]
        cleared = scores[indices] < threshold
        return _ratio(
            (cleared & drawn_negative).sum(axis=1), drawn_negative.sum(axis=1)
        )

    return specificity


def bootstrap_ci(
    labels: npt.ArrayLike,
    scores: npt.ArrayLike,
    statistic: BatchStatistic,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    stratified: bool = True,
) -> tuple[float, float]:
    """Compute a percentile bootstrap confidence interval of a statistic.

    Parameters
    ----------
    labels
        0/1 labels, 1 = positive.
    scores
        Finite scores.
    statistic
        A :data:`BatchStatistic`, e.g. :func:`auc_statistic` or
        ``sensitivity_statistic(0.5)``.
    n_bootstrap
        Number of replicates (at least 1).
    seed
        Seed of the resampling; the same seed gives the same interval.
    confidence
        Interval level.
    stratified
        Resample positives and negatives separately (keeps class sizes, so
        every replicate has both classes). Unstratified replicates missing a
        class give ``nan`` values, which are left out of the percentiles.

    Returns
    -------
    tuple of float
        ``(low, high)``; ``(nan, nan)`` when no replicate gives a value.
    """
    positive, checked = check_binary_inputs("bootstrap_ci", labels, {"scores": scores})
    (interval,) = bootstrap_intervals(
        "bootstrap_ci",
        positive,
        checked["scores"],
        [statistic],
        n_bootstrap=n_bootstrap,
        seed=seed,
        confidence=confidence,
        stratified=stratified,
    )
    return interval


def bootstrap_intervals(
    subject: str,
    positive: npt.NDArray[np.bool_],
    scores: npt.NDArray[np.float64],
    statistics: Sequence[BatchStatistic],
    *,
    n_bootstrap: int,
    seed: int,
    confidence: float,
    stratified: bool,
) -> list[tuple[float, float]]:
    """Compute percentile intervals of several statistics on the same replicates.

    Parameters
    ----------
    subject
        The caller's name, quoted in errors.
    positive, scores
        Validated positive mask and scores (see
        :func:`~fedbone.validation.inputs.check_binary_inputs`).
    statistics
        :data:`BatchStatistic` functions evaluated on every replicate.
    n_bootstrap, seed, confidence, stratified
        As for :func:`bootstrap_ci`.

    Returns
    -------
    list of tuple
        ``(low, high)`` per statistic, ``(nan, nan)`` where no replicate gives
        a value.
    """
    check_confidence(subject, confidence)
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int | np.integer):
        n_bootstrap = 0
    if n_bootstrap < 1:
        EvaluationError.raise_if_any(
            subject,
            [
                Problem(
                    "bad-bootstrap-count",
                    "n_bootstrap must be a positive integer number of replicates, "
                    "e.g. 1000",
                )
            ],
        )
    if scores.size == 0:
        return [(math.nan, math.nan) for _ in statistics]
    rng = np.random.default_rng(seed)
    replicates = np.empty((len(statistics), n_bootstrap))
    chunk = max(1, _CHUNK_ENTRIES // scores.size)
    for start in range(0, n_bootstrap, chunk):
        stop = min(start + chunk, n_bootstrap)
        indices = _resample(rng, positive, stop - start, stratified)
        for row, statistic in enumerate(statistics):
            replicates[row, start:stop] = statistic(positive, scores, indices)
    tail = (1.0 - confidence) / 2.0
    intervals: list[tuple[float, float]] = []
    for values in replicates:
        defined = values[np.isfinite(values)]
        if defined.size == 0:
            intervals.append((math.nan, math.nan))
            continue
        low, high = np.quantile(defined, [tail, 1.0 - tail])
        intervals.append((float(low), float(high)))
    return intervals


def _resample(
    rng: np.random.Generator,
    positive: npt.NDArray[np.bool_],
    replicates: int,
    stratified: bool,
) -> npt.NDArray[np.intp]:
    """Index matrix (replicates, N) of patients drawn with replacement."""
    if not stratified:
        return rng.integers(0, positive.size, size=(replicates, positive.size))
    blocks = []
    for members in (np.flatnonzero(positive), np.flatnonzero(~positive)):
        if members.size:
            draws = rng.integers(0, members.size, size=(replicates, members.size))
            blocks.append(members[draws])
    return np.hstack(blocks)


def _ratio(
    numerator: npt.ArrayLike, denominator: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """``numerator / denominator``, ``nan`` where the denominator is 0."""
    top = np.asarray(numerator, dtype=np.float64)
    bottom = np.asarray(denominator, dtype=np.float64)
    out = np.full(np.broadcast(top, bottom).shape, np.nan)
    np.divide(top, bottom, out=out, where=bottom != 0)
    return out
