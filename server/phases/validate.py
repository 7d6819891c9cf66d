"""Phase ``validate``: shared external validation of every trained model.

Every site (train sites on their test split, validation-only sites on all
their scans) scores every model. Per-site metrics with bootstrap CIs are
computed at the site; the pooled ROC, AUC and DeLong CI come from per-class
score histograms; the pooled paired DeLong test of the federated model against
each baseline takes a second exchange in which sites return only sums of their
patients' structural components against the pooled distributions. No score of
any patient leaves a site.

Under the study's ``dp.statistics`` each site sends only noisy histograms
(charged to its privacy ledger); its per-site figures are computed here from
them, and the paired DeLong tests, which would need further exact releases,
are not run.
"""

from __future__ import annotations

import logging
from typing import Any

from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from fedbone.federation.records import arrays_to_record
from fedbone.federation.study_messages import metric_floats
from fedbone.privacy.study_privacy import add_statistics_spending
from fedbone.validation.pooled_roc import (
    PairedComponentSums,
    PooledROC,
    ScoreHistograms,
)
from fedbone.validation.study_results import (
    SiteValidation,
    ValidationResults,
    comparison_pairs,
    pooled_comparisons,
    pooled_histograms,
    pooled_rocs,
    site_tables,
)
from server.study_run import StudyRun

__all__ = ["comparison_pairs", "record_statistics_spending", "run_validate"]

logger = logging.getLogger(__name__)

#: Census role of sites that only validate (external validation).
VALIDATE_ONLY = "validate-only"


def _validate_config(run: StudyRun, pairs: list[tuple[str, str]]) -> ConfigRecord:
    v = run.study.validation
    values: dict[str, Any] = {
        "split": v.split,
        "bins": v.bins,
        "n-bootstrap": v.n_bootstrap,
        "threshold": v.threshold,
        "models": list(run.models),
        "pairs": [f"{a}|{b}" for a, b in pairs],
    }
    if run.study.dp.statistics is not None:
        values.update(run.study.dp.statistics.to_config())
    return run.config("validate", values)


def _histograms(record: Any) -> ScoreHistograms:
    return ScoreHistograms.from_dict(
        {"positives": record["positives"], "negatives": record["negatives"]}
    )


def _site_validation(
    run: StudyRun,
    reply: Message,
    names: list[str],
    pairs: list[tuple[str, str]],
) -> SiteValidation:
    """Unpack one site's validation reply into plain values."""
    node = reply.metadata.src_node_id
    records = reply.content.metric_records
    external = run.sites[node].role == VALIDATE_ONLY
    if run.study.dp.statistics is not None:
        return SiteValidation(
            site=run.site_of(node),
            external=external,
            histograms={
                name: _histograms(records[f"noisy-histograms-{name}"]) for name in names
            },
            spending=metric_floats(records["privacy"]),
        )
    return SiteValidation(
        site=run.site_of(node),
        external=external,
        histograms={name: _histograms(records[f"histograms-{name}"]) for name in names},
        metrics={name: metric_floats(records[f"metrics-{name}"]) for name in names},
        paired={
            (a, b): metric_floats(records[f"paired-{a}-vs-{b}"])
            for a, b in pairs
            if f"paired-{a}-vs-{b}" in records
        },
    )


def run_validate(run: StudyRun) -> None:
    """Score every model at every site; pool the results at the server."""
    names = list(run.models)
    pairs = comparison_pairs(names)
    content = RecordDict({"config": _validate_config(run, pairs)})
    for name, arrays in run.models.items():
        content[f"model-{name}"] = arrays_to_record(arrays)
    replies = run.query("validate", run.all_nodes, content)

    private = run.study.dp.statistics is not None
    by_node = {
        reply.metadata.src_node_id: _site_validation(run, reply, names, pairs)
        for reply in replies
    }
    per_site, site_pairs = site_tables(
        list(by_node.values()),
        names,
        pairs,
        private_threshold=run.study.validation.threshold if private else None,
    )
    results = ValidationResults(per_site=per_site, site_pairs=site_pairs)
    if private:
        logger.info(
            "validation released noisy histograms only (dp.statistics); paired "
            "DeLong tests are not run under DP statistics"
        )
        spent = {s.site: s.spending or {} for s in by_node.values()}
        results.dp_statistics = spent
        record_statistics_spending(run, spent)
    answered = sorted(by_node)
    external = [n for n in answered if by_node[n].external]
    if answered:
        results.pooled, results.pooled_pairs = _pool(
            run, "pooled", pairs, by_node, answered
        )
    if external:
        results.pooled_external, results.pooled_pairs_external = _pool(
            run, "external", pairs, by_node, external
        )
    run.validation_results = results


def _pool(
    run: StudyRun,
    scope: str,
    pairs: list[tuple[str, str]],
    by_node: dict[int, SiteValidation],
    nodes: list[int],
) -> tuple[dict[str, PooledROC], list[dict[str, Any]]]:
    """Pooled ROCs and paired tests over ``nodes`` (no paired tests under DP)."""
    sites = [by_node[n] for n in nodes]
    pooled = pooled_rocs(sites, list(run.models))
    _log_pooled(scope, pooled)
    if run.study.dp.statistics is not None:
        return pooled, []
    return pooled, _pooled_comparisons(run, pairs, sites, nodes)


def record_statistics_spending(
    run: StudyRun, spent: dict[str, dict[str, float]]
) -> None:
    """Add each site's statistics ε and ledger total to the study's privacy table.

    A site's statistics ε adds up over the phases that released noisy
    statistics (validation, outcomes); its ledger total is the latest.
    """
    privacy = run.results.setdefault("privacy", {})
    add_statistics_spending(privacy, spent)
    run.write_json("privacy.json", privacy)


def _holds_scans(histograms: ScoreHistograms) -> bool:
    counts = histograms.to_dict()
    return sum(counts["positives"]) + sum(counts["negatives"]) > 0


def _log_pooled(scope: str, pooled: dict[str, PooledROC]) -> None:
    for name, roc in pooled.items():
        logger.info(
            "%s %s: AUC %.3f (95%% CI %.3f-%.3f) over %d+ / %d- scans",
            scope,
            name,
            roc.auc,
            roc.auc_ci.low,
            roc.auc_ci.high,
            roc.n_positive,
            roc.n_negative,
        )


def _pooled_comparisons(
    run: StudyRun,
    pairs: list[tuple[str, str]],
    sites: list[SiteValidation],
    nodes: list[int],
) -> list[dict[str, Any]]:
    """Pooled paired DeLong tests from the sites that gave the histograms.

    The component sums must come from exactly the sites whose histograms were
    pooled; if one of them fails now, the pooled tests are skipped (logged).
    """
    if not pairs:
        return []
    compared = {n for pair in pairs for n in pair}
    # A site whose small class made its guard withhold the histograms (sent
    # empty) is not in the pooled distributions: it sends no components.
    kept = [
        (node, site)
        for node, site in zip(nodes, sites, strict=True)
        if any(_holds_scans(site.histograms[name]) for name in compared)
    ]
    if len(kept) < len(nodes):
        logger.info(
            "pooled DeLong: %d site(s) withheld their histograms (small class) "
            "and are left out",
            len(nodes) - len(kept),
        )
    nodes = [node for node, _ in kept]
    sites = [site for _, site in kept]
    if not nodes:
        return []
    pooled_hist = pooled_histograms(sites, compared)
    content = RecordDict({"config": _validate_config(run, pairs)})
    for name in compared:
        content[f"model-{name}"] = arrays_to_record(run.models[name])
        as_dict = pooled_hist[name].to_dict()
        content[f"pooled-{name}"] = MetricRecord(
            {"positives": as_dict["positives"], "negatives": as_dict["negatives"]}
        )
    replies = run.query("paired_components", nodes, content)
    if sorted(r.metadata.src_node_id for r in replies) != sorted(nodes):
        logger.warning(
            "pooled paired DeLong tests skipped: not every site that sent "
            "histograms returned its component sums"
        )
        return []
    sums = {
        (a, b): [
            PairedComponentSums.from_dict(
                dict(reply.content.metric_records[f"components-{a}-vs-{b}"])
            )
            for reply in replies
        ]
        for a, b in pairs
    }
    results = pooled_comparisons(pairs, sums, pooled_hist)
    for row in results:
        logger.info(
            "pooled DeLong %s vs %s: AUC difference %.3f, p = %.3g",
            row["model_a"],
            row["model_b"],
            row["test"].difference,
            row["test"].p_value,
        )
    return results
