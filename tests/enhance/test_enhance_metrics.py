"""PSNR, SSIM and MS-SSIM of enhanced scans against scikit-image, and QualitySums.

MONAI (behind fedbone's SSIM) computes in float32, scikit-image in float64. On
64 x 64, 64 x 32 and 96 x 48 pairs (noisy copies, unrelated noise, blobs,
contrast changes) the largest gap measured was 4.1e-7 for SSIM and 8.0e-7 for
the two-scale MS-SSIM reference below, so the tests allow 2e-6.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from fedbone.enhance.metrics import (
    QualitySums,
    ms_ssim_batch,
    psnr,
    psnr_batch,
    ssim_batch,
)
from fedbone.generative.fidelity.ssim import MS_SSIM_WEIGHTS
from fedbone.validation.errors import EvaluationError

SSIM_TOLERANCE = 2e-6
SKIMAGE_SSIM = {
    "gaussian_weights": True,
    "sigma": 1.5,
    "use_sample_covariance": False,
    "data_range": 1.0,
}


def scan_like(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Bright blobs on a dim body, in [0, 1], float32-representable."""
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    image = 0.1 + 0.1 * rows / height
    for _ in range(8):
        row, col = rng.uniform(0, height), rng.uniform(0, width)
        spread = rng.uniform(1.5, 6.0)
        image += rng.uniform(0.2, 0.7) * np.exp(
            -((rows - row) ** 2 + (cols - col) ** 2) / (2 * spread**2)
        )
    return np.clip(image, 0, 1).astype(np.float32).astype(np.float64)


def pairs(height: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(4, H, W) batches: noisy copy, heavier noise, unrelated scan, random."""
    rng = np.random.default_rng(seed)
    first, second = [], []
    for noise in (0.03, 0.15):
        image = scan_like(height, width, rng)
        first.append(image)
        second.append(np.clip(image + rng.normal(0, noise, image.shape), 0, 1))
    first.append(scan_like(height, width, rng))
    second.append(scan_like(height, width, rng))
    first.append(rng.random((height, width)))
    second.append(rng.random((height, width)))
    as32 = [np.asarray(x, np.float32).astype(np.float64) for x in (first, second)]
    return as32[0], as32[1]


def halve(image: np.ndarray) -> np.ndarray:
    """2 x 2 average pooling, as MS-SSIM's downsampling."""
    height, width = image.shape
    return image.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))


def test_psnr_matches_scikit_image_for_each_pair() -> None:
    first, second = pairs(64, 32, seed=1)

    single = [psnr(a, b) for a, b in zip(first, second, strict=True)]
    batch = psnr_batch(first, second)

    expected = [
        peak_signal_noise_ratio(a, b, data_range=1.0)
        for a, b in zip(first, second, strict=True)
    ]
    np.testing.assert_allclose(single, expected, rtol=1e-12)
    np.testing.assert_allclose(batch, expected, rtol=1e-12)
    assert batch.shape == (4,)
    assert batch.dtype == np.float64


def test_psnr_uses_the_data_range_and_is_infinite_for_identical_images() -> None:
    first, second = pairs(32, 32, seed=2)

    scaled = psnr(first[0] * 1000, second[0] * 1000, data_range=1000.0)
    identical = psnr_batch(first[:2], first[:2])

    assert scaled == pytest.approx(psnr(first[0], second[0]), rel=1e-12)
    assert np.isposinf(identical).all()


@pytest.mark.parametrize(("height", "width"), [(64, 64), (64, 32)])
def test_ssim_matches_scikit_image_gaussian_ssim(height: int, width: int) -> None:
    first, second = pairs(height, width, seed=3)

    values = ssim_batch(first, second)

    expected = [
        structural_similarity(a, b, **SKIMAGE_SSIM)
        for a, b in zip(first, second, strict=True)
    ]
    np.testing.assert_allclose(values, expected, rtol=0, atol=SSIM_TOLERANCE)
    assert values[0] > values[1] > values[3]


def test_ms_ssim_matches_a_two_scale_reference_from_scikit_image() -> None:
    # A 64 x 32 image holds two scales of the 11 px window. MS-SSIM multiplies
    # the contrast-structure term of scale 1 and the SSIM of scale 2; the first
    # is scikit-image's SSIM with a luminance constant so large that the
    # luminance term is 1 (to ~1e-13).
    first, second = pairs(64, 32, seed=4)
    weights = np.array(MS_SSIM_WEIGHTS)
    used = weights[:2] * weights.sum() / weights[:2].sum()

    values = ms_ssim_batch(first, second)

    expected = []
    for a, b in zip(first, second, strict=True):
        contrast = structural_similarity(a, b, K1=1e6, **SKIMAGE_SSIM)
        coarse = structural_similarity(halve(a), halve(b), **SKIMAGE_SSIM)
        expected.append(max(contrast, 0) ** used[0] * max(coarse, 0) ** used[1])
    np.testing.assert_allclose(values, expected, rtol=0, atol=SSIM_TOLERANCE)
    np.testing.assert_allclose(ms_ssim_batch(first, first), 1.0, atol=1e-6)


def test_batch_metrics_list_every_problem_at_once() -> None:
    first, _ = pairs(32, 32, seed=5)

    with pytest.raises(EvaluationError) as caught:
        ssim_batch(first, first[:, :16], data_range=0.0)

    assert set(caught.value.codes) == {"shape-mismatch", "bad-data-range"}
    with pytest.raises(EvaluationError, match="not-image-batch"):
        psnr_batch(first[0], first[0])


def test_quality_sums_of_three_sites_equal_the_pooled_values() -> None:
    rng = np.random.default_rng(6)
    sites = [rng.normal(30.0, 2.0, size) for size in (5, 11, 7)]

    pooled = sum((QualitySums.of(values) for values in sites), QualitySums())
    restored = QualitySums.from_dict(pooled.to_dict())

    everything = np.concatenate(sites)
    assert pooled.n == 23
    assert pooled.mean == pytest.approx(everything.mean(), rel=1e-12)
    assert pooled.sd == pytest.approx(everything.std(ddof=1), rel=1e-9)
    assert restored == pooled
    assert set(pooled.to_dict()) == {"n", "sum", "sum-sq"}


def test_quality_sums_undefined_statistics_are_nan() -> None:
    one = QualitySums.of(np.array([0.9]))

    assert math.isnan(QualitySums().mean)
    assert one.mean == pytest.approx(0.9)
    assert math.isnan(one.sd)


def test_quality_sums_reject_infinite_values_and_bad_records() -> None:
    with pytest.raises(EvaluationError, match="non-finite-values"):
        QualitySums.of(np.array([31.0, math.inf]))

    with pytest.raises(EvaluationError) as caught:
        QualitySums.from_dict({"n": 2.5, "sum": "many"})

    assert caught.value.codes == ["not-a-number", "missing-key", "bad-count"]
