"""The gamma camera: resolution blur, count level and Poisson noise.

Poisson sampling of half a million pixels with ``Generator.poisson`` costs
~25 ms, more than the whole rest of a phantom scan, so counts are drawn by
inverse-CDF table look-up from one random 12-bit integer per pixel: an exact
Poisson table for expected counts below 25 (rows indexed by the square root of
the expectation, so low-count background is resolved finely), and a Gaussian
quantile ``lam + sqrt(lam) z`` above that, where Poisson and normal agree to
well under a count.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage
from scipy.special import ndtri

__all__ = ["poisson_counts", "read_out"]

_U_LEVELS = 4096  # resolution of the uniform variate (12 bits)
_TABLE_MAX_SQRT = 5.0  # table covers expectations below 25 counts
_SQRT_STEPS = 128  # table rows per unit of sqrt(expectation)
_MAX_COUNT = 65535
_BLOCK = 16384  # pixels per block of noise sampling


@functools.cache
def _tables() -> tuple[np.ndarray, np.ndarray]:
    """Poisson quantiles per (sqrt-expectation row, uniform level), z quantiles."""
    n_rows = int(_TABLE_MAX_SQRT * _SQRT_STEPS) + 1
    lam = (np.arange(n_rows) / _SQRT_STEPS) ** 2
    ks = np.arange(80)
    log_pmf = ks[None, :] * np.log(np.maximum(lam, 1e-300))[:, None] - lam[:, None]
    log_pmf -= np.cumsum(np.log(np.maximum(ks, 1)))[None, :]
    cdf = np.cumsum(np.exp(log_pmf), axis=1)
    cdf[0] = 1.0  # lam == 0 gives zero counts
    mids = (np.arange(_U_LEVELS) + 0.5) / _U_LEVELS
    table = np.empty((n_rows, _U_LEVELS), dtype=np.uint8)
    for row in range(n_rows):
        table[row] = np.minimum(np.searchsorted(cdf[row], mids), 255)
    z = ndtri(mids).astype(np.float32)
    return table.ravel(), z


def poisson_counts(expected: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw Poisson counts for an array of expectations.

    Parameters
    ----------
    expected
        Non-negative expected counts per pixel (any shape).
    rng
        Source of randomness; the same state gives the same counts.

    Returns
    -------
    numpy.ndarray
        ``uint16`` counts, same shape as ``expected``.
    """
    lam = np.maximum(np.asarray(expected, dtype=np.float32), 0.0).ravel()
    levels = np.frombuffer(rng.bytes(2 * lam.size), dtype=np.uint16)
    counts = np.zeros(lam.size, dtype=np.uint16)
    # Blocks small enough to stay in cache: several times faster than
    # whole-image temporaries, which the allocator hands back to the OS.
    for start in range(0, lam.size, _BLOCK):
        block = slice(start, start + _BLOCK)
        _sample_block(lam[block], levels[block], counts[block])
    return counts.reshape(np.shape(expected))


def _sample_block(lam: np.ndarray, levels: np.ndarray, out: np.ndarray) -> None:
    table, z_table = _tables()
    level = levels & np.uint16(_U_LEVELS - 1)
    root = np.sqrt(lam)
    row = root * np.float32(_SQRT_STEPS)
    row += np.float32(0.5)
    np.minimum(row, np.float32(_TABLE_MAX_SQRT * _SQRT_STEPS), out=row)
    index = row.astype(np.int32)
    index *= _U_LEVELS
    index += level
    large = z_table[level]
    large *= root
    large += lam
    np.rint(large, out=large)
    np.clip(large, 0, _MAX_COUNT, out=large)
    np.copyto(large, table[index], where=root < np.float32(_TABLE_MAX_SQRT))
    out[:] = large


def read_out(
    anterior: np.ndarray,
    posterior: np.ndarray,
    *,
    fwhm_mm: float,
    spacing_mm: float,
    total_counts: tuple[float, float],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Turn activity maps into the two count images a camera records.

    Parameters
    ----------
    anterior, posterior
        Activity seen by each head, both in anterior orientation.
    fwhm_mm
        System resolution (full width at half maximum) of the camera.
    spacing_mm
        Pixel size.
    total_counts
        Expected total counts of the anterior and posterior view.
    rng
        Source of the Poisson noise.

    Returns
    -------
    tuple of numpy.ndarray
        ``uint16`` anterior view, and the posterior view as the posterior head
        sees it (mirrored: patient's left on the image left).
    """
    sigma = fwhm_mm / (2.0 * np.sqrt(2.0 * np.log(2.0))) / spacing_mm
    counts = np.zeros((2, *anterior.shape), dtype=np.uint16)
    # Only the body's bounding box (plus the blur's reach) can hold counts;
    # the empty field above the head and below the feet is skipped.
    window = _support(anterior + posterior, margin=int(np.ceil(3.0 * sigma)) + 1)
    if window is not None:
        stack = np.stack([anterior[window], posterior[window]])
        blurred = ndimage.gaussian_filter(stack, (0.0, sigma, sigma), truncate=3.0)
        np.maximum(blurred, 0.0, out=blurred)
        for view, target in enumerate(total_counts):
            total = float(blurred[view].sum(dtype=np.float64))
            blurred[view] *= np.float32(target / total) if total > 0 else 0.0
        counts[(slice(None), *window)] = poisson_counts(blurred, rng)
    return counts[0], np.ascontiguousarray(counts[1][:, ::-1])


def _support(activity: np.ndarray, margin: int) -> tuple[slice, slice] | None:
    """Bounding box of the non-zero activity, widened by ``margin`` pixels."""
    rows = np.flatnonzero(activity.any(axis=1))
    columns = np.flatnonzero(activity.any(axis=0))
    if rows.size == 0:
        return None
    return (
        slice(max(rows[0] - margin, 0), rows[-1] + margin + 1),
        slice(max(columns[0] - margin, 0), columns[-1] + margin + 1),
    )
