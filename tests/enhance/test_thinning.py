"""Binomial thinning of raw counts, and the count levels that set how much."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from fedbone.enhance.errors import EnhanceError
from fedbone.enhance.thinning import CountLevel, binomial_thin, parse_level


def test_thinned_counts_have_binomial_mean_and_variance() -> None:
    counts = np.array([0, 1, 7, 100, 1000], dtype=np.int64)
    rng = np.random.default_rng(0)
    p = 0.3

    draws = np.stack([binomial_thin(counts, p, rng) for _ in range(4000)])

    np.testing.assert_allclose(draws.mean(axis=0), p * counts, atol=0.02, rtol=0.02)
    np.testing.assert_allclose(
        draws.var(axis=0), p * (1 - p) * counts, atol=0.02, rtol=0.06
    )
    assert draws[:, 0].max() == 0


def test_thinning_a_poisson_image_gives_a_poisson_image_of_p_times_the_mean() -> None:
    rng = np.random.default_rng(1)
    expected = np.linspace(2.0, 200.0, 128 * 64).reshape(128, 64)
    image = rng.poisson(expected).astype(np.float32)
    p = 1 / 3

    thinned = binomial_thin(image, p, rng)

    # Pearson's dispersion statistic against Poisson(p * lambda) is
    # chi-square with one degree of freedom per pixel.
    dispersion = float(((thinned - p * expected) ** 2 / (p * expected)).sum())
    low, high = stats.chi2.ppf([0.0005, 0.9995], df=expected.size)
    assert low < dispersion < high
    assert thinned.sum() / (p * expected.sum()) == pytest.approx(1.0, abs=0.01)


def test_total_counts_are_kept_in_expectation() -> None:
    counts = np.random.default_rng(2).poisson(30.0, size=(64, 32))
    rng = np.random.default_rng(3)

    totals = [binomial_thin(counts, 0.5, rng).sum() for _ in range(200)]

    assert np.mean(totals) == pytest.approx(0.5 * counts.sum(), rel=0.002)


def test_integer_input_keeps_its_dtype_and_float_input_gives_whole_float32() -> None:
    counts = np.arange(12, dtype=np.uint16).reshape(3, 4)

    as_integers = binomial_thin(counts, 0.5, np.random.default_rng(4))
    as_floats = binomial_thin(counts.astype(np.float64), 0.5, np.random.default_rng(4))

    assert as_integers.dtype == np.uint16
    assert as_floats.dtype == np.float32
    np.testing.assert_array_equal(as_floats, as_integers)
    assert (as_integers <= counts).all()


def test_negative_fractional_counts_and_a_bad_probability_are_all_listed() -> None:
    counts = np.array([[-1.0, 2.5], [3.0, 4.0]], dtype=np.float32)

    with pytest.raises(EnhanceError) as caught:
        binomial_thin(counts, 1.5, np.random.default_rng(0))

    assert set(caught.value.codes) == {
        "negative-counts",
        "non-integer-counts",
        "invalid-probability",
    }
    assert isinstance(caught.value, ValueError)


def test_non_finite_counts_are_refused() -> None:
    with pytest.raises(EnhanceError) as caught:
        binomial_thin(np.array([1.0, np.nan]), 0.5, np.random.default_rng(0))

    assert caught.value.codes == ["non-finite-counts"]


def test_speed_levels_keep_a_fraction_and_kcount_levels_a_total() -> None:
    two, kcounts = parse_level("2x"), parse_level("300k")

    assert two == CountLevel("2x", fraction=0.5)
    assert two.probability(1e6) == 0.5
    assert kcounts.total_kcounts == 300
    assert kcounts.probability(1.5e6) == pytest.approx(0.2)
    assert kcounts.probability(2e5) == 1.0


@pytest.mark.parametrize("text", ["fast", "1x", "0.5x", "20x", "2", "5k"])
def test_unknown_levels_are_refused_with_what_is_accepted(text: str) -> None:
    with pytest.raises(EnhanceError) as caught:
        parse_level(text)

    assert caught.value.codes == ["invalid-level"]


def test_a_level_needs_exactly_one_of_fraction_and_kcounts() -> None:
    with pytest.raises(EnhanceError) as caught:
        CountLevel("odd", fraction=0.5, total_kcounts=300)

    assert caught.value.codes == ["ambiguous-level"]
