"""The classical baseline: Gaussian smoothing with a width fitted on the pairs.

Ito et al. compared their networks with Gaussian filtering of the low-count
image; any trained enhancer has to beat it to be worth the training. The
width is the one of a few candidates that gives the best mean PSNR on the
site's training pairs, on the standard scan's unit range (both images clipped
to ``[0, 1]`` in the divide-by-level scale, as
:func:`fedbone.enhance.scaling.unit_range` does for counts).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from fedbone.enhance.errors import EnhanceError
from fedbone.errors import Problem

__all__ = ["DEFAULT_SIGMAS", "fit_gaussian_sigma", "gaussian_enhance"]

#: Candidate widths (pixels) that :func:`fit_gaussian_sigma` tries.
DEFAULT_SIGMAS = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
# The MSE floor of the PSNR: identical images score 120 dB, not infinity.
_MSE_FLOOR = 1e-12


def _images(name: str, values: np.ndarray) -> tuple[np.ndarray, list[Problem]]:
    images = np.asarray(values, dtype=np.float32)
    if images.ndim != 3 or images.shape[0] == 0:
        return images, [
            Problem(
                "bad-shape", f"got shape {images.shape}, need (N, H, W), N >= 1", name
            )
        ]
    if not np.isfinite(images).all():
        return images, [Problem("non-finite", "NaN or infinite values", name)]
    return images, []


def gaussian_enhance(inputs: np.ndarray, sigma_px: float) -> np.ndarray:
    """Smooth every image with an isotropic Gaussian of ``sigma_px`` pixels.

    Edges are reflected; a sigma of 0 returns the images unchanged.

    Returns
    -------
    numpy.ndarray
        ``(N, H, W)`` float32.

    Raises
    ------
    EnhanceError
        For inputs that are not ``(N, H, W)`` or not finite, or a negative or
        non-finite sigma.
    """
    images, problems = _images("inputs", inputs)
    if not (np.isfinite(sigma_px) and sigma_px >= 0):
        problems.append(
            Problem("bad-sigma", f"got {sigma_px!r}, need >= 0", "sigma_px")
        )
    EnhanceError.raise_if_any("gaussian baseline", problems)
    smoothed = ndimage.gaussian_filter(images, sigma=(0.0, sigma_px, sigma_px))
    return smoothed.astype(np.float32, copy=False)


def _mean_psnr(images: np.ndarray, targets: np.ndarray) -> float:
    difference = np.clip(images, 0.0, 1.0) - np.clip(targets, 0.0, 1.0)
    mse = np.maximum(
        np.mean(difference.astype(np.float64) ** 2, axis=(1, 2)), _MSE_FLOOR
    )
    return float(np.mean(-10.0 * np.log10(mse)))


def fit_gaussian_sigma(
    inputs: np.ndarray,
    targets: np.ndarray,
    candidates: Sequence[float] = DEFAULT_SIGMAS,
) -> float:
    """Return the candidate sigma with the best mean PSNR on training pairs.

    Parameters
    ----------
    inputs
        ``(N, H, W)`` network inputs (fast scans, divide-by-level scale).
    targets
        ``(N, H, W)`` standard scans divided by the same levels.
    candidates
        Widths to try, in pixels; ties go to the first listed.

    Returns
    -------
    float
        The best sigma.

    Raises
    ------
    EnhanceError
        For mismatched or malformed images, or no (or a negative) candidate.
    """
    images, problems = _images("inputs", inputs)
    wanted, more = _images("targets", targets)
    problems += more
    if not problems and images.shape != wanted.shape:
        problems.append(
            Problem(
                "shape-mismatch", f"inputs {images.shape} but targets {wanted.shape}"
            )
        )
    if not candidates or any(not sigma >= 0 for sigma in candidates):
        problems.append(
            Problem(
                "bad-candidates",
                f"got {tuple(candidates)!r}, need one or more sigmas >= 0",
                "candidates",
            )
        )
    EnhanceError.raise_if_any("gaussian baseline", problems)
    scores = [
        _mean_psnr(gaussian_enhance(images, sigma), wanted) for sigma in candidates
    ]
    return float(candidates[int(np.argmax(scores))])
