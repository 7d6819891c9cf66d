"""The Gaussian baseline: the filter itself and the width it fits."""

from __future__ import annotations

import numpy as np
import pytest

from fedbone.enhance.errors import EnhanceError
from fedbone.enhance.gaussian import fit_gaussian_sigma, gaussian_enhance


def test_an_impulse_spreads_with_the_given_width_and_keeps_its_mass() -> None:
    # Prepare
    impulse = np.zeros((1, 65, 33), dtype=np.float32)
    impulse[0, 32, 16] = 1.0

    # Execute
    spread = gaussian_enhance(impulse, sigma_px=2.0)[0]

    # Assert
    rows = np.arange(65)[:, None] - 32
    assert spread.sum() == pytest.approx(1.0, abs=1e-5)
    assert (spread * rows**2).sum() == pytest.approx(4.0, rel=0.02)
    assert spread[32, 16] == spread.max()


def test_images_are_smoothed_independently() -> None:
    # Prepare
    images = np.zeros((2, 16, 8), dtype=np.float32)
    images[0, 8, 4] = 1.0

    # Execute
    smoothed = gaussian_enhance(images, sigma_px=1.5)

    # Assert
    assert smoothed.shape == images.shape and smoothed.dtype == np.float32
    assert not smoothed[1].any()


def test_fit_recovers_the_width_that_made_the_targets() -> None:
    # Prepare
    rng = np.random.default_rng(0)
    inputs = rng.random((6, 64, 32), dtype=np.float32)
    targets = gaussian_enhance(inputs, sigma_px=1.5)

    # Execute
    sigma = fit_gaussian_sigma(inputs, targets)

    # Assert
    assert sigma == 1.5


def test_fit_smooths_poisson_noise_more_than_the_smallest_candidate() -> None:
    # Prepare
    rng = np.random.default_rng(1)
    truth = np.full((8, 64, 32), 0.3, dtype=np.float32)
    noisy = (rng.poisson(truth * 20.0) / 20.0).astype(np.float32)

    # Execute
    sigma = fit_gaussian_sigma(noisy, truth, candidates=(0.5, 1.0, 3.0))

    # Assert
    assert sigma == 3.0


def test_bad_inputs_are_listed_together() -> None:
    # Execute
    with pytest.raises(EnhanceError) as caught:
        fit_gaussian_sigma(
            np.zeros((2, 8, 8)), np.zeros((3, 8, 8)), candidates=(1.0, -1.0)
        )

    # Assert
    assert caught.value.codes == ["shape-mismatch", "bad-candidates"]


def test_a_negative_sigma_is_refused() -> None:
    # Execute
    with pytest.raises(EnhanceError) as caught:
        gaussian_enhance(np.zeros((1, 8, 8)), sigma_px=-0.5)

    # Assert
    assert caught.value.codes == ["bad-sigma"]
