"""Align a real fast acquisition with the standard scan of the same visit.

Between the two acquisitions the patient may have moved on the table by a
few millimetres (Qi et al. 2024 register their real pairs before training).
Whole-body planar scans of one visit differ mainly by such a translation, so
the shift is the whole-pixel one that maximises the cross-correlation of the
two count images, searched within ``max_shift`` pixels; all lags are computed
at once by FFT.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from fedbone.enhance.errors import EnhanceError
from fedbone.errors import Problem

__all__ = ["apply_shift", "register_translation"]


def _image_problems(where: str, image: np.ndarray) -> list[Problem]:
    if image.ndim != 2:
        return [
            Problem(
                "not-an-image", f"expected a 2-D image, got shape {image.shape}", where
            )
        ]
    if not np.isfinite(image).all():
        return [
            Problem(
                "non-finite-counts", "the image holds NaN or infinite values", where
            )
        ]
    return []


def register_translation(
    reference: np.ndarray, moving: np.ndarray, max_shift: int = 8
) -> tuple[int, int]:
    """Return the whole-pixel shift that best aligns ``moving`` with ``reference``.

    Parameters
    ----------
    reference
        The standard scan's counts (2-D).
    moving
        The image to align, of the same shape.
    max_shift
        Largest shift searched along each axis, in pixels.

    Returns
    -------
    tuple of int
        ``(dy, dx)`` such that ``apply_shift(moving, (dy, dx))`` matches
        ``reference`` best: the shift maximising the cross-correlation; among
        equal maxima the smallest shift.

    Raises
    ------
    EnhanceError
        For images that are not 2-D, not finite or not of one shape, or a
        negative ``max_shift``; every problem listed.
    """
    fixed = np.asarray(reference, dtype=np.float64)
    image = np.asarray(moving, dtype=np.float64)
    problems = [
        *_image_problems("reference", fixed),
        *_image_problems("moving", image),
    ]
    if not problems and fixed.shape != image.shape:
        problems.append(
            Problem(
                "shape-mismatch",
                f"reference {fixed.shape} and moving {image.shape} differ; put "
                "both on the same canvas first",
            )
        )
    if max_shift < 0:
        problems.append(Problem("invalid-shift", f"max_shift {max_shift} must be >= 0"))
    EnhanceError.raise_if_any("registration", problems)
    # full[k] = sum_n fixed[n + k - (size - 1)] * moving[n]: lag s sits at
    # index s + size - 1 along each axis.
    full = signal.correlate(fixed, image, mode="full", method="fft")
    height, width = image.shape
    rows = np.arange(-min(max_shift, height - 1), min(max_shift, height - 1) + 1)
    columns = np.arange(-min(max_shift, width - 1), min(max_shift, width - 1) + 1)
    window = full[np.ix_(rows + height - 1, columns + width - 1)]
    dy, dx = np.meshgrid(rows, columns, indexing="ij")
    # FFT round-off makes exact ties unequal; treat near-equal values as tied.
    best = window >= window.max() - 1e-9 * max(abs(window.max()), 1.0)
    distance = np.where(best, dy**2 + dx**2, np.iinfo(np.int64).max)
    row, column = np.unravel_index(int(np.argmin(distance)), distance.shape)
    return int(dy[row, column]), int(dx[row, column])


def _overlap(offset: int, size: int) -> tuple[slice, slice]:
    """Target and source of a move by ``offset`` pixels along one axis."""
    kept = max(size - abs(offset), 0)
    start = max(offset, 0)
    return slice(start, start + kept), slice(start - offset, start - offset + kept)


def apply_shift(image: np.ndarray, shift: tuple[int, int]) -> np.ndarray:
    """Move an image by whole pixels; what enters from the edge is zero.

    Parameters
    ----------
    image
        2-D image.
    shift
        ``(dy, dx)``: positive moves the content down and to the right.

    Returns
    -------
    numpy.ndarray
        A new array of the same shape and dtype.
    """
    values = np.asarray(image)
    target_rows, source_rows = _overlap(int(shift[0]), values.shape[0])
    target_columns, source_columns = _overlap(int(shift[1]), values.shape[1])
    moved = np.zeros_like(values)
    moved[target_rows, target_columns] = values[source_rows, source_columns]
    return moved
