"""Validation at a site: score models on local scans, release only aggregates.

Per-patient scores exist only inside these functions. What they return is
what the site may send: per-model metrics with bootstrap CIs, per-class score
histograms, site-level paired DeLong tests, and sums of structural components
against the server's pooled distributions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from fedbone.classifier.local import labelled_rows, predict
from fedbone.data.cache import SiteCache
from fedbone.models import ClassifierSpec, build_classifier
from fedbone.models.parameters import load_arrays
from fedbone.validation.delong import delong_paired_test
from fedbone.validation.histograms import ScoreHistograms, score_histograms
from fedbone.validation.metrics import binary_metrics
from fedbone.validation.pooled_roc import paired_component_sums

__all__ = ["paired_components", "score_models", "validate_models"]

Arrays = Mapping[str, np.ndarray]


def score_models(
    cache: SiteCache,
    task: str,
    spec: ClassifierSpec,
    models: Mapping[str, Arrays],
    split: str,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Return the labels of the scored scans and each model's probabilities.

    Parameters
    ----------
    cache
        The site's prepared cache.
    task
        ``bm`` or ``ca``; scans with an unknown label are skipped.
    spec
        How to build the models.
    models
        Weights (state-dict name -> array) by model name.
    split
        The split scored (``train``, ``val`` or ``test``).
    """
    rows, labels = labelled_rows(cache, task, split)
    labels = labels.astype(np.int64)
    scores: dict[str, np.ndarray] = {}
    for name, arrays in models.items():
        model = build_classifier(spec)
        load_arrays(model, arrays)
        scores[name] = predict(model, cache, rows)
    return labels, scores


def _nan_if_undefined(value: float) -> float:
    return float(value) if math.isfinite(value) else math.nan


def validate_models(
    cache: SiteCache,
    task: str,
    spec: ClassifierSpec,
    models: Mapping[str, Arrays],
    *,
    split: str,
    bins: int,
    n_bootstrap: int,
    threshold: float,
    pairs: Sequence[tuple[str, str]],
) -> dict[str, dict[str, float | int | list[int]]]:
    """Per-model metrics and histograms, and paired tests, keyed by record name.

    Records: ``metrics-<model>`` (n, n-pos, n-neg, AUC, sensitivity and
    specificity at ``threshold`` with bootstrap 95% CIs), ``histograms-<model>``
    (per-class score counts over ``bins`` equal bins of [0, 1]) and
    ``paired-<a>-vs-<b>`` (DeLong test on this site's patients).

    Parameters
    ----------
    cache
        The site's prepared cache.
    task
        ``bm`` or ``ca``; scans with an unknown label are skipped.
    spec
        How to build the models.
    models
        Weights (state-dict name -> array) by model name.
    split
        The split scored (``train``, ``val`` or ``test``).
    bins
        Equal-width score bins of [0, 1] per histogram.
    n_bootstrap
        Stratified bootstrap replicates for the 95% CIs.
    threshold
        Operating point: a scan is called positive if its score is at least
        this.
    pairs
        ``(a, b)`` model names to compare; skipped when the site lacks one of
        the two classes.
    """
    labels, scores = score_models(cache, task, spec, models, split)
    records: dict[str, dict[str, float | int | list[int]]] = {}
    for name, model_scores in scores.items():
        m = binary_metrics(
            labels, model_scores, threshold=threshold, n_bootstrap=n_bootstrap
        )
        values: dict[str, float | int | list[int]] = {
            "n": m.n,
            "n-pos": m.n_positive,
            "n-neg": m.n_negative,
        }
        for measure, estimate in (
            ("auc", m.auc),
            ("sensitivity", m.sensitivity),
            ("specificity", m.specificity),
        ):
            values[measure] = _nan_if_undefined(estimate.value)
            values[f"{measure}-low"] = _nan_if_undefined(estimate.low)
            values[f"{measure}-high"] = _nan_if_undefined(estimate.high)
        records[f"metrics-{name}"] = values
        histograms = score_histograms(labels, model_scores, bins=bins).to_dict()
        records[f"histograms-{name}"] = {
            "positives": histograms["positives"],
            "negatives": histograms["negatives"],
        }
    both_classes = 0 < int(labels.sum()) < len(labels)
    for a, b in pairs:
        if not both_classes:
            continue
        test = delong_paired_test(labels, scores[a], scores[b])
        records[f"paired-{a}-vs-{b}"] = {
            "difference": _nan_if_undefined(test.difference),
            "se": _nan_if_undefined(test.se),
            "z": _nan_if_undefined(test.z),
            "p-value": _nan_if_undefined(test.p_value),
        }
    return records


def paired_components(
    cache: SiteCache,
    task: str,
    spec: ClassifierSpec,
    models: Mapping[str, Arrays],
    pooled: Mapping[str, ScoreHistograms],
    *,
    split: str,
    pairs: Sequence[tuple[str, str]],
) -> dict[str, dict[str, float | int]]:
    """Return this site's DeLong component sums against the pooled distributions.

    Parameters
    ----------
    cache
        The site's prepared cache.
    task
        ``bm`` or ``ca``; scans with an unknown label are skipped.
    spec
        How to build the models.
    models
        Weights (state-dict name -> array) by model name.
    pooled
        Pooled score histograms by model name, over every site (this one
        included), as the server sent them back.
    split
        The split scored (the one the pooled histograms were built on).
    pairs
        ``(a, b)`` model names to compare; one ``components-<a>-vs-<b>``
        record each.
    """
    labels, scores = score_models(cache, task, spec, models, split)
    records: dict[str, dict[str, float | int]] = {}
    for a, b in pairs:
        sums = paired_component_sums(labels, scores[a], scores[b], pooled[a], pooled[b])
        records[f"components-{a}-vs-{b}"] = sums.to_dict()
    return records
