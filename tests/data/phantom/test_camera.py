from __future__ import annotations

import numpy as np
import pytest

from fedbone.data.phantom.camera import poisson_counts, read_out


@pytest.mark.parametrize("expected", [0.02, 0.7, 6.0, 24.0, 26.0, 300.0])
def test_poisson_counts_have_poisson_mean_and_variance(expected: float) -> None:
    rng = np.random.default_rng(3)
    lam = np.full(200_000, expected, dtype=np.float32)

    counts = poisson_counts(lam, rng).astype(np.float64)

    assert counts.mean() == pytest.approx(expected, rel=0.03, abs=0.003)
    assert counts.var() == pytest.approx(expected, rel=0.05, abs=0.003)


def test_poisson_counts_are_reproducible_and_zero_where_nothing_is_expected() -> None:
    lam = np.zeros((64, 32), dtype=np.float32)
    lam[10:20, 5:9] = 40.0

    first = poisson_counts(lam, np.random.default_rng(1))
    second = poisson_counts(lam, np.random.default_rng(1))

    assert first.dtype == np.uint16
    np.testing.assert_array_equal(first, second)
    assert first[lam == 0].max() == 0


def test_read_out_scales_to_total_counts_and_mirrors_the_posterior() -> None:
    activity = np.zeros((128, 64), dtype=np.float32)
    activity[40:60, 5:12] = 1.0  # off-centre: on the image left, anteriorly

    anterior, posterior = read_out(
        activity,
        activity.copy(),
        fwhm_mm=10.0,
        spacing_mm=2.0,
        total_counts=(1e5, 2e5),
        rng=np.random.default_rng(0),
    )

    assert anterior.sum() == pytest.approx(1e5, rel=0.02)
    assert posterior.sum() == pytest.approx(2e5, rel=0.02)
    assert anterior[:, :32].sum() > 0.95 * anterior.sum()
    assert posterior[:, 32:].sum() > 0.95 * posterior.sum()
