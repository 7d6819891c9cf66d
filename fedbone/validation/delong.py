"""DeLong variance, confidence interval and paired test of the AUC (raw scores).

These run **at a site**, on its own patients' scores. The algorithm is the fast
midrank form of DeLong, DeLong & Clarke-Pearson (1988) by Sun & Xu (2014),
O(n log n): with ``m`` positives ``x`` and ``n`` negatives ``y``,

* the structural component of positive ``i`` is ``V10_i = (Tz_i - Tx_i) / n``,
  the fraction of negatives it outranks (ties count 1/2);
* that of negative ``j`` is ``V01_j = 1 - (Tz_j - Ty_j) / m``, the fraction of
  positives that outrank it;

where ``Tx``, ``Ty`` and ``Tz`` are midranks within the positives, within the
negatives and within both. The AUC is the mean of either set of components and

``var(AUC) = S10 / m + S01 / n``

with ``S10``, ``S01`` the sample variances (or, for two models on the same
patients, 2x2 covariance matrices) of the components.

Intervals are Wald intervals on the AUC scale, clipped to [0, 1], like pROC's
DeLong interval. The logit scale was not used: it has no interval at an AUC of
exactly 1, and the plain scale matches what readers of the paper's DeLong figures
expect.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

from fedbone.validation.estimate import Estimate
from fedbone.validation.inputs import check_binary_inputs, check_confidence

__all__ = [
    "PairedComparison",
    "auc_normal_ci",
    "delong_auc_variance",
    "delong_ci",
    "delong_paired_test",
]

Components = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]


@dataclass(frozen=True)
class PairedComparison:
    """DeLong comparison of two correlated AUCs (two models, same patients).

    Parameters
    ----------
    auc_a, auc_b
        The AUC of model A and of model B.
    difference
        ``auc_a - auc_b``.
    se
        Standard error of the difference.
    z
        ``difference / se``; 0 when both are 0, +-inf when only ``se`` is 0.
    p_value
        Two-sided p-value of H0: equal AUCs.
    ci_low, ci_high
        Wald confidence interval of the difference (95% unless stated).
    """

    auc_a: float
    auc_b: float
    difference: float
    se: float
    z: float
    p_value: float
    ci_low: float
    ci_high: float

    @classmethod
    def from_variance(
        cls, auc_a: float, auc_b: float, variance: float, confidence: float = 0.95
    ) -> PairedComparison:
        """Build the two-sided z-test from the AUCs and ``var(auc_a - auc_b)``.

        A ``nan`` variance (a class absent or with a single patient) gives
        ``nan`` for ``se``, ``z``, the p-value and the interval.

        Parameters
        ----------
        auc_a, auc_b
            AUCs of the two models on the same patients.
        variance
            Variance of ``auc_a - auc_b`` (DeLong); may be ``nan``.
        confidence
            Level of the Wald interval of the difference, strictly between 0
            and 1.
        """
        difference = auc_a - auc_b
        if not (math.isfinite(variance) and math.isfinite(difference)):
            nan = math.nan
            return cls(auc_a, auc_b, difference, nan, nan, nan, nan, nan)
        # Rounding can leave a tiny negative variance for identical models.
        se = math.sqrt(max(variance, 0.0))
        if se > 0.0:
            z = difference / se
        else:
            z = 0.0 if difference == 0.0 else math.copysign(math.inf, difference)
        p_value = float(2.0 * stats.norm.sf(abs(z)))
        half_width = _critical_value(confidence) * se
        return cls(
            auc_a,
            auc_b,
            difference,
            se,
            z,
            p_value,
            difference - half_width,
            difference + half_width,
        )


def delong_auc_variance(
    labels: npt.ArrayLike, scores: npt.ArrayLike
) -> tuple[float, float]:
    """AUC and its DeLong variance, by the fast midrank algorithm.

    Parameters
    ----------
    labels
        0/1 labels, 1 = positive.
    scores
        Any finite scores; higher means more likely positive.

    Returns
    -------
    tuple of float
        ``(auc, variance)``. The AUC is ``nan`` when a class is absent; the
        variance is ``nan`` unless each class has at least 2 patients.

    Raises
    ------
    EvaluationError
        For mismatched lengths, labels other than 0/1 or non-finite scores.
    """
    positive, checked = check_binary_inputs(
        "delong_auc_variance", labels, {"scores": scores}
    )
    components = _structural_components(positive, checked["scores"])
    if components is None:
        return math.nan, math.nan
    v10, v01 = components
    auc = float(v10.mean())
    if v10.size < 2 or v01.size < 2:
        return auc, math.nan
    variance = v10.var(ddof=1) / v10.size + v01.var(ddof=1) / v01.size
    return auc, float(variance)


def delong_ci(
    labels: npt.ArrayLike, scores: npt.ArrayLike, confidence: float = 0.95
) -> Estimate:
    """Estimate the AUC with its DeLong interval (Wald, AUC scale, in [0, 1]).

    Parameters
    ----------
    labels, scores
        As for :func:`delong_auc_variance`.
    confidence
        Interval level, strictly between 0 and 1.

    Returns
    -------
    Estimate
        ``nan`` parts where the AUC or its variance is undefined.
    """
    check_confidence("delong_ci", confidence)
    auc, variance = delong_auc_variance(labels, scores)
    return auc_normal_ci(auc, variance, confidence)


def delong_paired_test(
    labels: npt.ArrayLike,
    scores_a: npt.ArrayLike,
    scores_b: npt.ArrayLike,
    *,
    confidence: float = 0.95,
) -> PairedComparison:
    """Two-sided DeLong test of two models' AUCs on the same patients.

    Parameters
    ----------
    labels
        0/1 labels, 1 = positive.
    scores_a, scores_b
        Scores of model A and of model B for the same patients, same order.
    confidence
        Level of the interval on the AUC difference.

    Returns
    -------
    PairedComparison
        ``nan`` statistics unless each class has at least 2 patients.
    """
    check_confidence("delong_paired_test", confidence)
    positive, checked = check_binary_inputs(
        "delong_paired_test", labels, {"scores_a": scores_a, "scores_b": scores_b}
    )
    components_a = _structural_components(positive, checked["scores_a"])
    components_b = _structural_components(positive, checked["scores_b"])
    if components_a is None or components_b is None:
        return PairedComparison.from_variance(math.nan, math.nan, math.nan)
    auc_a = float(components_a[0].mean())
    auc_b = float(components_b[0].mean())
    m, n = components_a[0].size, components_a[1].size
    if m < 2 or n < 2:
        return PairedComparison.from_variance(auc_a, auc_b, math.nan, confidence)
    contrast = np.array([1.0, -1.0])
    s10 = np.cov(np.vstack([components_a[0], components_b[0]]))
    s01 = np.cov(np.vstack([components_a[1], components_b[1]]))
    variance = contrast @ s10 @ contrast / m + contrast @ s01 @ contrast / n
    return PairedComparison.from_variance(auc_a, auc_b, float(variance), confidence)


def auc_normal_ci(auc: float, variance: float, confidence: float = 0.95) -> Estimate:
    """Wald interval ``auc +- z * sqrt(variance)``, clipped to [0, 1].

    Shared by the site-side DeLong interval and the pooled (histogram) one so
    both report the same kind of interval.

    Parameters
    ----------
    auc
        The AUC estimate.
    variance
        Its variance; ``nan`` (or a ``nan`` AUC) gives a ``nan`` interval.
    confidence
        Interval level, strictly between 0 and 1.

    Raises
    ------
    EvaluationError
        ``bad-confidence`` for a level outside (0, 1).
    """
    check_confidence("auc_normal_ci", confidence)
    if not (math.isfinite(auc) and math.isfinite(variance)):
        return Estimate(auc, math.nan, math.nan)
    half_width = _critical_value(confidence) * math.sqrt(max(variance, 0.0))
    return Estimate(auc, max(0.0, auc - half_width), min(1.0, auc + half_width))


def _critical_value(confidence: float) -> float:
    return float(stats.norm.ppf(0.5 + confidence / 2.0))


def _structural_components(
    positive: npt.NDArray[np.bool_], scores: npt.NDArray[np.float64]
) -> Components | None:
    """``(V10, V01)``, or ``None`` when a class is absent."""
    x = scores[positive]
    y = scores[~positive]
    m, n = x.size, y.size
    if m == 0 or n == 0:
        return None
    midranks_x = stats.rankdata(x)
    midranks_y = stats.rankdata(y)
    midranks_z = stats.rankdata(np.concatenate([x, y]))
    v10 = (midranks_z[:m] - midranks_x) / n
    v01 = 1.0 - (midranks_z[m:] - midranks_y) / m
    return v10, v01
