from __future__ import annotations

import json
import math

import numpy as np
import numpy.typing as npt
import pytest

from fedbone.validation.delong import PairedComparison, delong_ci, delong_paired_test
from fedbone.validation.errors import EvaluationError
from fedbone.validation.metrics import binary_metrics, roc_auc
from fedbone.validation.pooled_roc import (
    DEFAULT_BINS,
    PairedComponentSums,
    ScoreHistograms,
    paired_component_sums,
    pooled_paired_test,
    pooled_roc,
    score_histograms,
)

Site = tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]

# (patients, prevalence) of four simulated sites, like the paper's cohorts B-E
SITES = [(180, 0.38), (900, 0.08), (2000, 0.25), (450, 0.16)]


def simulated_sites(seed: int) -> list[Site]:
    """Labels and two models' probabilities per site, piled up near 0 and 1.

    Model B is model A plus noise: correlated, a little weaker. A few scores
    sit exactly on 0, 0.5 and 1.
    """
    rng = np.random.default_rng(seed)
    sites = []
    for n, prevalence in SITES:
        labels = (rng.random(n) < prevalence).astype(np.int64)
        scores_a = np.where(labels == 1, rng.beta(2.5, 0.8, n), rng.beta(0.5, 2.5, n))
        scores_b = np.clip(scores_a + rng.normal(0.0, 0.06, n), 0.0, 1.0)
        scores_a[:3] = [0.0, 0.5, 1.0]
        sites.append((labels, scores_a, scores_b))
    return sites


def concatenated(sites: list[Site]) -> Site:
    labels, scores_a, scores_b = zip(*sites, strict=True)
    return np.concatenate(labels), np.concatenate(scores_a), np.concatenate(scores_b)


def pooled(histograms: list[ScoreHistograms]) -> ScoreHistograms:
    total = histograms[0]
    for site in histograms[1:]:
        total = total + site
    return total


def test_scores_are_binned_on_edges_k_over_bins() -> None:
    # Prepare: 0, just below 0.5, 0.5, the first inner edge, and exactly 1
    labels = [1, 0, 1, 0, 1]
    scores = [0.0, 0.4999, 0.5, 1 / DEFAULT_BINS, 1.0]

    # Execute
    histograms = score_histograms(labels, scores)

    # Assert
    assert histograms.bins == DEFAULT_BINS
    assert histograms.positives.dtype == np.int64
    assert np.flatnonzero(histograms.positives).tolist() == [0, 1000, 1999]
    assert np.flatnonzero(histograms.negatives).tolist() == [1, 999]
    assert (histograms.n_positive, histograms.n_negative) == (3, 2)


def test_histograms_travel_as_lists_of_ints() -> None:
    # Prepare
    labels, scores, _ = simulated_sites(seed=1)[0]
    histograms = score_histograms(labels, scores)

    # Execute
    restored = ScoreHistograms.from_dict(json.loads(json.dumps(histograms.to_dict())))

    # Assert
    np.testing.assert_array_equal(restored.positives, histograms.positives)
    np.testing.assert_array_equal(restored.negatives, histograms.negatives)
    assert all(type(count) is int for count in histograms.to_dict()["positives"])


def test_malformed_histograms_are_refused() -> None:
    # Prepare
    good = [0] * DEFAULT_BINS
    negative_count = [0] * (DEFAULT_BINS - 1) + [-1]

    # Execute
    with pytest.raises(EvaluationError) as bad_counts:
        ScoreHistograms.from_dict({"positives": negative_count, "negatives": good})
    with pytest.raises(EvaluationError) as missing:
        ScoreHistograms.from_dict({"positives": good})
    with pytest.raises(EvaluationError) as uneven:
        ScoreHistograms.from_dict({"positives": good, "negatives": good[:-1]})
    with pytest.raises(EvaluationError) as coarse:
        ScoreHistograms.from_dict({"positives": [1] * 5, "negatives": [1] * 5})

    # Assert
    assert bad_counts.value.codes == ["bad-counts"]
    assert missing.value.codes == ["missing-key"]
    assert uneven.value.codes == ["bins-mismatch"]
    assert coarse.value.codes == ["too-few-bins"]


def test_histograms_need_probabilities_and_enough_bins() -> None:
    # Execute
    with pytest.raises(EvaluationError) as logits:
        score_histograms([0, 1], [-2.0, 3.0])
    with pytest.raises(EvaluationError) as coarse:
        score_histograms([0, 1], [0.2, 0.8], bins=100)

    # Assert
    assert logits.value.codes == ["scores-outside-unit-interval"]
    assert coarse.value.codes == ["too-few-bins"]


def test_sites_binned_differently_cannot_be_pooled() -> None:
    # Prepare
    fine = score_histograms([0, 1], [0.2, 0.8], bins=4000)
    default = score_histograms([0, 1], [0.2, 0.8])

    # Execute
    with pytest.raises(EvaluationError) as caught:
        pooled_roc([fine, default])

    # Assert
    assert caught.value.codes == ["bins-mismatch"]


def test_pooled_auc_and_interval_match_the_concatenated_raw_scores() -> None:
    # Prepare
    sites = simulated_sites(seed=2)
    labels, scores, _ = concatenated(sites)

    # Execute
    result = pooled_roc([score_histograms(y, a) for y, a, _ in sites])

    # Assert
    raw = delong_ci(labels, scores)
    assert result.auc == pytest.approx(roc_auc(labels, scores), abs=1e-3)
    assert result.auc_ci.low == pytest.approx(raw.low, abs=1e-3)
    assert result.auc_ci.high == pytest.approx(raw.high, abs=1e-3)
    assert (result.n_positive, result.n_negative) == (labels.sum(), (1 - labels).sum())


def test_discrete_ratings_are_pooled_exactly() -> None:
    # Prepare: Hanley & McNeil's 5-point ratings, split over two sites
    normal, abnormal = [33, 6, 6, 11, 2], [3, 2, 2, 11, 33]
    ratings = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    scores = np.concatenate([np.repeat(ratings, normal), np.repeat(ratings, abnormal)])
    labels = np.repeat([0, 1], [sum(normal), sum(abnormal)])
    halves = [slice(0, None, 2), slice(1, None, 2)]

    # Execute
    result = pooled_roc([score_histograms(labels[h], scores[h]) for h in halves])

    # Assert
    raw = delong_ci(labels, scores)
    assert result.auc == pytest.approx(2642 / 2958, abs=1e-12)
    assert result.auc_ci.low == pytest.approx(raw.low, abs=1e-12)
    assert result.auc_ci.high == pytest.approx(raw.high, abs=1e-12)


def test_pooled_curve_runs_from_origin_to_corner_under_the_auc() -> None:
    # Prepare
    sites = simulated_sites(seed=3)

    # Execute
    result = pooled_roc([score_histograms(y, a) for y, a, _ in sites])

    # Assert
    assert (result.fpr[0], result.tpr[0], result.thresholds[0]) == (0.0, 0.0, np.inf)
    assert (result.fpr[-1], result.tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(result.fpr) >= 0) and np.all(np.diff(result.tpr) >= 0)
    assert np.all(np.diff(result.thresholds) < 0)
    assert np.trapezoid(result.tpr, result.fpr) == pytest.approx(result.auc, abs=1e-12)


def test_pooled_operating_point_matches_site_side_metrics() -> None:
    # Prepare: includes a score of exactly 0.5 (called positive)
    sites = simulated_sites(seed=4)
    labels, scores, _ = concatenated(sites)

    # Execute
    result = pooled_roc([score_histograms(y, a) for y, a, _ in sites])

    # Assert
    raw = binary_metrics(labels, scores, n_bootstrap=10)
    assert result.threshold == 0.5
    assert result.sensitivity_at == pytest.approx(raw.sensitivity.value, abs=1e-15)
    assert result.specificity_at == pytest.approx(raw.specificity.value, abs=1e-15)


def test_operating_point_must_be_a_bin_edge() -> None:
    # Prepare
    histograms = score_histograms([0, 1], [0.2, 0.8])

    # Execute
    quarter = pooled_roc([histograms], threshold=0.25)
    with pytest.raises(EvaluationError) as caught:
        pooled_roc([histograms], threshold=1 / 3)

    # Assert
    assert quarter.sensitivity_at == 1.0
    assert caught.value.codes == ["threshold-not-on-bin-edge"]


def test_pooled_metrics_needing_an_absent_class_are_nan() -> None:
    # Prepare: no positives at any site
    histograms = [score_histograms([0, 0], [0.2, 0.7]), score_histograms([0], [0.1])]

    # Execute
    result = pooled_roc(histograms)

    # Assert
    assert math.isnan(result.auc) and math.isnan(result.auc_ci.low)
    assert math.isnan(result.sensitivity_at)
    assert result.specificity_at == pytest.approx(2 / 3)


def run_federated_paired_test(sites: list[Site]) -> PairedComparison:
    """Both exchanges of the protocol, with only aggregates crossing over."""
    pooled_a = pooled([score_histograms(y, a) for y, a, _ in sites])
    pooled_b = pooled([score_histograms(y, b) for y, _, b in sites])
    replies = [
        PairedComponentSums.from_dict(
            json.loads(
                json.dumps(paired_component_sums(y, a, b, pooled_a, pooled_b).to_dict())
            )
        )
        for y, a, b in sites
    ]
    return pooled_paired_test(replies, pooled_a, pooled_b)


def test_federated_paired_test_matches_delong_on_concatenated_scores() -> None:
    # Prepare: three sites
    sites = simulated_sites(seed=13)[:3]
    labels, scores_a, scores_b = concatenated(sites)

    # Execute
    federated = run_federated_paired_test(sites)

    # Assert
    raw = delong_paired_test(labels, scores_a, scores_b)
    assert 0.01 < raw.p_value < 0.5  # a comparison where p actually matters
    assert federated.auc_a == pytest.approx(raw.auc_a, abs=1e-3)
    assert federated.auc_b == pytest.approx(raw.auc_b, abs=1e-3)
    assert federated.difference == pytest.approx(raw.difference, abs=1e-4)
    assert federated.se == pytest.approx(raw.se, rel=0.01)
    assert federated.p_value == pytest.approx(raw.p_value, rel=0.05)


def on_bin_centres(scores: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Move every score to the centre of its default bin."""
    bins = np.minimum(np.floor(scores * DEFAULT_BINS), DEFAULT_BINS - 1)
    return (bins + 0.5) / DEFAULT_BINS


def test_federated_paired_test_is_exact_when_scores_sit_on_bin_centres() -> None:
    # Prepare: every distinct score in its own bin, so binning loses nothing
    sites = [
        (y, on_bin_centres(a), on_bin_centres(b))
        for y, a, b in simulated_sites(seed=6)[:3]
    ]
    labels, scores_a, scores_b = concatenated(sites)

    # Execute
    federated = run_federated_paired_test(sites)

    # Assert
    raw = delong_paired_test(labels, scores_a, scores_b)
    for field in ("auc_a", "auc_b", "difference", "se", "z", "p_value"):
        assert getattr(federated, field) == pytest.approx(
            getattr(raw, field), rel=1e-9, abs=1e-12
        )


def test_server_refuses_sums_that_miss_a_site() -> None:
    # Prepare
    sites = simulated_sites(seed=7)[:3]
    pooled_a = pooled([score_histograms(y, a) for y, a, _ in sites])
    pooled_b = pooled([score_histograms(y, b) for y, _, b in sites])
    replies = [paired_component_sums(y, a, b, pooled_a, pooled_b) for y, a, b in sites]

    # Execute
    with pytest.raises(EvaluationError) as caught:
        pooled_paired_test(replies[:2], pooled_a, pooled_b)

    # Assert
    assert caught.value.codes == ["sums-do-not-match-histograms"]


def test_site_refuses_pooled_histograms_that_do_not_include_it() -> None:
    # Prepare: histograms pooled over the other sites only
    sites = simulated_sites(seed=8)[:3]
    others_a = pooled([score_histograms(y, a) for y, a, _ in sites[1:]])
    others_b = pooled([score_histograms(y, b) for y, _, b in sites[1:]])
    labels, scores_a, scores_b = sites[0]

    # Execute
    with pytest.raises(EvaluationError) as caught:
        paired_component_sums(labels, scores_a, scores_b, others_a, others_b)

    # Assert
    assert caught.value.codes == ["site-not-in-pooled-histograms"] * 2


def test_server_needs_sums_from_at_least_one_site() -> None:
    # Prepare
    histograms = score_histograms([0, 1], [0.2, 0.8])

    # Execute
    with pytest.raises(EvaluationError) as caught:
        pooled_paired_test([], histograms, histograms)

    # Assert
    assert caught.value.codes == ["no-component-sums"]


def test_models_scored_on_different_patients_are_refused() -> None:
    # Prepare: model B's pooled histograms come from other sites than A's
    sites = simulated_sites(seed=9)
    pooled_a = pooled([score_histograms(y, a) for y, a, _ in sites[:2]])
    pooled_b = pooled([score_histograms(y, b) for y, _, b in sites[1:3]])
    labels, scores_a, scores_b = sites[1]

    # Execute
    with pytest.raises(EvaluationError) as at_site:
        paired_component_sums(labels, scores_a, scores_b, pooled_a, pooled_b)
    sums = paired_component_sums(labels, scores_a, scores_a, pooled_a, pooled_a)
    with pytest.raises(EvaluationError) as at_server:
        pooled_paired_test([sums], pooled_a, pooled_b)

    # Assert
    assert at_site.value.codes == ["pooled-class-sizes-differ"]
    assert "pooled-class-sizes-differ" in at_server.value.codes


def test_component_sums_travel_as_one_flat_record_of_scalars() -> None:
    # Prepare
    labels, scores_a, scores_b = simulated_sites(seed=10)[0]
    pooled_a = score_histograms(labels, scores_a)
    pooled_b = score_histograms(labels, scores_b)
    sums = paired_component_sums(labels, scores_a, scores_b, pooled_a, pooled_b)

    # Execute
    flat = sums.to_dict()
    restored = PairedComponentSums.from_dict(json.loads(json.dumps(flat)))

    # Assert
    assert restored == sums
    assert (flat["n-pos"], flat["n-neg"]) == (labels.sum(), (1 - labels).sum())
    assert all(isinstance(value, int | float) for value in flat.values())


@pytest.mark.parametrize(
    ("key", "value"), [("n-pos", 2.5), ("n-neg", -1), ("sum-pos-a", "x")]
)
def test_unreadable_component_sums_are_refused(key: str, value: object) -> None:
    # Prepare
    flat = PairedComponentSums.from_dict(
        {"n-pos": 2, "n-neg": 2}
        | {
            f"sum-{c}-{f}": 1.0
            for c in ("pos", "neg")
            for f in ("a", "b", "aa", "bb", "ab")
        }
    ).to_dict()
    flat[key] = value  # type: ignore[assignment]
    missing = dict(flat)
    del missing["sum-neg-ab"]

    # Execute
    with pytest.raises(EvaluationError) as bad_value:
        PairedComponentSums.from_dict(flat)
    with pytest.raises(EvaluationError) as missing_key:
        PairedComponentSums.from_dict(missing)

    # Assert
    assert bad_value.value.codes == ["bad-component-sums"]
    assert missing_key.value.codes == ["bad-component-sums"]
