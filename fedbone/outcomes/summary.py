"""Plain, JSON-ready summaries of the fitted outcome estimators (for the report).

The server keeps its outcome results as plain dicts and lists (layout in
:mod:`server.phases.outcomes`); these functions turn each fitted estimator into
its part of that layout.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedbone.outcomes.kaplan_meier import FederatedKaplanMeier, FederatedLogRank
from fedbone.outcomes.meta_analysis import (
    MetaAnalysis,
    ProportionalHazardsCheck,
    SiteCoxFit,
)
from fedbone.outcomes.stratified_cox import FederatedCoxPH
from fedbone.outcomes.survival_grid import SiteSurvivalCounts, pool_site_counts

__all__ = [
    "cox_summary",
    "group_summary",
    "km_summary",
    "logrank_summary",
    "meta_rows",
    "ph_rows",
    "site_fit_rows",
]

_Z95 = 1.959963984540054


def group_summary(sites: list[SiteSurvivalCounts]) -> dict[str, dict[str, int]]:
    """Patients and events per group, pooled over the sites."""
    pooled = pool_site_counts(sites)
    return {
        name: {"n-patients": counts.n_at_risk, "n-events": int(counts.events.sum())}
        for name, counts in pooled.groups.items()
    }


def km_summary(km: FederatedKaplanMeier) -> dict[str, Any]:
    """Curves, bands and numbers at risk up to the last time anyone is at risk."""
    at_risk = km.at_risk_
    occupied = np.flatnonzero(at_risk.to_numpy().max(axis=1) > 0)
    last = int(occupied[-1]) + 1 if occupied.size else 1
    summary: dict[str, Any] = {
        "time-days": [float(t) for t in km.survival_function_.index[:last]]
    }
    bounds = km.confidence_interval_
    for group in km.survival_function_.columns:
        lower = next(c for c in bounds.columns if c.startswith(f"{group}_lower"))
        upper = next(c for c in bounds.columns if c.startswith(f"{group}_upper"))
        summary[str(group)] = {
            "survival": _floats(km.survival_function_[group].to_numpy()[:last]),
            "lower": _floats(bounds[lower].to_numpy()[:last]),
            "upper": _floats(bounds[upper].to_numpy()[:last]),
            "at-risk": [int(v) for v in at_risk[group].to_numpy()[:last]],
        }
    return summary


def logrank_summary(test: FederatedLogRank) -> dict[str, Any]:
    """Statistic, degrees of freedom, p-value, observed and expected events."""
    return {
        "statistic": test.test_statistic_,
        "df": test.degrees_of_freedom_,
        "p-value": test.p_value_,
        "observed": dict(test.observed_),
        "expected": dict(test.expected_),
    }


def cox_summary(model: FederatedCoxPH, sites: list[str]) -> dict[str, Any]:
    """Coefficients, hazard ratios with 95% CIs and p-values of a federated fit."""
    ci = model.confidence_intervals_
    rows = []
    for name in model.params_.index:
        rows.append(
            {
                "covariate": str(name),
                "coef": float(model.params_[name]),
                "se": float(model.standard_errors_[name]),
                "hr": float(model.hazard_ratios_[name]),
                "hr-low": float(np.exp(ci.loc[name, "95% lower-bound"])),
                "hr-high": float(np.exp(ci.loc[name, "95% upper-bound"])),
                "p-value": float(model.p_values_[name]),
            }
        )
    return {
        "sites": list(sites),
        "n-patients": int(model.n_patients_),
        "n-events": int(model.n_events_),
        "converged": bool(model.converged_),
        "iterations": int(model.iterations_),
        "rounds": int(model.rounds_),
        "log-likelihood": float(model.log_likelihood_),
        "coefficients": rows,
    }


def meta_rows(pooled: Mapping[str, MetaAnalysis]) -> list[dict[str, Any]]:
    """One row per covariate of a fixed-effect meta-analysis, as hazard ratios."""
    return [
        {
            "covariate": name,
            "hr": math.exp(meta.estimate),
            "hr-low": math.exp(meta.low),
            "hr-high": math.exp(meta.high),
            "p-value": meta.p_value,
            "q": meta.q,
            "i2": meta.i_squared,
            "n-sites": meta.n_studies,
        }
        for name, meta in pooled.items()
    ]


def site_fit_rows(site: str, model: str, fit: SiteCoxFit) -> list[dict[str, Any]]:
    """One row per covariate of a site's own Cox fit.

    Parameters
    ----------
    site
        Site id, copied into each row.
    model
        ``crude`` or ``adjusted``, copied into each row.
    fit
        The site's Cox coefficients and variances; rows give the hazard ratio
        with its 95% Wald interval and the cohort size.
    """
    rows = []
    for name, param, variance in zip(fit.names, fit.params, fit.variances, strict=True):
        se = math.sqrt(variance)
        rows.append(
            {
                "site": site,
                "model": model,
                "covariate": name,
                "hr": math.exp(param),
                "hr-low": math.exp(param - _Z95 * se),
                "hr-high": math.exp(param + _Z95 * se),
                "n-patients": fit.n_patients,
                "n-events": fit.n_events,
            }
        )
    return rows


def ph_rows(
    site: str, model: str, check: ProportionalHazardsCheck
) -> list[dict[str, Any]]:
    """One row per covariate of a site's proportional-hazards check.

    Parameters
    ----------
    site
        Site id, copied into each row.
    model
        ``crude`` or ``adjusted``, copied into each row.
    check
        The site's Schoenfeld-residual test; rows give each covariate's
        chi-square statistic and p-value.
    """
    return [
        {
            "site": site,
            "model": model,
            "covariate": name,
            "statistic": statistic,
            "p-value": check.p_values[name],
        }
        for name, statistic in check.test_statistics.items()
    ]


def _floats(values: np.ndarray) -> list[float]:
    return [float(v) for v in values]
