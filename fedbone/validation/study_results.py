"""The study's validation tables, assembled from what every site sent.

Every site scores every model and sends, per model, its metrics with
bootstrap intervals and its per-class score histograms (or, under the study's
``dp.statistics``, noisy histograms only). These functions turn those plain
values into the study's tables: one row per site and model, the sites' own
paired tests, and the pooled ROC of every model over all sites and over the
external (validation-only) sites alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fedbone.validation.histograms import ScoreHistograms, pool_histograms
from fedbone.validation.pooled_roc import (
    PairedComponentSums,
    PooledROC,
    pooled_paired_test,
    pooled_roc,
)

__all__ = [
    "SiteValidation",
    "ValidationResults",
    "comparison_pairs",
    "pooled_comparisons",
    "pooled_histograms",
    "pooled_rocs",
    "private_site_row",
    "site_tables",
]


@dataclass
class SiteValidation:
    """What one site sent back for validation, as plain values.

    ``metrics`` (exact validation only) and ``histograms`` are keyed by model
    name; ``paired`` by ``(model_a, model_b)``; ``spending`` is the site's
    privacy spending under ``dp.statistics`` (``None`` otherwise).
    """

    site: str
    external: bool
    histograms: dict[str, ScoreHistograms]
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    paired: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    spending: dict[str, float] | None = None


@dataclass
class ValidationResults:
    """The validation phase's tables.

    ``pooled`` maps a model to its :class:`PooledROC` over every site that
    answered, ``pooled_external`` over validation-only sites; the ``*_pairs``
    lists hold ``{"model_a", "model_b", "test"}`` pooled DeLong tests.
    ``dp_statistics`` is each site's spending under ``dp.statistics``.
    """

    per_site: list[dict[str, Any]] = field(default_factory=list)
    site_pairs: list[dict[str, Any]] = field(default_factory=list)
    pooled: dict[str, PooledROC] = field(default_factory=dict)
    pooled_pairs: list[dict[str, Any]] = field(default_factory=list)
    pooled_external: dict[str, PooledROC] = field(default_factory=dict)
    pooled_pairs_external: list[dict[str, Any]] = field(default_factory=list)
    dp_statistics: dict[str, dict[str, float]] | None = None


def comparison_pairs(model_names: Sequence[str]) -> list[tuple[str, str]]:
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


def private_site_row(
    site: str, model: str, histograms: ScoreHistograms, threshold: float
) -> dict[str, Any]:
    """Return a site's figures computed from its noisy histograms.

    Post-processing of released noisy counts: the point values only, since
    intervals would need the exact counts.

    Parameters
    ----------
    site, model
        Whose histograms and of which model.
    histograms
        The site's noisy per-class score histograms.
    threshold
        Decision threshold for sensitivity and specificity.
    """
    roc = pooled_roc([histograms], threshold=threshold)
    return {
        "site": site,
        "model": model,
        "n": roc.n_positive + roc.n_negative,
        "n-pos": roc.n_positive,
        "n-neg": roc.n_negative,
        "auc": roc.auc,
        "auc-low": roc.auc_ci.low,
        "auc-high": roc.auc_ci.high,
        "sensitivity": roc.sensitivity_at,
        "sensitivity-low": math.nan,
        "sensitivity-high": math.nan,
        "specificity": roc.specificity_at,
        "specificity-low": math.nan,
        "specificity-high": math.nan,
    }


def site_tables(
    sites: Sequence[SiteValidation],
    models: Sequence[str],
    pairs: Sequence[tuple[str, str]],
    *,
    private_threshold: float | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Return the per-site rows and the sites' own paired-test rows.

    Parameters
    ----------
    sites
        Every site's reply, in the order the rows should follow.
    models
        The models every site scored.
    pairs
        The paired comparisons the sites were asked for.
    private_threshold
        Under ``dp.statistics``: the decision threshold; rows are then
        computed here from the noisy histograms and no paired rows exist.
    """
    per_site: list[dict[str, Any]] = []
    site_pairs: list[dict[str, Any]] = []
    for reply in sites:
        if private_threshold is not None:
            per_site += [
                private_site_row(
                    reply.site, model, reply.histograms[model], private_threshold
                )
                for model in models
            ]
            continue
        for model in models:
            per_site.append(
                {"site": reply.site, "model": model, **reply.metrics[model]}
            )
        for a, b in pairs:
            if (a, b) in reply.paired:
                site_pairs.append(
                    {"site": reply.site, "model_a": a, "model_b": b}
                    | reply.paired[(a, b)]
                )
    return per_site, site_pairs


def pooled_rocs(
    sites: Sequence[SiteValidation], models: Sequence[str]
) -> dict[str, PooledROC]:
    """Return every model's ROC pooled over ``sites`` (sites' order kept)."""
    return {model: pooled_roc([s.histograms[model] for s in sites]) for model in models}


def pooled_histograms(
    sites: Sequence[SiteValidation], models: Iterable[str]
) -> dict[str, ScoreHistograms]:
    """Return every model's histograms summed over ``sites``."""
    return {
        model: pool_histograms([s.histograms[model] for s in sites]) for model in models
    }


def pooled_comparisons(
    pairs: Sequence[tuple[str, str]],
    sums: Mapping[tuple[str, str], Sequence[PairedComponentSums]],
    pooled: Mapping[str, ScoreHistograms],
) -> list[dict[str, Any]]:
    """Return the pooled paired DeLong test of every pair.

    Parameters
    ----------
    pairs
        The comparisons, in report order.
    sums
        Per pair, every pooled site's structural component sums.
    pooled
        Per model, the pooled histograms the sums were computed against.
    """
    return [
        {
            "model_a": a,
            "model_b": b,
            "test": pooled_paired_test(sums[(a, b)], pooled[a], pooled[b]),
        }
        for a, b in pairs
    ]
