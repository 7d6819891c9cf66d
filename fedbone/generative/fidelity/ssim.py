"""SSIM and multi-scale SSIM of single-channel image batches, wrapping MONAI.

The privacy audit of Haberl et al. (2025) compares every synthetic scan with
training scans by MS-SSIM (their most similar pair: 0.89). The maths is MONAI's
(:func:`monai.metrics.regression.compute_ssim_and_cs` and
:func:`~monai.metrics.regression.compute_ms_ssim`: Gaussian window, valid
convolution, 2x2 average pooling between scales, negative contrast terms clipped
to 0); this module fixes the configuration, checks inputs with fedbone's typed
errors, and picks how many scales an image can hold.

Scales: the default window is Wang et al.'s 11 px Gaussian with sigma 1.5. With
it, five scales need a shortest side of at least 176 px (the coarsest image must
hold a window, and MONAI asks for more than ``(win_size - 1) * (n - 1) ** 2``
px), so a 256 x 64 image cannot have them, nor with a 7 px window.
:func:`ms_ssim` therefore uses only the first :func:`ms_ssim_scales` weights,
rescaled to the total of the full set: three scales for 256 x 64 with the 11 px
window, four with a 7 px window, all five for a full 1024 x 256 scan. Values
are comparable only between images of the same size and settings.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.metrics.regression import compute_ms_ssim, compute_ssim_and_cs

from fedbone.errors import Problem
from fedbone.validation.errors import EvaluationError

__all__ = ["MS_SSIM_WEIGHTS", "ms_ssim", "ms_ssim_scales", "ssim"]

#: Scale weights of Wang et al. (2003), finest scale first.
MS_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def ssim(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    data_range: float = 1.0,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Mean structural similarity of each image pair (Wang et al. 2004).

    Parameters
    ----------
    a, b
        Image batches of the same shape ``(B, 1, H, W)``, floating point, with
        values in ``[0, data_range]``.
    data_range
        Span of the intensities (1 for images scaled to [0, 1]).
    win_size
        Side of the Gaussian window in pixels; 11 as in Wang et al. Both ``H``
        and ``W`` must be at least this.
    sigma
        Standard deviation of the Gaussian window in pixels.
    k1, k2
        Stability constants of the luminance and contrast terms.

    Returns
    -------
    torch.Tensor
        Shape ``(B,)``: the SSIM map of each pair averaged over valid window
        positions; 1 for identical images.

    Raises
    ------
    EvaluationError
        ``not-image-batch``, ``shape-mismatch``, ``not-floating-point``,
        ``image-smaller-than-window``, ``bad-window``, ``bad-data-range``.
    """
    _check_images("ssim", a, b, data_range=data_range, win_size=win_size, sigma=sigma)
    similarity, _ = compute_ssim_and_cs(
        y_pred=a,
        y=b,
        spatial_dims=2,
        kernel_size=(win_size, win_size),
        kernel_sigma=(sigma, sigma),
        data_range=data_range,
        kernel_type="gaussian",
        k1=k1,
        k2=k2,
    )
    return similarity.flatten(start_dim=1).mean(dim=1)


def ms_ssim(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    data_range: float = 1.0,
    weights: Sequence[float] = MS_SSIM_WEIGHTS,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Multi-scale structural similarity of each image pair (Wang et al. 2003).

    Parameters
    ----------
    a, b
        Image batches of the same shape ``(B, 1, H, W)``, floating point, with
        values in ``[0, data_range]``.
    data_range
        Span of the intensities (1 for images scaled to [0, 1]).
    weights
        Exponent of each scale, finest first. If the image is too small for all
        of them, only the first :func:`ms_ssim_scales` are used, rescaled to
        the total of all the weights (see the module notes).
    win_size, sigma, k1, k2
        As in :func:`ssim`, at every scale.

    Returns
    -------
    torch.Tensor
        Shape ``(B,)``, in [0, 1]; 1 for identical images.

    Raises
    ------
    EvaluationError
        The problems of :func:`ssim`, plus ``bad-weights``.
    """
    _check_images(
        "ms_ssim", a, b, data_range=data_range, win_size=win_size, sigma=sigma
    )
    if len(weights) == 0 or any(weight < 0 for weight in weights) or sum(weights) <= 0:
        EvaluationError.raise_if_any(
            "ms_ssim",
            [
                Problem(
                    "bad-weights",
                    f"weights are {tuple(weights)}; pass one non-negative weight per "
                    "scale with a positive sum, e.g. MS_SSIM_WEIGHTS",
                )
            ],
        )
    height, width = a.shape[-2:]
    scales = ms_ssim_scales(height, width, win_size=win_size, max_scales=len(weights))
    used = tuple(weights[:scales])
    # Rescaling keeps the exponents' total, so a full set of weights is passed
    # through unchanged (the standard set sums to 1.0001, not 1).
    rescale = sum(weights) / sum(used)
    similarity = compute_ms_ssim(
        y_pred=a,
        y=b,
        spatial_dims=2,
        data_range=data_range,
        kernel_type="gaussian",
        kernel_size=(win_size, win_size),
        kernel_sigma=(sigma, sigma),
        k1=k1,
        k2=k2,
        weights=tuple(weight * rescale for weight in used),
    )
    return similarity.flatten()


def ms_ssim_scales(
    height: int, width: int, *, win_size: int = 11, max_scales: int = 5
) -> int:
    """Count the MS-SSIM scales a ``height x width`` image can hold.

    A scale count ``n`` fits when the coarsest image (each side halved
    ``n - 1`` times) still holds a whole window, and MONAI's own check passes
    (each side larger than ``(win_size - 1) * (n - 1) ** 2``).

    Parameters
    ----------
    height, width
        Image size in pixels.
    win_size
        Side of the Gaussian window.
    max_scales
        Upper bound, normally the number of weights.

    Returns
    -------
    int
        Between 1 and ``max_scales``; ``0`` if the image is smaller than the
        window.
    """
    shortest = min(height, width)
    scales = 0
    for count in range(1, max_scales + 1):
        halved = shortest // 2 ** (count - 1)
        monai_ok = shortest // max(1, (count - 1) ** 2) > win_size - 1
        if halved < win_size or not monai_ok:
            break
        scales = count
    return scales


def _check_images(
    subject: str,
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    data_range: float,
    win_size: int,
    sigma: float,
) -> None:
    problems: list[Problem] = []
    for name, images in (("a", a), ("b", b)):
        if images.ndim != 4 or images.shape[1] != 1 or images.shape[0] == 0:
            problems.append(
                Problem(
                    "not-image-batch",
                    f"{name} has shape {tuple(images.shape)}; pass a non-empty "
                    "single-channel batch (B, 1, H, W), e.g. image[None, None]",
                    name,
                )
            )
        if not images.is_floating_point():
            problems.append(
                Problem(
                    "not-floating-point",
                    f"{name} has dtype {images.dtype}; convert with .float() and "
                    "scale to [0, data_range]",
                    name,
                )
            )
    if a.shape != b.shape:
        problems.append(
            Problem(
                "shape-mismatch",
                f"a has shape {tuple(a.shape)} and b {tuple(b.shape)}; compare "
                "images of the same size, paired along the batch",
            )
        )
    if win_size < 1 or win_size % 2 == 0 or sigma <= 0:
        problems.append(
            Problem(
                "bad-window",
                f"win_size {win_size} and sigma {sigma}; use an odd window side "
                "and a positive sigma, e.g. 11 and 1.5",
            )
        )
    elif a.ndim == 4 and min(a.shape[-2:]) < win_size:
        problems.append(
            Problem(
                "image-smaller-than-window",
                f"images are {a.shape[-2]} x {a.shape[-1]} px, smaller than the "
                f"{win_size} px window; use a smaller odd win_size",
            )
        )
    if not data_range > 0:
        problems.append(
            Problem(
                "bad-data-range",
                f"data_range is {data_range}; pass the positive intensity span, "
                "e.g. 1.0 for images in [0, 1]",
            )
        )
    EvaluationError.raise_if_any(subject, problems)
