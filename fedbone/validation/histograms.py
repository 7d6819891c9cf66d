"""Per-class score histograms: what a site sends instead of its scores.

Scores are probabilities in [0, 1], binned into ``bins`` equal-width bins;
bin ``k`` holds ``k / bins <= score < (k + 1) / bins`` and a score of exactly 1
falls in the last bin. Edges are computed as ``k / bins``, so with an even
number of bins 0.5 is an exact edge and "positive if p >= 0.5" is answered
exactly by whole bins.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fedbone.errors import Problem
from fedbone.validation.errors import EvaluationError
from fedbone.validation.inputs import check_binary_inputs

__all__ = [
    "DEFAULT_BINS",
    "MIN_BINS",
    "MIN_NOISY_BINS",
    "ScoreHistograms",
    "auc_from_counts",
    "bin_components",
    "bin_edges",
    "bin_indices",
    "pool_histograms",
    "score_histograms",
]

DEFAULT_BINS = 2000
"""Bins per histogram: pooled AUC within 1e-3 of the raw-score AUC (typically 1e-6)."""

MIN_BINS = 1000
"""Fewer bins merge too many scores into ties for the pooled AUC to be trusted."""

MIN_NOISY_BINS = 10
"""Fewest bins of a differentially private histogram (see
:mod:`fedbone.validation.private`): noise is added to every bin, so
a private histogram is coarse on purpose, and its AUC is that of the bins."""

_SUBJECT = "score histograms"


def bin_edges(bins: int) -> npt.NDArray[np.float64]:
    """Return the ``bins + 1`` edges ``k / bins`` over [0, 1]."""
    return np.arange(bins + 1, dtype=np.float64) / bins


def bin_indices(scores: npt.NDArray[np.float64], bins: int) -> npt.NDArray[np.intp]:
    """Return the bin of every score in [0, 1]; a score of 1 goes to the last bin."""
    found = np.searchsorted(bin_edges(bins), scores, side="right") - 1
    return np.minimum(found, bins - 1)


@dataclass(frozen=True, eq=False)
class ScoreHistograms:
    """Counts of positive and of negative patients per score bin.

    Parameters
    ----------
    positives, negatives
        Counts per bin (same length, at least :data:`MIN_NOISY_BINS`; exact
        histograms from :func:`score_histograms` have :data:`MIN_BINS`); stored as
        read-only int64 arrays. Add two with ``+`` to pool sites.

    Raises
    ------
    EvaluationError
        For counts that are not non-negative integers, lengths that differ, or
        too few bins.
    """

    positives: npt.NDArray[np.int64]
    negatives: npt.NDArray[np.int64]

    def __post_init__(self) -> None:
        problems: list[Problem] = []
        counts = {}
        for name in ("positives", "negatives"):
            array, problem = _counts(name, getattr(self, name))
            if problem is not None:
                problems.append(problem)
            counts[name] = array
        if not problems:
            problems.extend(_shape_problems(counts["positives"], counts["negatives"]))
        EvaluationError.raise_if_any(_SUBJECT, problems)
        for name, array in counts.items():
            array.setflags(write=False)
            object.__setattr__(self, name, array)

    @property
    def bins(self) -> int:
        """Number of bins."""
        return int(self.positives.size)

    @property
    def n_positive(self) -> int:
        """Positive patients counted."""
        return int(self.positives.sum())

    @property
    def n_negative(self) -> int:
        """Negative patients counted."""
        return int(self.negatives.sum())

    def __add__(self, other: ScoreHistograms) -> ScoreHistograms:
        """Pool two sites' histograms (same number of bins)."""
        if not isinstance(other, ScoreHistograms):
            return NotImplemented
        if other.bins != self.bins:
            EvaluationError.raise_if_any(
                _SUBJECT,
                [
                    Problem(
                        "bins-mismatch",
                        f"cannot pool histograms of {self.bins} and {other.bins} "
                        "bins; every site must bin with the same number of bins",
                    )
                ],
            )
        return ScoreHistograms(
            self.positives + other.positives, self.negatives + other.negatives
        )

    def to_dict(self) -> dict[str, list[int]]:
        """Return ``{"positives": [...], "negatives": [...]}`` (ints) for transport."""
        return {
            "positives": self.positives.tolist(),
            "negatives": self.negatives.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScoreHistograms:
        """Rebuild (and validate) histograms written by :meth:`to_dict`.

        Raises
        ------
        EvaluationError
            ``missing-key`` for an absent list, else as the constructor.
        """
        missing = [key for key in ("positives", "negatives") if key not in data]
        EvaluationError.raise_if_any(
            _SUBJECT,
            [
                Problem(
                    "missing-key",
                    f"no {key!r} list; send the dict written by "
                    "ScoreHistograms.to_dict()",
                    key,
                )
                for key in missing
            ],
        )
        return cls(data["positives"], data["negatives"])


def score_histograms(
    labels: npt.ArrayLike,
    scores: npt.ArrayLike,
    *,
    bins: int = DEFAULT_BINS,
    min_bins: int = MIN_BINS,
) -> ScoreHistograms:
    """Per-class histograms of one model's scores at one site.

    Parameters
    ----------
    labels
        0/1 labels, 1 = positive.
    scores
        Probabilities in [0, 1].
    bins
        Number of equal-width bins, at least ``min_bins``; every site and the
        server must use the same number.
    min_bins
        Fewest bins allowed: :data:`MIN_BINS` for exact histograms; a private
        histogram, which is noised afterwards, may go down to
        :data:`MIN_NOISY_BINS`.

    Returns
    -------
    ScoreHistograms
        Counts only; no score leaves with them.

    Raises
    ------
    EvaluationError
        For mismatched lengths, labels other than 0/1, scores outside [0, 1]
        or non-finite, or too few bins.
    """
    positive, checked = check_binary_inputs(
        "score_histograms", labels, {"scores": scores}, unit_interval=True
    )
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < min_bins:
        EvaluationError.raise_if_any(
            "score_histograms", [_too_few_bins(bins, min_bins)]
        )
    found = bin_indices(checked["scores"], bins)
    return ScoreHistograms(
        np.bincount(found[positive], minlength=bins),
        np.bincount(found[~positive], minlength=bins),
    )


def pool_histograms(histograms: Sequence[ScoreHistograms]) -> ScoreHistograms:
    """Add the histograms of every site.

    Raises
    ------
    EvaluationError
        ``no-histograms`` for an empty sequence, ``bins-mismatch`` for
        histograms binned differently.
    """
    if not histograms:
        EvaluationError.raise_if_any(
            _SUBJECT,
            [
                Problem(
                    "no-histograms",
                    "no site histograms to pool; pass at least one site's "
                    "score_histograms()",
                )
            ],
        )
    return functools.reduce(operator.add, histograms)


def auc_from_counts(
    positive_counts: npt.ArrayLike, negative_counts: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """Exact AUC of scores grouped into ordered bins, along the last axis.

    Bin ``k`` holds scores lower than those of bin ``k + 1``; a positive and a
    negative in the same bin count as a tie (1/2). With one bin per distinct
    score this is the AUC of the raw scores.

    Parameters
    ----------
    positive_counts, negative_counts
        Counts per bin (same shape; leading axes are independent samples).

    Returns
    -------
    numpy.ndarray
        One AUC per leading index (a 0-d array for 1-D input); ``nan`` where a
        class is absent.
    """
    positives = np.asarray(positive_counts, dtype=np.float64)
    negatives = np.asarray(negative_counts, dtype=np.float64)
    negatives_below = np.cumsum(negatives, axis=-1) - negatives
    wins = np.sum(positives * (negatives_below + 0.5 * negatives), axis=-1)
    pairs = positives.sum(axis=-1) * negatives.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, wins / pairs, np.nan)


def bin_components(
    pooled: ScoreHistograms,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """DeLong structural components of a patient in each bin.

    Returns
    -------
    tuple of numpy.ndarray
        Per bin, ``V10`` of a positive (the fraction of negatives it outranks)
        and ``V01`` of a negative (the fraction of positives that outrank it),
        same-bin pairs counting 1/2; ``nan`` when the other class is absent.
    """
    positives = pooled.positives.astype(np.float64)
    negatives = pooled.negatives.astype(np.float64)
    negatives_below = np.cumsum(negatives) - negatives
    positives_above = positives.sum() - np.cumsum(positives)
    with np.errstate(invalid="ignore", divide="ignore"):
        v10 = (negatives_below + 0.5 * negatives) / negatives.sum()
        v01 = (positives_above + 0.5 * positives) / positives.sum()
    return v10, v01


def _too_few_bins(bins: object, minimum: int = MIN_BINS) -> Problem:
    return Problem(
        "too-few-bins",
        f"{bins!r} bins; use an integer of at least {minimum} (default "
        f"{DEFAULT_BINS}) so binning barely changes the AUC",
    )


def _counts(name: str, values: object) -> tuple[npt.NDArray[np.int64], Problem | None]:
    """Convert counts to int64 if they are non-negative whole numbers."""
    empty = np.zeros(0, dtype=np.int64)
    bad = Problem(
        "bad-counts",
        "counts must be a 1-D sequence of non-negative integers, one per bin",
        name,
    )
    try:
        array = np.asarray(values)
        numbers = array.astype(np.float64)
    except (TypeError, ValueError):
        return empty, bad
    if array.dtype.kind not in "iuf" or array.ndim != 1:
        return empty, bad
    if not (np.isfinite(numbers).all() and (numbers >= 0).all()):
        return empty, bad
    if (numbers != np.round(numbers)).any():
        return empty, bad
    return array.astype(np.int64), None


def _shape_problems(
    positives: npt.NDArray[np.int64], negatives: npt.NDArray[np.int64]
) -> list[Problem]:
    if positives.size != negatives.size:
        return [
            Problem(
                "bins-mismatch",
                f"{positives.size} positive bins but {negatives.size} negative "
                "bins; both classes must use the same bins",
            )
        ]
    if positives.size < MIN_NOISY_BINS:
        return [_too_few_bins(positives.size, MIN_NOISY_BINS)]
    return []
