"""Federated pooled ROC curve and AUC from per-site score histograms.

No per-patient score leaves a site. Each site bins its scores into per-class
histograms over [0, 1] (:func:`score_histograms`); the server adds them up and
computes the pooled ROC curve, the AUC of the binned scores (pairs in the same
bin count 1/2) and a DeLong interval (:func:`pooled_roc`). With 2,000 bins the
pooled AUC differs from the AUC of the concatenated raw scores by well under
1e-3.

The DeLong variance follows exactly from bin counts: every positive in bin
``k`` has the structural component
``V10_k = (negatives in bins < k + 1/2 negatives in bin k) / n`` and every
negative ``V01_k = (positives in bins > k + 1/2 positives in bin k) / m``, so
``S10`` and ``S01`` are count-weighted sums over bins.

This module is also the one-stop import for the federated statistics: it
re-exports the histograms and the federated paired DeLong test
(:mod:`fedbone.validation.pooled_delong`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fedbone.errors import Problem
from fedbone.validation.delong import auc_normal_ci
from fedbone.validation.errors import EvaluationError
from fedbone.validation.estimate import Estimate
from fedbone.validation.histograms import (
    DEFAULT_BINS,
    ScoreHistograms,
    auc_from_counts,
    bin_components,
    bin_edges,
    pool_histograms,
    score_histograms,
)
from fedbone.validation.inputs import check_confidence
from fedbone.validation.pooled_delong import (
    PairedComponentSums,
    paired_component_sums,
    pooled_paired_test,
)

__all__ = [
    "DEFAULT_BINS",
    "PairedComponentSums",
    "PooledROC",
    "ScoreHistograms",
    "paired_component_sums",
    "pooled_paired_test",
    "pooled_roc",
    "score_histograms",
]


@dataclass(frozen=True, eq=False)
class PooledROC:
    """ROC curve and AUC of all sites' patients, from pooled histograms.

    Parameters
    ----------
    fpr, tpr
        The curve, from (0, 0) to (1, 1); one point per occupied bin.
    thresholds
        ``thresholds[i]`` gives point ``i`` (positive if score >= threshold);
        the first is ``inf`` (nobody called positive).
    auc
        Exact AUC of the binned scores (same-bin pairs count 1/2).
    auc_ci
        AUC with its DeLong interval computed from the bin counts.
    n_positive, n_negative
        Patients per class over all sites.
    threshold
        Operating point of ``sensitivity_at`` and ``specificity_at``.
    sensitivity_at, specificity_at
        Pooled sensitivity and specificity at ``threshold``.
    """

    fpr: npt.NDArray[np.float64]
    tpr: npt.NDArray[np.float64]
    thresholds: npt.NDArray[np.float64]
    auc: float
    auc_ci: Estimate
    n_positive: int
    n_negative: int
    threshold: float
    sensitivity_at: float
    specificity_at: float

    def to_dict(self) -> dict[str, Any]:
        """Return plain lists and floats for the report (first threshold ``inf``)."""
        return {
            "fpr": self.fpr.tolist(),
            "tpr": self.tpr.tolist(),
            "thresholds": self.thresholds.tolist(),
            "auc": self.auc,
            "auc-ci": self.auc_ci.to_dict(),
            "n-positive": self.n_positive,
            "n-negative": self.n_negative,
            "threshold": self.threshold,
            "sensitivity-at": self.sensitivity_at,
            "specificity-at": self.specificity_at,
        }


def pooled_roc(
    histograms: Sequence[ScoreHistograms],
    *,
    threshold: float = 0.5,
    confidence: float = 0.95,
) -> PooledROC:
    """Compute the pooled ROC curve, AUC, DeLong interval, operating point (server).

    Parameters
    ----------
    histograms
        One model's :func:`score_histograms` from every site (same bins).
    threshold
        Operating point; must be a bin edge ``k / bins`` below 1 (0.5 is one
        for any even number of bins).
    confidence
        Level of the AUC interval.

    Returns
    -------
    PooledROC
        ``nan`` where a class is absent (and the interval below 2 per class).

    Raises
    ------
    EvaluationError
        For no histograms, histograms binned differently, or a threshold that
        is not a bin edge.
    """
    check_confidence("pooled_roc", confidence)
    pooled = pool_histograms(histograms)
    edge = _threshold_bin(threshold, pooled.bins)
    positives = pooled.positives.astype(np.float64)
    negatives = pooled.negatives.astype(np.float64)
    m, n = pooled.n_positive, pooled.n_negative
    auc = float(auc_from_counts(positives, negatives))
    v10, v01 = bin_components(pooled)
    variance = math.nan
    if m >= 2 and n >= 2:
        s10 = positives @ (v10 - auc) ** 2 / (m - 1)
        s01 = negatives @ (v01 - auc) ** 2 / (n - 1)
        variance = float(s10 / m + s01 / n)
    at_or_above_positive = np.cumsum(positives[::-1])[::-1]
    at_or_above_negative = np.cumsum(negatives[::-1])[::-1]
    occupied = np.flatnonzero(pooled.positives + pooled.negatives)[::-1]
    return PooledROC(
        fpr=np.concatenate([[0.0], _ratio(at_or_above_negative[occupied], n)]),
        tpr=np.concatenate([[0.0], _ratio(at_or_above_positive[occupied], m)]),
        thresholds=np.concatenate([[np.inf], bin_edges(pooled.bins)[occupied]]),
        auc=auc,
        auc_ci=auc_normal_ci(auc, variance, confidence),
        n_positive=m,
        n_negative=n,
        threshold=float(threshold),
        sensitivity_at=float(_ratio(at_or_above_positive[edge], m)),
        specificity_at=float(_ratio(negatives[:edge].sum(), n)),
    )


def _threshold_bin(threshold: float, bins: int) -> int:
    """Find the bin whose lower edge is ``threshold``."""
    edge = round(threshold * bins) if math.isfinite(threshold) else -1
    if not (0 <= edge < bins and bin_edges(bins)[edge] == threshold):
        problem = Problem(
            "threshold-not-on-bin-edge",
            f"threshold {threshold!r} is not a bin edge k/{bins} in [0, 1); pick "
            "a threshold on an edge (0.5 with an even number of bins) so "
            "sensitivity and specificity are exact",
        )
        raise EvaluationError("pooled_roc", [problem])
    return edge


def _ratio(numerator: npt.ArrayLike, denominator: float) -> npt.NDArray[np.float64]:
    """``numerator / denominator``, ``nan`` when the denominator is 0."""
    top = np.asarray(numerator, dtype=np.float64)
    if denominator == 0:
        return np.full(top.shape, np.nan)
    return top / denominator
