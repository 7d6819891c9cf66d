"""Validation at a site: score models on local scans, release only aggregates.

Per-patient scores exist only inside these functions. What they return is
what the site may send: per-model metrics with bootstrap CIs, per-class score
histograms, site-level paired DeLong tests, and sums of structural components
against the server's pooled distributions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedbone.classifier.folds import ensemble_scores, is_ensemble, unpack_ensemble
from fedbone.classifier.local import labelled_rows, predict
from fedbone.data.cache import SiteCache
from fedbone.models import ClassifierSpec, build_classifier
from fedbone.models.parameters import load_arrays
from fedbone.validation.delong import delong_paired_test
from fedbone.validation.histograms import ScoreHistograms, score_histograms
from fedbone.validation.metrics import binary_metrics
from fedbone.validation.pooled_roc import paired_component_sums

__all__ = [
    "ScoredModels",
    "paired_components",
    "score_models",
    "score_models_with_members",
    "validate_models",
]

Arrays = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class ScoredModels:
    """Every model's probability for each scored scan.

    Parameters
    ----------
    labels
        The scored scans' 0/1 labels.
    scores
        Probability per scan by model name; an ensemble's is its members'
        mean probability (its ROC score).
    members
        For each ensemble, its members' probabilities ``(models, scans)``;
        its calls are their majority vote.
    """

    labels: np.ndarray
    scores: dict[str, np.ndarray]
    members: dict[str, np.ndarray]


def score_models_with_members(
    cache: SiteCache,
    task: str,
    spec: ClassifierSpec,
    models: Mapping[str, Arrays],
    split: str,
) -> ScoredModels:
    """Score every model; an ensemble (one record of fold models) by each member.

    Parameters
    ----------
    cache
        The site's prepared cache.
    task
        ``bm`` or ``ca``; scans with an unknown label are skipped.
    spec
        How to build the models (every member of an ensemble too).
    models
        Weights by model name; an ensemble's as
        :func:`~fedbone.classifier.folds.pack_ensemble` made them.
    split
        The split scored.

    Raises
    ------
    TrainingError
        For an ensemble record that is not ``member-<j>.<key>`` arrays of at
        most :data:`~fedbone.classifier.folds.MAX_MEMBERS` models.
    """
    rows, labels = labelled_rows(cache, task, split)
    scores: dict[str, np.ndarray] = {}
    members: dict[str, np.ndarray] = {}

    def probabilities(arrays: Arrays) -> np.ndarray:
        model = build_classifier(spec)
        load_arrays(model, arrays)
        return predict(model, cache, rows)

    for name, arrays in models.items():
        if is_ensemble(dict(arrays)):
            each = np.stack([probabilities(m) for m in unpack_ensemble(dict(arrays))])
            members[name] = each
            scores[name] = ensemble_scores(each).mean_probability
        else:
            scores[name] = probabilities(arrays)
    return ScoredModels(labels.astype(np.int64), scores, members)


def score_models(
    cache: SiteCache,
    task: str,
    spec: ClassifierSpec,
    models: Mapping[str, Arrays],
    split: str,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Return the labels of the scored scans and each model's probabilities.

    An ensemble (:func:`~fedbone.classifier.folds.pack_ensemble`) scores its
    members' mean probability.

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
    scored = score_models_with_members(cache, task, spec, models, split)
    return scored.labels, scored.scores


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
    specificity at ``threshold`` with bootstrap 95% CIs; an ensemble's AUC is
    of its mean probability, its sensitivity and specificity of its members'
    majority vote at ``threshold``), ``histograms-<model>``
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
    scored = score_models_with_members(cache, task, spec, models, split)
    labels, scores = scored.labels, scored.scores
    records: dict[str, dict[str, float | int | list[int]]] = {}
    for name, model_scores in scores.items():
        m = binary_metrics(
            labels, model_scores, threshold=threshold, n_bootstrap=n_bootstrap
        )
        calls = m
        if name in scored.members:
            vote = ensemble_scores(scored.members[name], threshold=threshold).vote
            calls = binary_metrics(
                labels, vote.astype(np.float64), threshold=0.5, n_bootstrap=n_bootstrap
            )
        values: dict[str, float | int | list[int]] = {
            "n": m.n,
            "n-pos": m.n_positive,
            "n-neg": m.n_negative,
        }
        for measure, estimate in (
            ("auc", m.auc),
            ("sensitivity", calls.sensitivity),
            ("specificity", calls.specificity),
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
