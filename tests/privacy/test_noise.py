import math

import numpy as np
import pytest
from scipy import integrate, stats

from fedbone.privacy.errors import PrivacyError
from fedbone.privacy.noise import (
    analytic_gaussian_sigma,
    gaussian_counts,
    gaussian_delta,
    laplace_counts,
)

N_BINS = 40_000
ROUNDING_VARIANCE = 1.0 / 12.0


def test_laplace_noise_has_the_calibrated_scale():
    # Prepare: counts large enough that clipping at 0 never happens
    counts = np.full(N_BINS, 1000)
    epsilon, sensitivity = 0.5, 1.0
    scale = sensitivity / epsilon

    # Execute
    noisy = laplace_counts(counts, epsilon, sensitivity, np.random.default_rng(7))

    # Assert: Laplace variance 2 b², plus the variance rounding adds
    error = noisy - counts
    assert abs(error.mean()) < 0.05
    expected_std = math.sqrt(2 * scale**2 + ROUNDING_VARIANCE)
    assert error.std() == pytest.approx(expected_std, rel=0.03)


def test_gaussian_noise_has_the_analytic_sigma():
    # Prepare
    counts = np.full(N_BINS, 1000)
    epsilon, delta, sensitivity = 1.0, 1e-5, 1.0

    # Execute
    noisy = gaussian_counts(
        counts, epsilon, delta, sensitivity, np.random.default_rng(11)
    )

    # Assert: Balle & Wang's value for (1, 1e-5), below the classic 4.84
    sigma = analytic_gaussian_sigma(epsilon, delta, sensitivity)
    assert sigma == pytest.approx(3.73, abs=0.01)
    expected_std = math.sqrt(sigma**2 + ROUNDING_VARIANCE)
    assert (noisy - counts).std() == pytest.approx(expected_std, rel=0.03)


@pytest.mark.parametrize("epsilon", [0.3, 1.0, 4.0, 8.0])
def test_analytic_sigma_meets_delta_by_the_hockey_stick_integral(epsilon):
    # Prepare: δ(ε) = ∫ max(0, p(x) − e^ε q(x)) dx for N(0, σ²) vs N(Δ, σ²),
    # integrated numerically, independent of the closed form
    delta, sensitivity = 1e-5, 2.0
    sigma = analytic_gaussian_sigma(epsilon, delta, sensitivity)

    def excess(x: float) -> float:
        p = stats.norm.pdf(x, 0.0, sigma)
        q = stats.norm.pdf(x, sensitivity, sigma)
        return max(0.0, p - math.exp(epsilon) * q)

    # Execute: the integrand is non-zero only left of the crossing point
    crossing = sensitivity / 2 - epsilon * sigma**2 / sensitivity
    integral, _ = integrate.quad(excess, crossing - 40 * sigma, crossing, epsabs=1e-14)

    # Assert: δ is met, and σ is not larger than needed
    assert integral <= delta * (1 + 1e-4)
    assert integral == pytest.approx(delta, rel=1e-3)
    assert gaussian_delta(sigma, epsilon, sensitivity) <= delta


def test_analytic_sigma_is_tighter_than_classic_below_one():
    # Prepare
    epsilon, delta = 0.5, 1e-6
    classic = math.sqrt(2 * math.log(1.25 / delta)) / epsilon

    # Execute
    sigma = analytic_gaussian_sigma(epsilon, delta, 1.0)

    # Assert
    assert sigma < classic


def test_noisy_counts_are_non_negative_integers_with_the_input_shape():
    # Prepare: small counts, so noise often goes below zero before clipping
    counts = np.zeros((2, 500), dtype=np.int64)
    rng = np.random.default_rng(3)

    # Execute
    laplace = laplace_counts(counts, 0.2, 1.0, rng)
    gaussian = gaussian_counts(counts, 0.5, 1e-5, 1.0, rng)

    # Assert
    for noisy in (laplace, gaussian):
        assert noisy.shape == counts.shape
        assert noisy.dtype == np.int64
        assert noisy.min() == 0
        assert noisy.max() > 0


def test_invalid_noise_parameters_are_all_listed():
    # Execute
    with pytest.raises(PrivacyError) as caught:
        gaussian_counts(np.array([3, -1]), 0.0, 1.5, -1.0, np.random.default_rng(0))

    # Assert
    assert caught.value.codes == [
        "invalid-counts",
        "epsilon-not-positive",
        "delta-out-of-range",
        "sensitivity-not-positive",
    ]
