from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from fedbone.generative.fidelity.distances import (
    PrecisionRecall,
    frechet_distance,
    frechet_distance_from_moments,
    kernel_inception_distance,
    precision_recall,
)
from fedbone.validation.errors import EvaluationError

Features = npt.NDArray[np.float64]


def gaussian(mean: list[float], variances: list[float], n: int, seed: int) -> Features:
    rng = np.random.default_rng(seed)
    return rng.normal(mean, np.sqrt(variances), size=(n, len(mean)))


def direct_unbiased_mmd(x: Features, y: Features) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, one pair at a time."""
    d = x.shape[1]

    def kernel(a: Features, b: Features) -> float:
        return float((a @ b / d + 1.0) ** 3)

    m, n = len(x), len(y)
    xx = sum(kernel(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    yy = sum(kernel(y[i], y[j]) for i in range(n) for j in range(n) if i != j)
    xy = sum(kernel(x[i], y[j]) for i in range(m) for j in range(n))
    return xx / (m * (m - 1)) + yy / (n * (n - 1)) - 2 * xy / (m * n)


def test_frechet_distance_from_moments_matches_diagonal_closed_form() -> None:
    # Prepare
    mu1, variances1 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 4.0, 0.25])
    mu2, variances2 = np.array([1.0, 3.0, -2.0]), np.array([9.0, 1.0, 0.25])

    # Execute
    distance = frechet_distance_from_moments(
        mu1, np.diag(variances1), mu2, np.diag(variances2)
    )

    # Assert: |mu1-mu2|^2 = 1 + 4 + 0, sum (sqrt(s1)-sqrt(s2))^2 = 4 + 1 + 0
    assert distance == pytest.approx(10.0, abs=1e-12)


def test_frechet_distance_from_moments_of_non_commuting_covariances() -> None:
    # Prepare: sigma1 sigma2 is not symmetric; in 2-D its root's trace is
    # sqrt(tr M + 2 sqrt(det M)) (the eigenvalues of M are positive).
    rotation = np.array([[0.0, -1.0], [1.0, 0.0]])
    sigma1 = np.array([[2.0, 0.5], [0.5, 1.0]])
    sigma2 = np.array([[3.0, -0.4], [-0.4, 0.5]])
    mu1, mu2 = np.array([0.0, 1.0]), np.array([2.0, 0.0])

    # Execute
    plain = frechet_distance_from_moments(mu1, sigma1, mu2, sigma2)
    rotated = frechet_distance_from_moments(
        rotation @ mu1,
        rotation @ sigma1 @ rotation.T,
        rotation @ mu2,
        rotation @ sigma2 @ rotation.T,
    )
    swapped = frechet_distance_from_moments(mu2, sigma2, mu1, sigma1)
    same = frechet_distance_from_moments(mu1, sigma1, mu1, sigma1)

    # Assert
    product = sigma1 @ sigma2
    root_trace = np.sqrt(np.trace(product) + 2 * np.sqrt(np.linalg.det(product)))
    expected = 5.0 + np.trace(sigma1) + np.trace(sigma2) - 2 * root_trace
    assert plain == pytest.approx(expected, abs=1e-12)
    assert rotated == pytest.approx(plain, abs=1e-12)
    assert swapped == pytest.approx(plain, abs=1e-12)
    assert same == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("mean1", "var1", "mean2", "var2", "expected"),
    [
        ([0.0], [1.0], [2.0], [4.0], 4.0 + 1.0),
        ([0.0, 0.0], [1.0, 4.0], [1.0, 2.0], [4.0, 9.0], 5.0 + 1.0 + 1.0),
    ],
)
def test_frechet_distance_of_samples_approaches_closed_form(
    mean1: list[float],
    var1: list[float],
    mean2: list[float],
    var2: list[float],
    expected: float,
) -> None:
    # Prepare
    real = gaussian(mean1, var1, 40_000, seed=1)
    fake = gaussian(mean2, var2, 40_000, seed=2)

    # Execute
    distance = frechet_distance(real, fake)

    # Assert
    assert distance == pytest.approx(expected, abs=0.15)


def test_frechet_distance_of_a_set_with_itself_is_zero() -> None:
    # Prepare
    features = gaussian([0.0] * 16, [1.0] * 16, 500, seed=3)

    # Execute
    distance = frechet_distance(features, features.copy())

    # Assert
    assert distance == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_with_fewer_samples_than_features_is_finite() -> None:
    # Prepare: covariances of rank 9 in 32 dimensions
    real = gaussian([0.0] * 32, [1.0] * 32, 10, seed=4)
    fake = gaussian([1.0] * 32, [1.0] * 32, 10, seed=5)

    # Execute
    distance = frechet_distance(real, fake)

    # Assert
    assert np.isfinite(distance)
    assert distance > 0


def test_kid_matches_direct_unbiased_mmd_on_tiny_sets() -> None:
    # Prepare
    real = gaussian([0.0, 0.0, 0.0], [1.0, 1.0, 1.0], 7, seed=6)
    fake = gaussian([0.5, 0.0, -0.5], [1.0, 2.0, 1.0], 7, seed=7)

    # Execute
    mean, std = kernel_inception_distance(real, fake, subset_size=7, n_subsets=1)

    # Assert
    assert mean == pytest.approx(direct_unbiased_mmd(real, fake), rel=1e-12)
    assert std == 0.0


def test_kid_is_near_zero_for_one_distribution_and_positive_when_shifted() -> None:
    # Prepare
    real = gaussian([0.0] * 8, [1.0] * 8, 600, seed=8)
    same = gaussian([0.0] * 8, [1.0] * 8, 600, seed=9)
    shifted = gaussian([1.0] * 8, [1.0] * 8, 600, seed=10)

    # Execute
    same_mean, same_std = kernel_inception_distance(
        real, same, subset_size=200, n_subsets=20
    )
    shifted_mean, _ = kernel_inception_distance(
        real, shifted, subset_size=200, n_subsets=20
    )

    # Assert
    assert abs(same_mean) < 3 * same_std + 1e-3
    assert shifted_mean > 0.5
    assert shifted_mean > 50 * abs(same_mean)


def test_kid_caps_the_subset_size_and_is_reproducible() -> None:
    # Prepare
    real = gaussian([0.0, 0.0], [1.0, 1.0], 30, seed=11)
    fake = gaussian([0.2, 0.0], [1.0, 1.0], 20, seed=12)

    # Execute
    capped = kernel_inception_distance(real, fake, n_subsets=5, seed=3)
    explicit = kernel_inception_distance(
        real, fake, subset_size=20, n_subsets=5, seed=3
    )

    # Assert
    assert capped == explicit


def test_precision_recall_of_identical_sets_is_one() -> None:
    # Prepare
    features = gaussian([0.0] * 8, [1.0] * 8, 300, seed=13)

    # Execute
    result = precision_recall(features, features.copy())

    # Assert
    assert result == PrecisionRecall(precision=1.0, recall=1.0)


def test_precision_recall_of_far_apart_clusters_is_zero() -> None:
    # Prepare
    real = gaussian([0.0] * 8, [1.0] * 8, 200, seed=14)
    fake = gaussian([100.0] * 8, [1.0] * 8, 200, seed=15)

    # Execute
    result = precision_recall(real, fake)

    # Assert
    assert result == PrecisionRecall(precision=0.0, recall=0.0)


def test_precision_recall_of_hand_checked_one_dimensional_sets() -> None:
    # Prepare: with k=1 every real radius is 1; fake radii are 4.5, 4.5, 5.
    # Only fake 0.5 lies within 1 of a real point; the ball of radius 4.5
    # around fake 0.5 covers every real point.
    real = np.array([[0.0], [1.0], [2.0], [3.0]])
    fake = np.array([[0.5], [5.0], [10.0]])

    # Execute
    result = precision_recall(real, fake, k=1)

    # Assert
    assert result.precision == pytest.approx(1 / 3)
    assert result.recall == 1.0


def test_precision_recall_counts_the_ball_boundary_and_ignores_batching() -> None:
    # Prepare: with k=2 the real radii are 2, 1, 1, 2; fake 4 sits exactly on
    # the boundary of real 2's ball, fake 7 outside every ball.
    real = np.array([[0.0], [1.0], [2.0], [3.0]])
    fake = np.array([[4.0], [7.0], [1.5]])

    # Execute
    whole = precision_recall(real, fake, k=2)
    row_by_row = precision_recall(real, fake, k=2, batch=1)

    # Assert
    assert whole.precision == pytest.approx(2 / 3)
    assert row_by_row == whole


def test_bad_features_list_every_problem() -> None:
    # Prepare
    real = np.zeros((1, 4))
    fake = np.full((5, 3), np.nan)

    # Execute
    with pytest.raises(EvaluationError) as error:
        frechet_distance(real, fake)
    with pytest.raises(EvaluationError) as flat:
        precision_recall(np.zeros(5), np.zeros((5, 2)))
    with pytest.raises(EvaluationError) as settings:
        kernel_inception_distance(real, real, subset_size=1, n_subsets=0)

    # Assert
    assert error.value.codes == [
        "too-few-samples",
        "features-not-finite",
        "feature-size-mismatch",
    ]
    assert flat.value.codes == ["not-two-dimensional"]
    assert settings.value.codes == ["bad-subset-size", "bad-subset-count"]


def test_bad_moments_are_reported() -> None:
    # Execute
    with pytest.raises(EvaluationError) as error:
        frechet_distance_from_moments(
            np.zeros(2), np.eye(3), np.zeros(2), np.full((2, 2), np.inf)
        )

    # Assert
    assert error.value.codes == ["bad-moment-shape", "moments-not-finite"]
