"""Phase ``outcomes``: whether the final model's prediction carries prognosis.

1. ``query.outcomes`` sends the study's chosen model (``outcomes.model``) to
   every site. Each scores the first scan of its patients with follow-up
   (kept at the site) and replies with survival counts per predicted group on
   the shared grid, its own crude and adjusted Cox fits, proportional-hazards
   checks, and a status for every part it withholds and why.
2. The server pools the counts: Kaplan-Meier curves with Greenwood bands and
   the pooled and site-stratified log-rank tests.
3. The site-stratified Cox models (crude: prediction; adjusted: + age, sex)
   are fitted by federated Newton-Raphson: every step is a
   ``query.outcome_cox`` round in which each stratum returns only its log
   partial likelihood, gradient and Hessian at the server's coefficients.
4. The sites' own fits are pooled by inverse-variance meta-analysis.

Under the study's ``dp.statistics`` the sites send Laplace-noised counts
(charged to their ledgers) and nothing else; the Cox models, site fits and PH
checks, which would be exact releases, are not run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict

from fedbone.federation.kinds import OUTCOME_STATUS_RECORD, PHASE_OUTCOMES
from fedbone.federation.outcome_messages import (
    COX_DERIVATIVES_RECORD,
    counts_from_record,
    derivatives_from_record,
    ph_check_from_record,
    site_fit_from_record,
)
from fedbone.federation.records import arrays_to_record
from fedbone.federation.study_messages import metric_floats
from fedbone.outcomes.cohort import COX_MODELS
from fedbone.outcomes.kaplan_meier import FederatedKaplanMeier, FederatedLogRank
from fedbone.outcomes.meta_analysis import SiteCoxFit, meta_analyze_sites
from fedbone.outcomes.release import INCLUDED
from fedbone.outcomes.stratified_cox import CoxDerivatives, FederatedCoxPH
from fedbone.outcomes.summary import (
    cox_summary,
    group_summary,
    km_summary,
    logrank_summary,
    meta_rows,
    ph_rows,
    site_fit_rows,
)
from fedbone.outcomes.survival_grid import SiteSurvivalCounts
from fedbone.validation.errors import EvaluationError
from server.phases.validate import record_statistics_spending
from server.study_run import StudyError, StudyRun

__all__ = ["run_outcomes"]

logger = logging.getLogger(__name__)


@dataclass
class _SiteReplies:
    """What the sites sent for one endpoint, by site id."""

    counts: dict[str, SiteSurvivalCounts] = field(default_factory=dict)
    fits: dict[str, dict[str, SiteCoxFit]] = field(default_factory=dict)
    ph: list[dict[str, Any]] = field(default_factory=list)
    strata: dict[str, list[int]] = field(default_factory=dict)


def _request(run: StudyRun, endpoints: Sequence[str]) -> RecordDict:
    settings = run.study.outcomes
    values: dict[str, Any] = {
        "endpoints": list(endpoints),
        "split": settings.split,
        "threshold": settings.threshold,
        "resolution-days": settings.resolution_days,
        "horizon-days": settings.horizon_days,
        "ties": settings.ties,
    }
    if run.study.dp.statistics is not None:
        values.update(run.study.dp.statistics.to_config())
    content = RecordDict({"config": run.config(PHASE_OUTCOMES, values)})
    content[f"model-{settings.model}"] = arrays_to_record(run.models[settings.model])
    return content


def _collect(
    run: StudyRun, replies: list[Message], endpoints: Sequence[str], noisy: bool
) -> tuple[dict[str, _SiteReplies], list[dict[str, Any]]]:
    """Sort every reply's records by endpoint; list every site's status."""
    by_endpoint = {endpoint: _SiteReplies() for endpoint in endpoints}
    status_rows = []
    prefix = "noisy-survival-" if noisy else "survival-"
    for reply in sorted(replies, key=lambda r: run.site_of(r.metadata.src_node_id)):
        node = reply.metadata.src_node_id
        site = run.site_of(node)
        content = reply.content
        status = content.config_records.get(OUTCOME_STATUS_RECORD, ConfigRecord())
        for key, value in sorted(status.items()):
            endpoint = next((e for e in endpoints if key.startswith(f"{e}-")), None)
            if endpoint is None:
                continue
            part = key.removeprefix(f"{endpoint}-")
            status_rows.append(
                {"site": site, "endpoint": endpoint, "part": part, "status": value}
            )
            if part.endswith("-stratum") and value == INCLUDED:
                model = part.removesuffix("-stratum")
                by_endpoint[endpoint].strata.setdefault(model, []).append(node)
        records = content.metric_records
        for endpoint, found in by_endpoint.items():
            if f"{prefix}{endpoint}" in records:
                found.counts[site] = counts_from_record(records[f"{prefix}{endpoint}"])
            for model in COX_MODELS:
                fit = records.get(f"site-cox-{endpoint}-{model}")
                if fit is not None:
                    found.fits.setdefault(model, {})[site] = site_fit_from_record(
                        fit, model
                    )
                check = records.get(f"ph-{endpoint}-{model}")
                if check is not None:
                    found.ph += ph_rows(site, model, ph_check_from_record(check))
        if noisy and "privacy" in records:
            run.results.setdefault("outcome-spending", {})[site] = metric_floats(
                records["privacy"]
            )
    return by_endpoint, status_rows


def _derivatives_fn(run: StudyRun, endpoint: str, model: str, nodes: list[int]) -> Any:
    """``beta -> per-site derivatives``: one ``query.outcome_cox`` round each."""
    ties = run.study.outcomes.ties

    def derivatives(beta: np.ndarray) -> list[CoxDerivatives]:
        values = {
            "endpoint": endpoint,
            "cox-model": model,
            "beta": [float(v) for v in beta],
            "ties": ties,
        }
        content = RecordDict({"config": run.config(PHASE_OUTCOMES, values)})
        replies = run.query("outcome_cox", nodes, content)
        if sorted(r.metadata.src_node_id for r in replies) != sorted(nodes):
            answered = {run.site_of(r.metadata.src_node_id) for r in replies}
            missing = sorted({run.site_of(n) for n in nodes} - answered)
            raise StudyError(
                f"Cox {model} ({endpoint}): {', '.join(missing)} did not answer a "
                "Newton round; the strata must stay the same for the whole fit"
            )
        return [
            derivatives_from_record(
                reply.content.metric_records[COX_DERIVATIVES_RECORD], ties
            )
            for reply in replies
        ]

    return derivatives


def _federated_cox(
    run: StudyRun, endpoint: str, model: str, nodes: list[int]
) -> dict[str, Any]:
    names = COX_MODELS[model]
    fitted = FederatedCoxPH(ties=run.study.outcomes.ties).fit(
        _derivatives_fn(run, endpoint, model, nodes), len(names), names
    )
    summary = cox_summary(fitted, [run.site_of(n) for n in nodes])
    for row in summary["coefficients"]:
        logger.info(
            "%s Cox %s: %s HR %.2f (95%% CI %.2f-%.2f), p = %.2g over %d sites",
            endpoint,
            model,
            row["covariate"],
            row["hr"],
            row["hr-low"],
            row["hr-high"],
            row["p-value"],
            len(nodes),
        )
    return summary


def _analyse(
    run: StudyRun, endpoint: str, found: _SiteReplies, noisy: bool
) -> dict[str, Any]:
    """Everything the study reports for one endpoint (errors listed, not raised)."""
    result: dict[str, Any] = {"sites": sorted(found.counts), "errors": []}
    counts = [found.counts[site] for site in sorted(found.counts)]

    def attempt(analysis: str, compute: Any) -> None:
        try:
            compute()
        except (EvaluationError, StudyError) as error:
            logger.warning("outcomes %s %s: %s", endpoint, analysis, error)
            result["errors"].append({"analysis": analysis, "reason": str(error)})

    if counts:
        result["groups"] = group_summary(counts)
        attempt(
            "kaplan-meier",
            lambda: result.update(km=km_summary(FederatedKaplanMeier().fit(counts))),
        )
        for key, stratified in (("logrank", False), ("logrank-stratified", True)):
            attempt(
                key,
                lambda key=key, stratified=stratified: result.update(
                    {key: logrank_summary(FederatedLogRank(stratified).fit(counts))}
                ),
            )
    else:
        result["errors"].append(
            {"analysis": "kaplan-meier", "reason": "no site released counts"}
        )
    if noisy:
        return result
    result["cox"], result["meta"], result["site-fits"] = {}, {}, []
    for model in COX_MODELS:
        nodes = sorted(found.strata.get(model, []), key=run.site_of)
        if nodes:
            attempt(
                f"cox-{model}",
                lambda m=model, n=nodes: result["cox"].__setitem__(
                    m, _federated_cox(run, endpoint, m, n)
                ),
            )
        fits = found.fits.get(model, {})
        for site, fit in sorted(fits.items()):
            result["site-fits"] += site_fit_rows(site, model, fit)
        if fits:
            attempt(
                f"meta-{model}",
                lambda f=fits, m=model: result["meta"].__setitem__(
                    m, meta_rows(meta_analyze_sites([f[s] for s in sorted(f)]))
                ),
            )
    result["ph-checks"] = found.ph
    return result


def run_outcomes(run: StudyRun) -> None:
    """Run the outcome analysis of the study's chosen model at every site."""
    settings = run.study.outcomes
    if settings.model not in run.models:
        raise StudyError(
            f"outcomes.model is {settings.model!r}, but the study trained "
            f"{', '.join(run.models) or 'no models'}; name one of them"
        )
    endpoints = settings.endpoints_for(run.study.task)
    noisy = run.study.dp.statistics is not None
    replies = run.query("outcomes", run.all_nodes, _request(run, endpoints))
    by_endpoint, status_rows = _collect(run, replies, endpoints, noisy)
    results: dict[str, Any] = {
        "model": settings.model,
        "threshold": settings.threshold,
        "resolution-days": settings.resolution_days,
        "horizon-days": settings.horizon_days,
        "ties": settings.ties,
        "dp": noisy,
        "site-status": status_rows,
        "endpoints": {},
    }
    for endpoint, found in by_endpoint.items():
        if not (found.counts or found.strata or found.fits):
            logger.info("outcomes %s: no site has usable follow-up", endpoint)
            continue
        results["endpoints"][endpoint] = _analyse(run, endpoint, found, noisy)
    if noisy:
        record_statistics_spending(run, run.results.pop("outcome-spending", {}))
    run.results["outcomes"] = results
    run.write_json("outcomes.json", results)
