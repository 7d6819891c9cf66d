from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
import torch
from monai.metrics import MultiScaleSSIMMetric, SSIMMetric
from scipy import signal

from fedbone.generative.fidelity.ssim import (
    MS_SSIM_WEIGHTS,
    ms_ssim,
    ms_ssim_scales,
    ssim,
)
from fedbone.validation.errors import EvaluationError

Image = npt.NDArray[np.float64]


def scan_like(height: int, width: int, seed: int) -> torch.Tensor:
    """A smooth 'skeleton' of bright blobs on a dim body, in [0, 1]."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    image = 0.1 + 0.1 * rows / height
    for _ in range(12):
        centre_row, centre_col = rng.uniform(0, height), rng.uniform(0, width)
        spread = rng.uniform(2, 8)
        image += rng.uniform(0.2, 0.6) * np.exp(
            -((rows - centre_row) ** 2 + (cols - centre_col) ** 2) / (2 * spread**2)
        )
    return torch.from_numpy(np.clip(image, 0, 1)).float()[None, None]


def noisy(images: torch.Tensor, level: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(images.shape, generator=generator) * level
    return (images + noise).clamp(0, 1)


def image_pairs(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch of 3 pairs: structured vs noisy copy, structured vs another scan,
    uniform random vs uniform random."""
    generator = torch.Generator().manual_seed(7)
    first = torch.cat(
        [
            scan_like(height, width, 1),
            scan_like(height, width, 2),
            torch.rand((1, 1, height, width), generator=generator),
        ]
    )
    second = torch.cat(
        [
            noisy(scan_like(height, width, 1), 0.05, 3),
            scan_like(height, width, 4),
            torch.rand((1, 1, height, width), generator=generator),
        ]
    )
    return first, second


def reference_value(
    metric: SSIMMetric | MultiScaleSSIMMetric, a: torch.Tensor, b: torch.Tensor
) -> torch.Tensor:
    value = metric(a, b)
    assert isinstance(value, torch.Tensor)
    return value.flatten()


def reference_ssim_and_cs(
    x: Image, y: Image, win_size: int, sigma: float
) -> tuple[float, float]:
    """Mean SSIM and contrast-structure terms from the definition (scipy)."""
    offsets = np.arange(win_size) - (win_size - 1) / 2
    line = np.exp(-(offsets**2) / (2 * sigma**2))
    window = np.outer(line, line) / line.sum() ** 2
    c1, c2 = 0.01**2, 0.03**2

    def local_mean(image: Image) -> Image:
        return signal.correlate2d(image, window, mode="valid")

    mu_x, mu_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mu_x**2
    var_y = local_mean(y * y) - mu_y**2
    cov = local_mean(x * y) - mu_x * mu_y
    cs = (2 * cov + c2) / (var_x + var_y + c2)
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return float((luminance * cs).mean()), float(cs.mean())


def reference_ms_ssim(
    x: Image, y: Image, weights: tuple[float, ...], win_size: int = 11
) -> float:
    value = 1.0
    for scale, weight in enumerate(weights):
        similarity, cs = reference_ssim_and_cs(x, y, win_size, 1.5)
        last = scale == len(weights) - 1
        value *= max(similarity if last else cs, 0.0) ** weight
        height, width = (x.shape[0] // 2) * 2, (x.shape[1] // 2) * 2
        x = x[:height, :width].reshape(height // 2, 2, width // 2, 2).mean((1, 3))
        y = y[:height, :width].reshape(height // 2, 2, width // 2, 2).mean((1, 3))
    return value


def test_identical_images_score_one() -> None:
    # Prepare
    images = torch.cat([scan_like(256, 64, seed) for seed in range(3)])

    # Execute
    single = ssim(images, images.clone())
    multi = ms_ssim(images, images.clone())

    # Assert
    assert single.shape == multi.shape == (3,)
    torch.testing.assert_close(single, torch.ones(3))
    torch.testing.assert_close(multi, torch.ones(3))


def test_similarity_decreases_with_noise() -> None:
    # Prepare
    clean = scan_like(256, 64, 11)
    copies = torch.cat([noisy(clean, level, 5) for level in (0.01, 0.05, 0.1, 0.3)])
    references = clean.expand_as(copies)

    # Execute
    single = ssim(references, copies)
    multi = ms_ssim(references, copies)

    # Assert
    assert torch.all(single[1:] < single[:-1])
    assert torch.all(multi[1:] < multi[:-1])


def test_ssim_matches_definition_and_monai() -> None:
    # Prepare
    first, second = image_pairs(40, 24)
    monai = SSIMMetric(spatial_dims=2, win_size=11, kernel_sigma=1.5, reduction="none")

    # Execute
    ours = ssim(first, second)

    # Assert
    expected = [
        reference_ssim_and_cs(x[0].double().numpy(), y[0].double().numpy(), 11, 1.5)[0]
        for x, y in zip(first, second, strict=True)
    ]
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-4)
    torch.testing.assert_close(
        ours, reference_value(monai, first, second), atol=1e-6, rtol=0
    )


def test_ms_ssim_with_five_scales_matches_monai_and_definition() -> None:
    # Prepare
    first, second = image_pairs(192, 176)
    monai = MultiScaleSSIMMetric(
        spatial_dims=2,
        kernel_type="gaussian",
        kernel_size=11,
        kernel_sigma=1.5,
        weights=MS_SSIM_WEIGHTS,
        reduction="none",
    )

    # Execute
    ours = ms_ssim(first, second)

    # Assert
    expected = [
        reference_ms_ssim(x[0].double().numpy(), y[0].double().numpy(), MS_SSIM_WEIGHTS)
        for x, y in zip(first, second, strict=True)
    ]
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-4)
    torch.testing.assert_close(
        ours, reference_value(monai, first, second), atol=1e-6, rtol=0
    )


@pytest.mark.parametrize(("win_size", "scales"), [(11, 3), (7, 4)])
def test_ms_ssim_on_256_by_64_uses_rescaled_leading_weights(
    win_size: int, scales: int
) -> None:
    # Prepare
    first, second = image_pairs(256, 64)
    leading = MS_SSIM_WEIGHTS[:scales]
    renormalised = tuple(
        weight * sum(MS_SSIM_WEIGHTS) / sum(leading) for weight in leading
    )
    monai = MultiScaleSSIMMetric(
        spatial_dims=2,
        kernel_size=win_size,
        kernel_sigma=1.5,
        weights=renormalised,
        reduction="none",
    )

    # Execute
    ours = ms_ssim(first, second, win_size=win_size)
    flipped = ms_ssim(first.transpose(2, 3), second.transpose(2, 3), win_size=win_size)

    # Assert
    expected = [
        reference_ms_ssim(
            x[0].double().numpy(), y[0].double().numpy(), renormalised, win_size
        )
        for x, y in zip(first, second, strict=True)
    ]
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-4)
    torch.testing.assert_close(
        ours, reference_value(monai, first, second), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(flipped, ours, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("height", "width", "win_size", "expected"),
    [
        (1024, 256, 11, 5),
        (256, 64, 11, 3),
        (256, 64, 7, 4),
        (176, 176, 11, 5),
        (175, 400, 11, 4),
        (10, 64, 11, 0),
    ],
)
def test_ms_ssim_scales_counts_what_fits(
    height: int, width: int, win_size: int, expected: int
) -> None:
    # Execute
    scales = ms_ssim_scales(height, width, win_size=win_size)

    # Assert
    assert scales == expected


def test_batch_is_pairwise_and_data_range_scales() -> None:
    # Prepare
    first, second = image_pairs(256, 64)

    # Execute
    batched = ms_ssim(first, second)
    one_by_one = torch.cat(
        [ms_ssim(x[None], y[None]) for x, y in zip(first, second, strict=True)]
    )
    in_counts = ms_ssim(first * 255, second * 255, data_range=255.0)

    # Assert
    torch.testing.assert_close(batched, one_by_one)
    torch.testing.assert_close(in_counts, batched, atol=1e-5, rtol=0)


def test_bad_inputs_list_every_problem() -> None:
    # Prepare
    images = torch.rand(2, 1, 32, 32)

    # Execute
    with pytest.raises(EvaluationError) as error:
        ssim(images[:, 0], torch.zeros(2, 1, 32, 32, dtype=torch.int64), win_size=4)
    with pytest.raises(EvaluationError) as too_small:
        ms_ssim(images, images, win_size=33)
    with pytest.raises(EvaluationError) as bad_weights:
        ms_ssim(images, images, weights=(0.5, -0.5))

    # Assert
    assert error.value.codes == [
        "not-image-batch",
        "not-floating-point",
        "shape-mismatch",
        "bad-window",
    ]
    assert too_small.value.codes == ["image-smaller-than-window"]
    assert bad_weights.value.codes == ["bad-weights"]
