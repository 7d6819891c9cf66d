from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.metrics import roc_auc_score

from fedbone.validation.bootstrap import (
    auc_statistic,
    sensitivity_statistic,
    specificity_statistic,
)
from fedbone.validation.errors import EvaluationError
from fedbone.validation.metrics import (
    BinaryMetrics,
    binary_metrics,
    bootstrap_ci,
    roc_auc,
)


def scored_cohort(
    n: int, prevalence: float, seed: int
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
    """Probabilities piled up near 0 and 1, as a trained classifier gives."""
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < prevalence
    scores = np.where(labels, rng.beta(3.0, 1.0, n), rng.beta(0.6, 3.0, n))
    return labels, scores


def test_roc_auc_counts_tied_pairs_as_half() -> None:
    # Prepare: one discordant pair out of four; then a single tied pair
    labels = [0, 0, 1, 1]
    scores = [0.1, 0.4, 0.35, 0.8]

    # Execute
    auc = roc_auc(labels, scores)
    tied = roc_auc([1, 0], [0.5, 0.5])

    # Assert
    assert auc == pytest.approx(0.75)
    assert tied == pytest.approx(0.5)


def test_roc_auc_matches_scikit_learn_with_many_ties() -> None:
    # Prepare: scores rounded to 2 decimals, so ties are frequent
    labels, scores = scored_cohort(800, 0.3, seed=1)
    scores = np.round(scores, 2)

    # Execute
    auc = roc_auc(labels, scores)

    # Assert
    assert auc == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_roc_auc_is_nan_when_a_class_is_absent() -> None:
    # Execute / Assert
    assert math.isnan(roc_auc([1, 1, 1], [0.2, 0.5, 0.9]))
    assert math.isnan(roc_auc([], []))


def test_binary_metrics_call_a_score_of_exactly_the_threshold_positive() -> None:
    # Prepare: 4 positives (one at 0.49 missed), 5 negatives (one at 0.5 called)
    labels = [1, 1, 1, 1, 0, 0, 0, 0, 0]
    scores = [0.9, 0.5, 0.49, 0.7, 0.1, 0.5, 0.2, 0.3, 0.0]

    # Execute
    metrics = binary_metrics(labels, scores, n_bootstrap=200)

    # Assert
    assert (metrics.n, metrics.n_positive, metrics.n_negative) == (9, 4, 5)
    assert metrics.threshold == 0.5
    assert metrics.sensitivity.value == pytest.approx(3 / 4)
    assert metrics.specificity.value == pytest.approx(4 / 5)
    assert metrics.auc.value == pytest.approx(roc_auc(labels, scores))
    assert metrics.auc_delong.value == pytest.approx(metrics.auc.value)


def test_binary_metrics_intervals_bracket_the_estimates() -> None:
    # Prepare
    labels, scores = scored_cohort(600, 0.25, seed=2)

    # Execute
    metrics = binary_metrics(labels, scores)

    # Assert
    for estimate in (
        metrics.auc,
        metrics.sensitivity,
        metrics.specificity,
        metrics.auc_delong,
    ):
        assert 0.0 <= estimate.low < estimate.value < estimate.high <= 1.0


def test_bootstrap_is_reproducible_with_a_seed() -> None:
    # Prepare
    labels, scores = scored_cohort(300, 0.3, seed=3)

    # Execute
    first = bootstrap_ci(labels, scores, auc_statistic, seed=7)
    again = bootstrap_ci(labels, scores, auc_statistic, seed=7)
    other = bootstrap_ci(labels, scores, auc_statistic, seed=8)

    # Assert
    assert first == again
    assert first != other


def test_binary_metrics_use_the_replicates_of_bootstrap_ci() -> None:
    # Prepare
    labels, scores = scored_cohort(300, 0.3, seed=4)

    # Execute
    metrics = binary_metrics(labels, scores, seed=11, n_bootstrap=300)
    auc_interval = bootstrap_ci(labels, scores, auc_statistic, seed=11, n_bootstrap=300)
    sensitivity_interval = bootstrap_ci(
        labels, scores, sensitivity_statistic(0.5), seed=11, n_bootstrap=300
    )
    specificity_interval = bootstrap_ci(
        labels, scores, specificity_statistic(0.5), seed=11, n_bootstrap=300
    )

    # Assert
    assert (metrics.auc.low, metrics.auc.high) == auc_interval
    assert (metrics.sensitivity.low, metrics.sensitivity.high) == sensitivity_interval
    assert (metrics.specificity.low, metrics.specificity.high) == specificity_interval


def test_auc_statistic_gives_each_replicate_its_own_auc() -> None:
    # Prepare: arbitrary replicates, with ties among the scores
    labels, scores = scored_cohort(120, 0.4, seed=5)
    scores = np.round(scores, 1)
    rng = np.random.default_rng(0)
    indices = rng.integers(0, labels.size, size=(25, labels.size))

    # Execute
    replicate_aucs = auc_statistic(labels, scores, indices)

    # Assert
    expected = [roc_auc(labels[rows], scores[rows]) for rows in indices]
    np.testing.assert_allclose(replicate_aucs, expected, rtol=0, atol=1e-12)


def test_stratified_replicates_keep_the_class_sizes() -> None:
    # Prepare: a statistic that reports how many positives each replicate drew
    labels, scores = scored_cohort(200, 0.1, seed=6)
    drawn: list[npt.NDArray[np.float64]] = []

    def positives_drawn(
        positive: npt.NDArray[np.bool_],
        values: npt.NDArray[np.float64],
        indices: npt.NDArray[np.intp],
    ) -> npt.NDArray[np.float64]:
        counts = positive[indices].sum(axis=1).astype(np.float64)
        drawn.append(counts)
        return counts

    # Execute
    stratified = bootstrap_ci(labels, scores, positives_drawn, n_bootstrap=100)
    bootstrap_ci(labels, scores, positives_drawn, n_bootstrap=100, stratified=False)

    # Assert
    assert stratified == (labels.sum(), labels.sum())
    assert np.ptp(drawn[1]) > 0


def test_unstratified_bootstrap_skips_replicates_missing_a_class() -> None:
    # Prepare: one positive among eight, so many replicates draw none
    labels = [1, 0, 0, 0, 0, 0, 0, 0]
    scores = [0.9, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.95]

    # Execute
    low, high = bootstrap_ci(
        labels, scores, auc_statistic, n_bootstrap=500, stratified=False
    )

    # Assert
    assert 0.0 <= low <= high <= 1.0


def test_metrics_needing_an_absent_class_are_nan() -> None:
    # Prepare: no negatives
    labels = [1, 1, 1, 1]
    scores = [0.2, 0.6, 0.7, 0.9]

    # Execute
    metrics = binary_metrics(labels, scores, n_bootstrap=100)

    # Assert
    assert metrics.sensitivity.value == pytest.approx(3 / 4)
    assert math.isfinite(metrics.sensitivity.low)
    for estimate in (metrics.auc, metrics.specificity, metrics.auc_delong):
        assert all(math.isnan(x) for x in (estimate.value, estimate.low, estimate.high))


def test_binary_metrics_travel_as_one_flat_record_of_scalars() -> None:
    # Prepare
    labels, scores = scored_cohort(200, 0.3, seed=8)
    metrics = binary_metrics(labels, scores, n_bootstrap=100)

    # Execute
    flat = metrics.to_dict()
    restored = BinaryMetrics.from_dict(json.loads(json.dumps(flat)))

    # Assert
    assert restored == metrics
    assert all(isinstance(value, int | float) for value in flat.values())
    assert flat["auc-delong-low"] == metrics.auc_delong.low


def test_bool_labels_are_accepted() -> None:
    # Execute / Assert
    assert roc_auc([True, False], [0.9, 0.1]) == 1.0


def test_every_input_problem_is_reported_at_once() -> None:
    # Prepare: a label 2, one score short, and a NaN score
    labels = [0, 1, 2]
    scores = [0.1, math.nan]

    # Execute
    with pytest.raises(EvaluationError) as caught:
        binary_metrics(labels, scores)

    # Assert
    assert caught.value.codes == [
        "labels-not-binary",
        "length-mismatch",
        "scores-not-finite",
    ]
    assert isinstance(caught.value, ValueError)


def test_operating_point_must_be_finite() -> None:
    # Execute
    with pytest.raises(EvaluationError) as caught:
        binary_metrics([0, 1], [0.2, 0.8], threshold=math.nan)

    # Assert
    assert caught.value.codes == ["bad-threshold"]


@pytest.mark.parametrize(
    ("settings", "code"),
    [
        ({"n_bootstrap": 0}, "bad-bootstrap-count"),
        ({"confidence": 1.5}, "bad-confidence"),
    ],
)
def test_bad_bootstrap_settings_are_refused(
    settings: dict[str, Any], code: str
) -> None:
    # Prepare
    labels, scores = scored_cohort(50, 0.5, seed=9)

    # Execute
    with pytest.raises(EvaluationError) as caught:
        bootstrap_ci(labels, scores, auc_statistic, **settings)

    # Assert
    assert caught.value.codes == [code]
