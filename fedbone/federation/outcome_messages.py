"""Records of the outcome analysis: flat Flower records <-> fedbone aggregates.

Flower's MetricRecord holds scalars and flat lists, so the nested dicts of the
estimators are flattened here, on both sides of the exchange:

- ``survival-<endpoint>``: ``resolution-days``, ``horizon-days`` and, per
  group ``g`` (``negative``, ``positive``), ``at-risk-g`` and the interval
  counts ``events-g``, ``censored-g`` (list[int]);
- ``site-cox-<endpoint>-<model>``: ``coef-<covariate>``,
  ``variance-<covariate>``, ``num-patients``, ``num-events``;
- ``ph-<endpoint>-<model>``: ``statistic-<covariate>``, ``p-value-<covariate>``;
- ``outcome-status`` (ConfigRecord): ``<endpoint>-<part>`` -> status code;
- ``cox-derivatives``: ``log-likelihood``, ``gradient`` (list[float], p),
  ``hessian`` (list[float], p*p row-major), ``num-patients``, ``num-events``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, MetricRecord

from fedbone.federation.kinds import OUTCOME_STATUS_RECORD
from fedbone.federation.study_messages import (
    config_float,
    config_str,
    config_strs,
)
from fedbone.outcomes.cohort import COX_MODELS
from fedbone.outcomes.meta_analysis import ProportionalHazardsCheck, SiteCoxFit
from fedbone.outcomes.release import EndpointRelease
from fedbone.outcomes.stratified_cox import CoxDerivatives
from fedbone.outcomes.survival_grid import SiteSurvivalCounts

__all__ = [
    "COX_DERIVATIVES_RECORD",
    "OUTCOME_STATUS_RECORD",
    "OutcomeRequest",
    "counts_from_record",
    "counts_record",
    "derivatives_from_record",
    "derivatives_record",
    "outcome_reply",
    "ph_check_from_record",
    "site_fit_from_record",
]

COX_DERIVATIVES_RECORD = "cox-derivatives"


@dataclass(frozen=True)
class OutcomeRequest:
    """What ``query.outcomes`` asks of a site (from its ``config`` record)."""

    endpoints: tuple[str, ...]
    split: str
    threshold: float
    resolution_days: float
    horizon_days: float
    ties: str

    @classmethod
    def from_config(cls, config: ConfigRecord) -> OutcomeRequest:
        """Read the request's settings."""
        return cls(
            endpoints=tuple(config_strs(config, "endpoints")),
            split=config_str(config, "split"),
            threshold=config_float(config, "threshold"),
            resolution_days=config_float(config, "resolution-days"),
            horizon_days=config_float(config, "horizon-days"),
            ties=config_str(config, "ties"),
        )


def counts_record(counts: SiteSurvivalCounts) -> MetricRecord:
    """Flatten survival counts into a ``survival-<endpoint>`` record."""
    values: dict[str, Any] = {
        "resolution-days": counts.grid.resolution_days,
        "horizon-days": counts.grid.horizon_days,
    }
    for group, group_counts in counts.groups.items():
        values[f"at-risk-{group}"] = group_counts.n_at_risk
        values[f"events-{group}"] = [int(v) for v in group_counts.events]
        values[f"censored-{group}"] = [int(v) for v in group_counts.censored]
    return MetricRecord(values)


def counts_from_record(record: Mapping[str, Any]) -> SiteSurvivalCounts:
    """Rebuild (and validate) counts from a ``survival-<endpoint>`` record."""
    groups = {
        key.removeprefix("at-risk-"): {
            "at-risk": record[key],
            "events": record.get(f"events-{key.removeprefix('at-risk-')}"),
            "censored": record.get(f"censored-{key.removeprefix('at-risk-')}"),
        }
        for key in record
        if key.startswith("at-risk-")
    }
    return SiteSurvivalCounts.from_dict(
        {
            "resolution-days": record.get("resolution-days"),
            "horizon-days": record.get("horizon-days"),
            "groups": groups,
        }
    )


def _site_fit_record(fit: SiteCoxFit) -> MetricRecord:
    values: dict[str, Any] = {
        "num-patients": fit.n_patients,
        "num-events": fit.n_events,
    }
    for name, param, variance in zip(fit.names, fit.params, fit.variances, strict=True):
        values[f"coef-{name}"] = float(param)
        values[f"variance-{name}"] = float(variance)
    return MetricRecord(values)


def site_fit_from_record(record: Mapping[str, Any], model: str) -> SiteCoxFit:
    """Rebuild a site's own Cox fit of ``model`` (covariates in model order)."""
    names = COX_MODELS[model]
    return SiteCoxFit.from_dict(
        {
            "names": list(names),
            "params": [record.get(f"coef-{n}", float("nan")) for n in names],
            "variances": [record.get(f"variance-{n}", float("nan")) for n in names],
            "num-patients": record.get("num-patients", 0),
            "num-events": record.get("num-events", 0),
        }
    )


def _ph_record(check: ProportionalHazardsCheck) -> MetricRecord:
    values: dict[str, Any] = {}
    for name, statistic in check.test_statistics.items():
        values[f"statistic-{name}"] = float(statistic)
        values[f"p-value-{name}"] = float(check.p_values[name])
    return MetricRecord(values)


def ph_check_from_record(record: Mapping[str, Any]) -> ProportionalHazardsCheck:
    """Rebuild a site's proportional-hazards check."""
    names = [k.removeprefix("statistic-") for k in record if k.startswith("statistic-")]
    return ProportionalHazardsCheck(
        test_statistics={n: float(record[f"statistic-{n}"]) for n in names},
        p_values={n: float(record[f"p-value-{n}"]) for n in names},
        time_transform="rank",
    )


def outcome_reply(
    releases: Mapping[str, EndpointRelease], *, counts: bool = True
) -> dict[str, MetricRecord | ConfigRecord]:
    """Every record of a site's ``query.outcomes`` reply, by record name.

    With ``counts=False`` the exact survival counts are left out (the caller
    adds their noisy release instead).
    """
    records: dict[str, MetricRecord | ConfigRecord] = {}
    status: dict[str, Any] = {}
    for endpoint, release in releases.items():
        if counts and release.counts is not None:
            records[f"survival-{endpoint}"] = counts_record(release.counts)
        for model, fit in release.site_fits.items():
            records[f"site-cox-{endpoint}-{model}"] = _site_fit_record(fit)
        for model, check in release.ph_checks.items():
            records[f"ph-{endpoint}-{model}"] = _ph_record(check)
        status.update({f"{endpoint}-{part}": s for part, s in release.status.items()})
    records[OUTCOME_STATUS_RECORD] = ConfigRecord(status)
    return records


def derivatives_record(derivatives: CoxDerivatives) -> MetricRecord:
    """Flatten one stratum's derivatives into the ``cox-derivatives`` record."""
    return MetricRecord(
        {
            "log-likelihood": float(derivatives.log_likelihood),
            "gradient": [float(v) for v in derivatives.gradient],
            "hessian": [float(v) for v in np.ravel(derivatives.hessian)],
            "num-patients": int(derivatives.n_patients),
            "num-events": int(derivatives.n_events),
        }
    )


def derivatives_from_record(record: Mapping[str, Any], ties: str) -> CoxDerivatives:
    """Rebuild a stratum's derivatives (``ties`` as the server asked)."""
    gradient = list(record.get("gradient", []))
    p = len(gradient)
    flat = np.asarray(record.get("hessian", []), dtype=np.float64)
    hessian = flat.reshape(p, p).tolist() if flat.size == p * p else flat.tolist()
    return CoxDerivatives.from_dict(
        {
            "log-likelihood": record.get("log-likelihood"),
            "gradient": gradient,
            "hessian": hessian,
            "num-patients": record.get("num-patients"),
            "num-events": record.get("num-events"),
            "ties": ties,
        }
    )
