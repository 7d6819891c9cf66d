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
from collections.abc import Callable, Sequence
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
from fedbone.outcomes.endpoint_analysis import (
    EndpointReleases,
    analyse_endpoint,
    record_site_status,
)
from fedbone.outcomes.stratified_cox import CoxDerivatives, FederatedCoxPH
from fedbone.outcomes.summary import cox_summary, ph_rows
from fedbone.validation.errors import EvaluationError
from server.phases.validate import record_statistics_spending
from server.study_run import StudyError, StudyRun

__all__ = ["run_outcomes"]

logger = logging.getLogger(__name__)


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
) -> tuple[dict[str, EndpointReleases], list[dict[str, Any]]]:
    """Sort every reply's records by endpoint; list every site's status."""
    by_endpoint = {endpoint: EndpointReleases() for endpoint in endpoints}
    status_rows = []
    prefix = "noisy-survival-" if noisy else "survival-"
    for reply in sorted(replies, key=lambda r: run.site_of(r.metadata.src_node_id)):
        node = reply.metadata.src_node_id
        site = run.site_of(node)
        content = reply.content
        status = content.config_records.get(OUTCOME_STATUS_RECORD, ConfigRecord())
        status_rows += record_site_status(by_endpoint, site, node, status)
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


def _cox_fitter(
    run: StudyRun, endpoint: str
) -> Callable[[str, list[int]], dict[str, Any]]:
    """``(Cox model, strata nodes) -> summary``, the strata in site order."""

    def fit(model: str, nodes: list[int]) -> dict[str, Any]:
        return _federated_cox(run, endpoint, model, sorted(nodes, key=run.site_of))

    return fit


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
        if not found.usable:
            logger.info("outcomes %s: no site has usable follow-up", endpoint)
            continue
        results["endpoints"][endpoint] = analyse_endpoint(
            endpoint,
            found,
            exact=not noisy,
            fit_cox=_cox_fitter(run, endpoint),
            recoverable=(EvaluationError, StudyError),
        )
    if noisy:
        record_statistics_spending(run, run.results.pop("outcome-spending", {}))
    run.results["outcomes"] = results
    run.write_json("outcomes.json", results)
