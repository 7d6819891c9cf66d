"""Site-side binary metrics: AUC, sensitivity and specificity with 95% CIs.

Every site scores its own test patients and computes these locally; raw scores
never leave the site. The operating point is the paper's: positive if
``p >= threshold`` (0.5). Intervals come from the stratified percentile
bootstrap of :mod:`fedbone.validation.bootstrap` (1,000 replicates) and, for the
AUC, also from DeLong's variance.

Undefined metrics are ``nan``, never an error: with no positives the AUC and the
sensitivity are ``nan``; with no negatives the AUC and the specificity are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fedbone.validation.bootstrap import (
    auc_statistic,
    bootstrap_ci,
    bootstrap_intervals,
    sensitivity_statistic,
    specificity_statistic,
)
from fedbone.validation.delong import delong_ci
from fedbone.validation.estimate import Estimate
from fedbone.validation.inputs import check_binary_inputs, check_threshold

__all__ = [
    "BinaryMetrics",
    "Estimate",
    "binary_metrics",
    "bootstrap_ci",
    "roc_auc",
]


# transport key -> BinaryMetrics field
_ESTIMATE_KEYS = {
    "auc": "auc",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "auc-delong": "auc_delong",
}


@dataclass(frozen=True)
class BinaryMetrics:
    """A model's performance on one cohort at one operating point.

    Parameters
    ----------
    n, n_positive, n_negative
        Patients in total and per class.
    auc
        AUC with its stratified-bootstrap percentile interval.
    sensitivity, specificity
        At ``threshold`` (positive if score >= threshold), with bootstrap
        intervals.
    threshold
        The operating point.
    auc_delong
        AUC with its DeLong interval (Wald, clipped to [0, 1]).
    """

    n: int
    n_positive: int
    n_negative: int
    auc: Estimate
    sensitivity: Estimate
    specificity: Estimate
    threshold: float
    auc_delong: Estimate

    def to_dict(self) -> dict[str, int | float]:
        """Return flat kebab-case scalars, ready for one Flower ``MetricRecord``.

        Keys: ``n``, ``n-pos``, ``n-neg``, ``threshold`` and, for each of
        ``auc``, ``sensitivity``, ``specificity`` and ``auc-delong``, the value
        and its ``-low`` and ``-high`` bounds.
        """
        flat: dict[str, int | float] = {
            "n": self.n,
            "n-pos": self.n_positive,
            "n-neg": self.n_negative,
            "threshold": self.threshold,
        }
        for key, field in _ESTIMATE_KEYS.items():
            estimate: Estimate = getattr(self, field)
            flat[key] = estimate.value
            flat[f"{key}-low"] = estimate.low
            flat[f"{key}-high"] = estimate.high
        return flat

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BinaryMetrics:
        """Rebuild metrics written by :meth:`to_dict`."""
        estimates = {
            field: Estimate(
                float(data[key]), float(data[f"{key}-low"]), float(data[f"{key}-high"])
            )
            for key, field in _ESTIMATE_KEYS.items()
        }
        return cls(
            n=int(data["n"]),
            n_positive=int(data["n-pos"]),
            n_negative=int(data["n-neg"]),
            threshold=float(data["threshold"]),
            **estimates,
        )


def binary_metrics(
    labels: npt.ArrayLike,
    scores: npt.ArrayLike,
    *,
    threshold: float = 0.5,
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> BinaryMetrics:
    """Compute AUC, sensitivity and specificity with confidence intervals.

    The three bootstrap intervals share the same replicates (the same as
    :func:`bootstrap_ci` draws with this ``seed``).

    Parameters
    ----------
    labels
        0/1 labels, 1 = positive.
    scores
        Finite scores, e.g. probabilities of the positive class.
    threshold
        Operating point: a patient is called positive if score >= threshold.
    n_bootstrap
        Stratified bootstrap replicates.
    seed
        Seed of the bootstrap; the same seed gives the same intervals.
    confidence
        Interval level.

    Returns
    -------
    BinaryMetrics
        With ``nan`` for metrics that need an absent class.

    Raises
    ------
    EvaluationError
        For mismatched lengths, labels other than 0/1, non-finite scores, a
        non-finite threshold, or bad bootstrap settings.
    """
    positive, checked = check_binary_inputs(
        "binary_metrics", labels, {"scores": scores}
    )
    check_threshold("binary_metrics", threshold)
    values = checked["scores"]
    statistics = [
        auc_statistic,
        sensitivity_statistic(threshold),
        specificity_statistic(threshold),
    ]
    intervals = bootstrap_intervals(
        "binary_metrics",
        positive,
        values,
        statistics,
        n_bootstrap=n_bootstrap,
        seed=seed,
        confidence=confidence,
        stratified=True,
    )
    everyone = np.arange(values.size)[np.newaxis, :]
    points = [
        float(statistic(positive, values, everyone)[0]) for statistic in statistics
    ]
    auc, sensitivity, specificity = (
        Estimate(point, low, high)
        for point, (low, high) in zip(points, intervals, strict=True)
    )
    n_positive = int(positive.sum())
    return BinaryMetrics(
        n=int(values.size),
        n_positive=n_positive,
        n_negative=int(values.size) - n_positive,
        auc=auc,
        sensitivity=sensitivity,
        specificity=specificity,
        threshold=float(threshold),
        auc_delong=delong_ci(positive, values, confidence),
    )


def roc_auc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Compute the area under the ROC curve (Mann-Whitney), ties counting 1/2.

    Parameters
    ----------
    labels
        0/1 labels, 1 = positive.
    scores
        Finite scores; higher means more likely positive.

    Returns
    -------
    float
        The AUC; ``nan`` when either class is absent.
    """
    positive, checked = check_binary_inputs("roc_auc", labels, {"scores": scores})
    values = checked["scores"]
    everyone = np.arange(values.size)[np.newaxis, :]
    return float(auc_statistic(positive, values, everyone)[0])
