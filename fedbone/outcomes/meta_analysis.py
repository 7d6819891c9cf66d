"""Per-site Cox fits, fixed-effect meta-analysis and per-site PH checks.

The exact pooled answer is the federated stratified fit
(:mod:`fedbone.outcomes.stratified_cox`). As a cross-check, and as the
classic two-stage design, each site also fits its own Cox model
(:func:`fit_site_cox`) and sends only its coefficients and their variances
(:meth:`SiteCoxFit.to_dict`); the server pools them per covariate with the
inverse-variance fixed-effect estimator and reports heterogeneity as Cochran's Q
and I^2 (:func:`meta_analysis`, :func:`meta_analyze_sites`). The
proportional-hazards assumption is checked at each site on its own records with
lifelines' Schoenfeld-residual test (:func:`proportional_hazards_check`); only
the test statistics and p-values leave.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from lifelines import CoxPHFitter
from lifelines.statistics import proportional_hazard_test
from scipy import stats

from fedbone.errors import Problem
from fedbone.outcomes.stratified_cox import (
    CoxDerivatives,
    FederatedCoxPH,
    stratum_derivatives,
)
from fedbone.validation.errors import EvaluationError

__all__ = [
    "MetaAnalysis",
    "ProportionalHazardsCheck",
    "SiteCoxFit",
    "fit_site_cox",
    "meta_analysis",
    "meta_analyze_sites",
    "proportional_hazards_check",
]

FloatArray = npt.NDArray[np.float64]

_Z95 = float(stats.norm.ppf(0.975))


@dataclass(frozen=True)
class SiteCoxFit:
    """One site's own Cox coefficients and their variances.

    Parameters
    ----------
    names
        Covariate names, in order.
    params
        Log hazard ratios, one per covariate.
    variances
        Squared standard errors, one per covariate.
    n_patients, n_events
        Size of the site's cohort.
    """

    names: tuple[str, ...]
    params: tuple[float, ...]
    variances: tuple[float, ...]
    n_patients: int
    n_events: int

    def to_dict(self) -> dict[str, Any]:
        """Return plain lists and ints with kebab-case keys."""
        return {
            "names": list(self.names),
            "params": list(self.params),
            "variances": list(self.variances),
            "num-patients": self.n_patients,
            "num-events": self.n_events,
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> SiteCoxFit:
        """Rebuild from :meth:`to_dict` output, checking lengths and values."""
        names = tuple(str(n) for n in record.get("names", ()))
        params = tuple(float(v) for v in record.get("params", ()))
        variances = tuple(float(v) for v in record.get("variances", ()))
        problems = []
        if not names or not len(names) == len(params) == len(variances):
            problems.append(
                Problem("bad-shape", "names, params and variances need equal length")
            )
        if not all(math.isfinite(v) for v in params) or not all(
            math.isfinite(v) and v > 0 for v in variances
        ):
            problems.append(
                Problem("bad-values", "params must be finite, variances positive")
            )
        EvaluationError.raise_if_any("site Cox fit record", problems)
        return cls(
            names,
            params,
            variances,
            int(record.get("num-patients", 0)),
            int(record.get("num-events", 0)),
        )


def _as_matrix(covariates: npt.ArrayLike) -> FloatArray:
    x = np.asarray(covariates, dtype=np.float64)
    return x.reshape(-1, 1) if x.ndim == 1 else x


def _constant_columns(x: FloatArray, names: Sequence[str]) -> list[Problem]:
    return [
        Problem(
            "no-variance",
            "this covariate takes one value at the site, so the site cannot "
            "estimate it alone; leave it out of the per-site fit (the federated "
            "stratified fit still uses the other sites)",
            name,
        )
        for name, column in zip(names, x.T, strict=True)
        if column.size and np.ptp(column) == 0
    ]


def fit_site_cox(
    times: npt.ArrayLike,
    events: npt.ArrayLike,
    covariates: npt.ArrayLike,
    names: Sequence[str],
    ties: str = "efron",
    *,
    min_patients: int = 5,
) -> SiteCoxFit:
    """Fit a Cox model on one site's own records (run at the site).

    Parameters
    ----------
    times, events, covariates
        As for :func:`~fedbone.outcomes.stratified_cox.stratum_derivatives`.
    names
        One name per covariate column.
    ties
        ``"efron"`` or ``"breslow"``.
    min_patients
        Disclosure control: refuse sites smaller than this.

    Returns
    -------
    SiteCoxFit
        Coefficients and variances, safe to send.

    Raises
    ------
    EvaluationError
        A covariate constant at the site (``no-variance``), no events, or any
        input problem of ``stratum_derivatives``.
    """
    x = _as_matrix(covariates)
    EvaluationError.raise_if_any("site Cox fit", _constant_columns(x, names))

    def site_only(beta: FloatArray) -> list[CoxDerivatives]:
        return [
            stratum_derivatives(times, events, x, beta, ties, min_patients=min_patients)
        ]

    model = FederatedCoxPH(ties=ties).fit(site_only, x.shape[1], names)
    return SiteCoxFit(
        names=tuple(names),
        params=tuple(float(v) for v in model.params_),
        variances=tuple(float(v) ** 2 for v in model.standard_errors_),
        n_patients=model.n_patients_,
        n_events=model.n_events_,
    )


@dataclass(frozen=True)
class MetaAnalysis:
    """Fixed-effect inverse-variance pooled estimate with heterogeneity.

    Parameters
    ----------
    estimate, se
        Pooled estimate (a log hazard ratio for Cox) and its standard error.
    low, high
        95% confidence interval of ``estimate``.
    z, p_value
        Wald test of ``estimate == 0``.
    q, q_p_value
        Cochran's Q and its chi-square p-value on ``n_studies - 1`` df.
    i_squared
        ``max(0, (Q - df) / Q)``, in [0, 1]; 0 when ``Q == 0``.
    n_studies
        Number of estimates pooled.
    """

    estimate: float
    se: float
    low: float
    high: float
    z: float
    p_value: float
    q: float
    q_p_value: float
    i_squared: float
    n_studies: int

    def to_dict(self) -> dict[str, float]:
        """Return the fields as floats with kebab-case keys."""
        return {
            "estimate": self.estimate,
            "se": self.se,
            "low": self.low,
            "high": self.high,
            "z": self.z,
            "p-value": self.p_value,
            "q": self.q,
            "q-p-value": self.q_p_value,
            "i-squared": self.i_squared,
            "n-studies": float(self.n_studies),
        }


def meta_analysis(estimates: npt.ArrayLike, variances: npt.ArrayLike) -> MetaAnalysis:
    """Pool per-site estimates with inverse-variance weights.

    Parameters
    ----------
    estimates
        One estimate per site (e.g. log hazard ratios).
    variances
        Their variances (squared standard errors), all positive.

    Returns
    -------
    MetaAnalysis

    Raises
    ------
    EvaluationError
        Mismatched lengths, no estimates, non-finite values or variances <= 0.
    """
    theta = np.asarray(estimates, dtype=np.float64).reshape(-1)
    var = np.asarray(variances, dtype=np.float64).reshape(-1)
    problems = []
    if theta.size != var.size or theta.size == 0:
        problems.append(
            Problem(
                "length-mismatch",
                f"give one variance per estimate ({theta.size} estimates, "
                f"{var.size} variances), at least one",
            )
        )
    elif not np.all(np.isfinite(theta)) or not np.all(np.isfinite(var) & (var > 0)):
        problems.append(
            Problem("bad-values", "estimates must be finite and variances positive")
        )
    EvaluationError.raise_if_any("meta-analysis inputs", problems)
    weights = 1.0 / var
    pooled = float(np.sum(weights * theta) / np.sum(weights))
    se = float(1.0 / math.sqrt(np.sum(weights)))
    z = pooled / se
    q = float(np.sum(weights * (theta - pooled) ** 2))
    df = theta.size - 1
    q_p = float(stats.chi2.sf(q, df)) if df > 0 else math.nan
    i_squared = max(0.0, (q - df) / q) if q > 0 else 0.0
    return MetaAnalysis(
        estimate=pooled,
        se=se,
        low=pooled - _Z95 * se,
        high=pooled + _Z95 * se,
        z=z,
        p_value=float(2 * stats.norm.sf(abs(z))),
        q=q,
        q_p_value=q_p,
        i_squared=i_squared,
        n_studies=int(theta.size),
    )


def meta_analyze_sites(fits: Sequence[SiteCoxFit]) -> dict[str, MetaAnalysis]:
    """Meta-analyse every covariate over the sites that estimated it.

    A site that left a covariate out (``no-variance`` at that site) simply does
    not contribute to that covariate.

    Parameters
    ----------
    fits
        The sites' :class:`SiteCoxFit` replies.

    Returns
    -------
    dict of str to MetaAnalysis
        One entry per covariate name, in order of first appearance.
    """
    collected: dict[str, tuple[list[float], list[float]]] = {}
    for fit in fits:
        for name, param, variance in zip(
            fit.names, fit.params, fit.variances, strict=True
        ):
            estimates, variances = collected.setdefault(name, ([], []))
            estimates.append(param)
            variances.append(variance)
    if not collected:
        raise EvaluationError(
            "meta-analysis inputs", [Problem("no-sites", "no site fit was given")]
        )
    return {name: meta_analysis(*pair) for name, pair in collected.items()}


@dataclass(frozen=True)
class ProportionalHazardsCheck:
    """Schoenfeld-residual test of proportional hazards at one site.

    Parameters
    ----------
    test_statistics, p_values
        Per covariate name; chi-square with 1 df each.
    time_transform
        The lifelines time transform used (``"rank"``, ``"km"``, ...).
    """

    test_statistics: dict[str, float]
    p_values: dict[str, float]
    time_transform: str

    def to_dict(self) -> dict[str, Any]:
        """Return plain floats with kebab-case keys."""
        return {
            "test-statistics": dict(self.test_statistics),
            "p-values": dict(self.p_values),
            "time-transform": self.time_transform,
        }


def proportional_hazards_check(
    times: npt.ArrayLike,
    events: npt.ArrayLike,
    covariates: npt.ArrayLike,
    names: Sequence[str],
    *,
    time_transform: str = "rank",
    min_patients: int = 5,
) -> ProportionalHazardsCheck:
    """Test proportional hazards on one site's own records (run at the site).

    Fits lifelines ``CoxPHFitter`` to the site's data and runs
    ``lifelines.statistics.proportional_hazard_test``; only the statistics and
    p-values are returned.

    Parameters
    ----------
    times, events, covariates, names
        The site's records, as for :func:`fit_site_cox`.
    time_transform
        Passed to lifelines (``"rank"``, ``"km"``, ``"identity"``, ``"log"``).
    min_patients
        Disclosure control: refuse sites smaller than this.

    Returns
    -------
    ProportionalHazardsCheck

    Raises
    ------
    EvaluationError
        Too few patients, no events, or a covariate constant at the site.
    """
    x = _as_matrix(covariates)
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    d = np.asarray(events, dtype=np.float64).reshape(-1)
    problems = _constant_columns(x, names)
    if t.size < min_patients:
        problems.append(
            Problem(
                "too-few-patients",
                f"the site has {t.size} patients, below its minimum of "
                f"{min_patients}; skip the check at this site",
            )
        )
    if not np.any(d == 1):
        problems.append(Problem("no-events", "the site has no events to test"))
    EvaluationError.raise_if_any("proportional-hazards check", problems)
    frame = pd.DataFrame(x, columns=list(names))
    frame["__time"] = t
    frame["__event"] = d
    model = CoxPHFitter().fit(frame, "__time", "__event")
    result = proportional_hazard_test(model, frame, time_transform=time_transform)
    summary = result.summary
    return ProportionalHazardsCheck(
        test_statistics={
            str(k): float(v) for k, v in summary["test_statistic"].items()
        },
        p_values={str(k): float(v) for k, v in summary["p"].items()},
        time_transform=time_transform,
    )
