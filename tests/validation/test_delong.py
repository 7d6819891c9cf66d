from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest
from scipy import stats

from fedbone.validation.bootstrap import auc_statistic
from fedbone.validation.delong import delong_auc_variance, delong_ci, delong_paired_test
from fedbone.validation.errors import EvaluationError

# Hanley & McNeil (1982), Radiology 143:29, Table 1: 109 CT images rated 1-5.
HANLEY_MCNEIL_NORMAL = [33, 6, 6, 11, 2]
HANLEY_MCNEIL_ABNORMAL = [3, 2, 2, 11, 33]


def hanley_mcneil_ratings() -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    ratings = np.arange(1, 6, dtype=np.float64)
    scores = np.concatenate(
        [
            np.repeat(ratings, HANLEY_MCNEIL_NORMAL),
            np.repeat(ratings, HANLEY_MCNEIL_ABNORMAL),
        ]
    )
    labels = np.repeat([0, 1], [sum(HANLEY_MCNEIL_NORMAL), sum(HANLEY_MCNEIL_ABNORMAL)])
    return labels, scores


def slow_delong(
    labels: npt.NDArray[np.int64], *models: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """DeLong et al. (1988) straight from the definition: O(m n) kernel matrix.

    Returns the AUCs and their covariance matrix S10/m + S01/n.
    """
    positive = labels == 1
    v10, v01 = [], []
    for scores in models:
        x = scores[positive][:, np.newaxis]
        y = scores[~positive][np.newaxis, :]
        kernel = (x > y) + 0.5 * (x == y)
        v10.append(kernel.mean(axis=1))
        v01.append(kernel.mean(axis=0))
    aucs = np.array([components.mean() for components in v10])
    covariance = (
        np.atleast_2d(np.cov(v10)) / positive.sum()
        + np.atleast_2d(np.cov(v01)) / (~positive).sum()
    )
    return aucs, covariance


def two_models(
    n: int, seed: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Labels and two correlated models' scores, rounded so ties occur."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.35).astype(np.int64)
    signal = rng.normal(size=n) + 1.2 * labels
    scores_a = np.round(stats.norm.cdf(signal + 0.5 * rng.normal(size=n)), 2)
    scores_b = np.round(stats.norm.cdf(0.6 * signal + rng.normal(size=n)), 2)
    return labels, scores_a, scores_b


def test_fast_variance_equals_the_structural_components_definition() -> None:
    # Prepare
    labels, scores, _ = two_models(300, seed=1)

    # Execute
    auc, variance = delong_auc_variance(labels, scores)

    # Assert
    aucs, covariance = slow_delong(labels, scores)
    assert auc == pytest.approx(aucs[0], abs=1e-12)
    assert variance == pytest.approx(covariance[0, 0], rel=1e-10)


def test_tiny_example_worked_by_hand() -> None:
    # Prepare: positives 0.8, 0.6; negatives 0.4, 0.6, 0.2.
    # V10 = (1, 5/6), V01 = (1, 3/4, 1): AUC = 11/12,
    # var = var(V10)/2 + var(V01)/3 = (1/72)/2 + (1/48)/3 = 1/72.
    labels = [1, 1, 0, 0, 0]
    scores = [0.8, 0.6, 0.4, 0.6, 0.2]

    # Execute
    auc, variance = delong_auc_variance(labels, scores)

    # Assert
    assert auc == pytest.approx(11 / 12)
    assert variance == pytest.approx(1 / 72)


def test_hanley_mcneil_rating_data() -> None:
    # Prepare: published AUC 0.893 and SE 0.032 (their exponential
    # approximation, which runs slightly above DeLong's SE of 0.0307).
    labels, scores = hanley_mcneil_ratings()

    # Execute
    auc, variance = delong_auc_variance(labels, scores)

    # Assert
    assert auc == pytest.approx(2642 / 2958, abs=1e-12)
    assert round(auc, 3) == 0.893
    assert math.sqrt(variance) == pytest.approx(0.032, abs=0.002)


def test_variance_agrees_with_the_bootstrap_on_a_large_sample() -> None:
    # Prepare: 2,000 stratified bootstrap replicates of 3,000 patients
    labels, scores, _ = two_models(3000, seed=2)
    positive = labels == 1
    rng = np.random.default_rng(0)
    members = [np.flatnonzero(positive), np.flatnonzero(~positive)]
    indices = np.hstack(
        [
            group[rng.integers(0, group.size, size=(2000, group.size))]
            for group in members
        ]
    )

    # Execute
    _, variance = delong_auc_variance(labels, scores)
    bootstrap_variance = auc_statistic(positive, scores, indices).var(ddof=1)

    # Assert: the bootstrap variance has a relative SE of ~3%
    assert variance == pytest.approx(bootstrap_variance, rel=0.15)


def test_confidence_interval_is_wald_on_the_auc_scale() -> None:
    # Prepare
    labels, scores, _ = two_models(400, seed=3)
    auc, variance = delong_auc_variance(labels, scores)

    # Execute
    estimate = delong_ci(labels, scores, confidence=0.9)

    # Assert
    half_width = stats.norm.ppf(0.95) * math.sqrt(variance)
    assert estimate.value == auc
    assert estimate.low == pytest.approx(auc - half_width)
    assert estimate.high == pytest.approx(auc + half_width)


def test_confidence_interval_is_clipped_to_the_unit_interval() -> None:
    # Prepare: perfect separation, and a near-perfect small sample
    perfect = delong_ci([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])

    # Execute
    near_perfect = delong_ci([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.7, 0.6, 0.8, 0.9])

    # Assert
    assert (perfect.value, perfect.low, perfect.high) == (1.0, 1.0, 1.0)
    assert near_perfect.high == 1.0
    assert near_perfect.low < near_perfect.value < 1.0


def test_interval_is_nan_without_two_patients_per_class() -> None:
    # Execute
    single_positive = delong_ci([1, 0, 0], [0.9, 0.2, 0.1])
    no_positive = delong_auc_variance([0, 0, 0], [0.9, 0.2, 0.1])

    # Assert
    assert single_positive.value == 1.0
    assert math.isnan(single_positive.low) and math.isnan(single_positive.high)
    assert all(math.isnan(x) for x in no_positive)


def test_paired_test_equals_the_structural_components_definition() -> None:
    # Prepare
    labels, scores_a, scores_b = two_models(300, seed=4)

    # Execute
    result = delong_paired_test(labels, scores_a, scores_b)

    # Assert
    aucs, covariance = slow_delong(labels, scores_a, scores_b)
    se = math.sqrt(covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1])
    z = (aucs[0] - aucs[1]) / se
    assert result.auc_a == pytest.approx(aucs[0], abs=1e-12)
    assert result.auc_b == pytest.approx(aucs[1], abs=1e-12)
    assert result.difference == pytest.approx(aucs[0] - aucs[1], abs=1e-12)
    assert result.se == pytest.approx(se, rel=1e-9)
    assert result.z == pytest.approx(z, rel=1e-9)
    assert result.p_value == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-9)
    assert result.ci_low == pytest.approx(result.difference - 1.959964 * se)
    assert result.ci_high == pytest.approx(result.difference + 1.959964 * se)


def test_swapping_the_models_flips_the_sign_only() -> None:
    # Prepare
    labels, scores_a, scores_b = two_models(200, seed=5)

    # Execute
    forward = delong_paired_test(labels, scores_a, scores_b)
    backward = delong_paired_test(labels, scores_b, scores_a)

    # Assert
    assert backward.difference == pytest.approx(-forward.difference)
    assert backward.z == pytest.approx(-forward.z)
    assert backward.p_value == pytest.approx(forward.p_value)


def test_a_model_compared_with_itself_does_not_differ() -> None:
    # Prepare
    labels, scores, _ = two_models(200, seed=6)

    # Execute
    result = delong_paired_test(labels, scores, scores)

    # Assert
    assert (result.difference, result.z, result.p_value) == (0.0, 0.0, 1.0)


def test_a_strong_model_beats_a_random_one() -> None:
    # Prepare
    labels, strong, _ = two_models(400, seed=7)
    random_scores = np.random.default_rng(0).random(labels.size)

    # Execute
    result = delong_paired_test(labels, strong, random_scores)

    # Assert
    assert result.p_value < 1e-6
    assert result.ci_low > 0.0


def test_scores_of_the_second_model_are_checked_too() -> None:
    # Execute
    with pytest.raises(EvaluationError) as caught:
        delong_paired_test([0, 1, 1], [0.1, 0.5, 0.9], [0.3, math.inf])

    # Assert
    assert caught.value.codes == ["length-mismatch", "scores-not-finite"]
    assert all(problem.where == "scores_b" for problem in caught.value.problems)
