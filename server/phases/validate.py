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
import math
from typing import Any

from flwr.app import ConfigRecord, MetricRecord, RecordDict

from fedbone.federation.records import arrays_to_record
from fedbone.federation.study_messages import metric_floats
from fedbone.validation.histograms import pool_histograms
from fedbone.validation.pooled_roc import (
    PairedComponentSums,
    ScoreHistograms,
    pooled_paired_test,
    pooled_roc,
)
from server.study_run import StudyRun

__all__ = ["comparison_pairs", "record_statistics_spending", "run_validate"]

logger = logging.getLogger(__name__)


def comparison_pairs(model_names: list[str]) -> list[tuple[str, str]]:
    """Return the paired comparisons the study reports.

    ``(federated, baseline)`` for every baseline that was trained, and
    ``(local-<site>-syn<r>, local-<site>)`` for every model trained with
    synthetic images against the same site trained on its real scans alone.
    """
    pairs = []
    if "federated" in model_names:
        pairs += [("federated", name) for name in model_names if name != "federated"]
    for name in model_names:
        if name.startswith("local-") and "-syn" in name:
            base = name[: name.rindex("-syn")]
            if base in model_names:
                pairs.append((name, base))
    return pairs


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


def _private_site_row(
    site: str, name: str, histograms: ScoreHistograms, threshold: float
) -> dict[str, Any]:
    """Per-site figures from a site's noisy histograms (post-processing)."""
    roc = pooled_roc([histograms], threshold=threshold)
    return {
        "site": site,
        "model": name,
        "n": roc.n_positive + roc.n_negative,
        "n-pos": roc.n_positive,
        "n-neg": roc.n_negative,
        "auc": roc.auc,
        "auc-low": roc.auc_ci.low,
        "auc-high": roc.auc_ci.high,
        # Intervals for these would need exact counts; the noisy ones give
        # the point values only.
        "sensitivity": roc.sensitivity_at,
        "sensitivity-low": math.nan,
        "sensitivity-high": math.nan,
        "specificity": roc.specificity_at,
        "specificity-low": math.nan,
        "specificity-high": math.nan,
    }


def run_validate(run: StudyRun) -> None:
    """Score every model at every site; pool the results at the server."""
    names = list(run.models)
    pairs = comparison_pairs(names)
    content = RecordDict({"config": _validate_config(run, pairs)})
    for name, arrays in run.models.items():
        content[f"model-{name}"] = arrays_to_record(arrays)
    replies = run.query("validate", run.all_nodes, content)

    private = run.study.dp.statistics is not None
    per_site: list[dict[str, Any]] = []
    by_node: dict[int, dict[str, ScoreHistograms]] = {}
    site_pairs: list[dict[str, Any]] = []
    spent: dict[str, dict[str, float]] = {}
    for reply in replies:
        site = run.site_of(reply.metadata.src_node_id)
        records = reply.content.metric_records
        node_histograms = by_node.setdefault(reply.metadata.src_node_id, {})
        if private:
            spent[site] = metric_floats(records["privacy"])
            for name in names:
                node_histograms[name] = _histograms(records[f"noisy-histograms-{name}"])
                per_site.append(
                    _private_site_row(
                        site,
                        name,
                        node_histograms[name],
                        run.study.validation.threshold,
                    )
                )
            continue
        for name in names:
            row: dict[str, Any] = {"site": site, "model": name}
            row.update(metric_floats(records[f"metrics-{name}"]))
            per_site.append(row)
            node_histograms[name] = _histograms(records[f"histograms-{name}"])
        for a, b in pairs:
            key = f"paired-{a}-vs-{b}"
            if key in records:
                pair_row: dict[str, Any] = {"site": site, "model_a": a, "model_b": b}
                pair_row.update(metric_floats(records[key]))
                site_pairs.append(pair_row)

    answered = sorted(by_node)
    external = [n for n in answered if run.sites[n].role == "validate-only"]
    scopes = {"pooled": answered, "external": external}
    results: dict[str, Any] = {"per_site": per_site, "site_pairs": site_pairs}
    if private:
        logger.info(
            "validation released noisy histograms only (dp.statistics); paired "
            "DeLong tests are not run under DP statistics"
        )
        results["dp_statistics"] = spent
        record_statistics_spending(run, spent)
    for scope, nodes in scopes.items():
        if not nodes:
            continue
        histograms = {name: [by_node[n][name] for n in nodes] for name in names}
        suffix = "" if scope == "pooled" else f"_{scope}"
        results[f"pooled{suffix}"] = {
            name: pooled_roc(histograms[name]) for name in names
        }
        results[f"pooled_pairs{suffix}"] = (
            [] if private else _pooled_comparisons(run, pairs, histograms, nodes)
        )
        _log_pooled(scope, results[f"pooled{suffix}"])
    run.results["validation"] = results


def record_statistics_spending(
    run: StudyRun, spent: dict[str, dict[str, float]]
) -> None:
    """Add each site's statistics ε and ledger total to the study's privacy table.

    A site's statistics ε adds up over the phases that released noisy
    statistics (validation, outcomes); its ledger total is the latest.
    """
    privacy = run.results.setdefault("privacy", {})
    for site, values in spent.items():
        row = privacy.setdefault(site, {})
        row["statistics-epsilon"] = (
            row.get("statistics-epsilon", 0.0) + values["statistics-epsilon"]
        )
        row["epsilon-total"] = values["epsilon-spent"]
        row["delta-total"] = values["delta-spent"]
    run.write_json("privacy.json", privacy)


def _log_pooled(scope: str, pooled: dict[str, Any]) -> None:
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
    histograms: dict[str, list[ScoreHistograms]],
    nodes: list[int],
) -> list[dict[str, Any]]:
    """Pooled paired DeLong tests from the sites that gave the histograms.

    The component sums must come from exactly the sites whose histograms were
    pooled; if one of them fails now, the pooled tests are skipped (logged).
    """
    if not pairs:
        return []
    pooled_hist = {name: pool_histograms(h) for name, h in histograms.items() if h}
    content = RecordDict({"config": _validate_config(run, pairs)})
    for name in {n for pair in pairs for n in pair}:
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
    results = []
    for a, b in pairs:
        sums = [
            PairedComponentSums.from_dict(
                dict(reply.content.metric_records[f"components-{a}-vs-{b}"])
            )
            for reply in replies
        ]
        test = pooled_paired_test(sums, pooled_hist[a], pooled_hist[b])
        results.append({"model_a": a, "model_b": b, "test": test})
        logger.info(
            "pooled DeLong %s vs %s: AUC difference %.3f, p = %.3g",
            a,
            b,
            test.difference,
            test.p_value,
        )
    return results
