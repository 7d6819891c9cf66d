"""Non-inferiority of enhanced scans' diagnostic AUC against standard scans.

Qi et al. (2024) call 2x enhanced scans diagnostically equivalent to standard
ones. fedbone states the claim as a one-sided non-inferiority test on the
paired AUC difference ``d = AUC(enhanced) - AUC(standard)`` with its standard
error ``se`` (e.g. from the pooled DeLong covariance of
:mod:`fedbone.validation.pooled_delong`) and a margin ``m``:

* H0: ``d <= -m`` (enhanced worse by at least the margin), H1: ``d > -m``;
* ``z = (d + m) / se`` and ``p = 1 - Phi(z)`` (normal approximation);
* the one-sided ``1 - alpha`` lower confidence bound is
  ``d - z_{1-alpha} se``; the enhanced scans are non-inferior when that bound
  lies above ``-m``, which is the same as ``p < alpha``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats

from fedbone.errors import Problem
from fedbone.validation.errors import EvaluationError

__all__ = ["NonInferiority", "noninferiority"]


@dataclass(frozen=True)
class NonInferiority:
    """Result of the one-sided non-inferiority test of an AUC difference.

    Attributes
    ----------
    difference
        ``AUC(enhanced) - AUC(standard)``.
    se
        Its standard error.
    lower
        One-sided ``1 - alpha`` lower confidence bound of the difference.
    margin
        Non-inferiority margin (positive; the enhanced AUC may be lower by
        less than this).
    z
        ``(difference + margin) / se``.
    p_value
        One-sided p-value of H0 ``difference <= -margin``.
    non_inferior
        ``lower > -margin``.
    """

    difference: float
    se: float
    lower: float
    margin: float
    z: float
    p_value: float
    non_inferior: bool

    def to_dict(self) -> dict[str, float | bool]:
        """Kebab-case record for results tables."""
        return {
            "difference": self.difference,
            "se": self.se,
            "lower": self.lower,
            "margin": self.margin,
            "z": self.z,
            "p-value": self.p_value,
            "non-inferior": self.non_inferior,
        }


def noninferiority(
    difference: float, se: float, margin: float = 0.05, alpha: float = 0.05
) -> NonInferiority:
    """Test whether enhanced scans' AUC is non-inferior to standard scans'.

    Parameters
    ----------
    difference
        ``AUC(enhanced) - AUC(standard)`` on the same scans.
    se
        Standard error of the paired difference, positive.
    margin
        Non-inferiority margin, positive (0.05 AUC by default).
    alpha
        One-sided significance level, in ``(0, 0.5)``.

    Returns
    -------
    NonInferiority
        Statistic, p-value, lower bound and decision.

    Raises
    ------
    EvaluationError
        ``non-finite-difference``, ``bad-standard-error``, ``bad-margin``,
        ``bad-alpha``, listing all.
    """
    problems = []
    if not math.isfinite(difference):
        problems.append(
            Problem(
                "non-finite-difference",
                f"difference is {difference}; pass AUC(enhanced) - AUC(standard)",
            )
        )
    if not (math.isfinite(se) and se > 0):
        problems.append(
            Problem(
                "bad-standard-error",
                f"se is {se}; pass the positive standard error of the paired "
                "difference (e.g. from DeLong's covariance)",
            )
        )
    if not (math.isfinite(margin) and margin > 0):
        problems.append(
            Problem(
                "bad-margin",
                f"margin is {margin}; pass a positive AUC margin such as 0.05",
            )
        )
    if not (0 < alpha < 0.5):
        problems.append(
            Problem(
                "bad-alpha",
                f"alpha is {alpha}; pass a one-sided level in (0, 0.5), e.g. 0.05",
            )
        )
    EvaluationError.raise_if_any("non-inferiority test", problems)
    z = (difference + margin) / se
    lower = difference - float(stats.norm.ppf(1.0 - alpha)) * se
    return NonInferiority(
        difference=float(difference),
        se=float(se),
        lower=lower,
        margin=float(margin),
        z=z,
        p_value=float(stats.norm.sf(z)),
        non_inferior=lower > -margin,
    )
