from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from fedbone.privacy.errors import PrivacyError
from fedbone.privacy.noise import laplace_counts, laplace_histogram
from fedbone.validation.histograms import auc_from_counts

# A small site's validation histograms: 60 positives, 300 negatives, 20 bins,
# with empty bins at both ends (where clipping each bin adds spurious counts).
POSITIVES = np.array([0, 0, 0, 0, 1, 1, 1, 2, 3, 3, 4, 5, 5, 6, 7, 6, 6, 5, 4, 1])
NEGATIVES = np.array(
    [4, 12, 17, 21, 24, 26, 27, 26, 25, 24, 21, 19, 16, 13, 10, 7, 5, 2, 1, 0]
)
DRAWS = 200

Release = Callable[
    [npt.ArrayLike, float, float, np.random.Generator], npt.NDArray[np.int64]
]


def mean_auc_bias(release: Release, rng: np.random.Generator) -> float:
    exact = float(auc_from_counts(POSITIVES, NEGATIVES))
    aucs = [
        float(
            auc_from_counts(
                release(POSITIVES, 1.0, 1.0, rng), release(NEGATIVES, 1.0, 1.0, rng)
            )
        )
        for _ in range(DRAWS)
    ]
    return float(np.mean(aucs)) - exact


def test_noisy_histogram_is_non_negative_int_counts_of_the_same_length() -> None:
    # Execute
    noisy = laplace_histogram(POSITIVES, 0.5, 1.0, np.random.default_rng(0))

    # Assert
    assert noisy.dtype == np.int64
    assert noisy.shape == POSITIVES.shape
    assert np.all(noisy >= 0)
    assert not np.array_equal(noisy, POSITIVES)


def test_an_all_zero_histogram_stays_non_negative() -> None:
    # Execute: every bin's noise has nothing to hide behind
    noisy = laplace_histogram(np.zeros(20), 1.0, 1.0, np.random.default_rng(1))

    # Assert
    assert noisy.shape == (20,)
    assert np.all(noisy >= 0)


def test_a_huge_epsilon_returns_the_exact_counts() -> None:
    # Execute
    noisy = laplace_histogram(NEGATIVES, 1e9, 1.0, np.random.default_rng(2))

    # Assert
    np.testing.assert_array_equal(noisy, NEGATIVES)


def test_two_dimensional_counts_are_refused() -> None:
    # Execute
    with pytest.raises(PrivacyError) as caught:
        laplace_histogram(np.ones((2, 10)), 1.0, 1.0, np.random.default_rng(3))

    # Assert
    assert caught.value.codes == ["not-a-histogram"]


@pytest.mark.parametrize("epsilon", [0.0, -1.0, float("nan"), float("inf")])
def test_epsilon_that_is_not_positive_and_finite_is_refused(epsilon: float) -> None:
    # Execute
    with pytest.raises(PrivacyError) as caught:
        laplace_histogram(POSITIVES, epsilon, 1.0, np.random.default_rng(4))

    # Assert
    assert caught.value.codes == ["epsilon-not-positive"]


def test_every_input_problem_is_listed_at_once() -> None:
    # Execute
    with pytest.raises(PrivacyError) as caught:
        laplace_histogram([3, -1, 2], 0.0, 0.0, np.random.default_rng(5))

    # Assert
    assert caught.value.codes == [
        "invalid-counts",
        "epsilon-not-positive",
        "sensitivity-not-positive",
    ]


def test_auc_of_consistent_histograms_is_nearly_unbiased() -> None:
    # Execute
    bias = mean_auc_bias(laplace_histogram, np.random.default_rng(6))

    # Assert
    assert abs(bias) < 0.03


def test_clipping_each_bin_biases_the_auc_more_than_the_isotonic_projection() -> None:
    # Execute: the same noise scale, the same number of draws
    consistent = mean_auc_bias(laplace_histogram, np.random.default_rng(7))
    clipped = mean_auc_bias(laplace_counts, np.random.default_rng(7))

    # Assert: spurious counts in empty bins pull the AUC towards 0.5
    assert clipped < -0.015
    assert abs(clipped) > abs(consistent) + 0.01
