"""Image-quality metrics of enhanced scans, and their poolable sums.

Enhanced, fast and standard scans are compared on the standard scan's unit
range (:func:`fedbone.enhance.scaling.unit_range`), so ``data_range`` is 1.

* :func:`psnr` / :func:`psnr_batch`: peak signal-to-noise ratio,
  ``10 log10(data_range^2 / MSE)`` in dB; ``inf`` for identical images (as
  scikit-image's ``peak_signal_noise_ratio``).
* :func:`ssim_batch` / :func:`ms_ssim_batch`: structural similarity and its
  multi-scale form through :mod:`fedbone.generative.fidelity.ssim` (MONAI's
  Gaussian-window implementation, 11 px window, sigma 1.5, population
  covariances, mean over valid window positions): the same definition as
  scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False)``. MONAI computes in float32, so the two agree
  to about 1e-6, not to float64 precision.
* :class:`QualitySums`: ``n``, sum and sum of squares of one metric, which a
  site reports instead of per-scan values; sums from several sites add up to
  the pooled mean and standard deviation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from fedbone.errors import Problem
from fedbone.generative.fidelity.ssim import ms_ssim, ssim
from fedbone.validation.errors import EvaluationError

__all__ = [
    "QualitySums",
    "ms_ssim_batch",
    "psnr",
    "psnr_batch",
    "read_sums_record",
    "ssim_batch",
]

# Pairs per MONAI call: bounds memory on full 1024 x 512 canvases.
_CHUNK = 16

_PairMetric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio of one image pair, in dB.

    Parameters
    ----------
    a, b
        Images of the same shape (any number of dimensions), e.g. the standard
        scan and an enhanced scan on the standard's unit range.
    data_range
        Span of the intensities (1 on the unit range).

    Returns
    -------
    float
        ``10 log10(data_range**2 / mean((a - b)**2))``; ``inf`` when the images
        are identical.

    Raises
    ------
    EvaluationError
        ``shape-mismatch``, ``empty-image``, ``non-finite-values``,
        ``bad-data-range``.
    """
    first, second = _as_float64("psnr", a, b, data_range=data_range, ndim=None)
    return float(_psnr_rows(first[None], second[None], data_range)[0])


def psnr_batch(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """Peak signal-to-noise ratio of each pair of two ``(N, H, W)`` batches.

    Parameters
    ----------
    a, b
        ``(N, H, W)`` image batches, paired along the first axis.
    data_range
        Span of the intensities.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` float64 in dB (``inf`` for an identical pair).

    Raises
    ------
    EvaluationError
        As :func:`psnr`, plus ``not-image-batch``.
    """
    first, second = _as_float64("psnr_batch", a, b, data_range=data_range, ndim=3)
    return _psnr_rows(first, second, data_range)


def ssim_batch(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """Structural similarity of each pair of two ``(N, H, W)`` batches.

    Parameters
    ----------
    a, b
        ``(N, H, W)`` image batches with values in ``[0, data_range]``; ``H``
        and ``W`` at least 11 (the Gaussian window).
    data_range
        Span of the intensities.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` float64; 1 for identical images.

    Raises
    ------
    EvaluationError
        As :func:`psnr_batch`, and the problems of
        :func:`fedbone.generative.fidelity.ssim.ssim`.
    """
    first, second = _as_float64("ssim_batch", a, b, data_range=data_range, ndim=3)
    return _per_chunk(first, second, lambda x, y: ssim(x, y, data_range=data_range))


def ms_ssim_batch(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """Multi-scale structural similarity of each pair of two ``(N, H, W)`` batches.

    As many of Wang et al.'s five scales as the image holds are used
    (:func:`fedbone.generative.fidelity.ssim.ms_ssim_scales`: two for a
    64 x 32 patch, three for 256 x 64), so values compare only between images
    of one size.

    Parameters
    ----------
    a, b
        ``(N, H, W)`` image batches with values in ``[0, data_range]``.
    data_range
        Span of the intensities.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` float64 in ``[0, 1]``; 1 for identical images.

    Raises
    ------
    EvaluationError
        As :func:`ssim_batch`.
    """
    first, second = _as_float64("ms_ssim_batch", a, b, data_range=data_range, ndim=3)
    return _per_chunk(first, second, lambda x, y: ms_ssim(x, y, data_range=data_range))


@dataclass(frozen=True)
class QualitySums:
    """Count, sum and sum of squares of one quality metric (PSNR, SSIM, LPIPS...).

    A site reports these per method and count level; :meth:`__add__` pools
    sites, and :attr:`mean` and :attr:`sd` of the pooled sums equal those of
    all the values together.

    Parameters
    ----------
    n
        Number of values.
    sum
        Their sum.
    sum_sq
        The sum of their squares.
    """

    n: int = 0
    sum: float = 0.0
    sum_sq: float = 0.0

    @classmethod
    def of(cls, values: np.ndarray) -> QualitySums:
        """Sum a 1-D array of finite metric values.

        Raises
        ------
        EvaluationError
            ``not-one-dimensional`` or ``non-finite-values`` (e.g. the ``inf``
            PSNR of an identical pair).
        """
        array = np.asarray(values, dtype=np.float64)
        problems = []
        if array.ndim != 1:
            problems.append(
                Problem(
                    "not-one-dimensional",
                    f"values have shape {array.shape}; pass one value per scan",
                )
            )
        if not np.isfinite(array).all():
            problems.append(
                Problem(
                    "non-finite-values",
                    "values hold NaN or infinity; drop identical pairs (PSNR inf) "
                    "or report them separately",
                )
            )
        EvaluationError.raise_if_any("quality values", problems)
        return cls(
            n=int(array.size),
            sum=float(array.sum()),
            sum_sq=float(np.square(array).sum()),
        )

    def __add__(self, other: QualitySums) -> QualitySums:
        if not isinstance(other, QualitySums):
            return NotImplemented
        return QualitySums(
            n=self.n + other.n,
            sum=self.sum + other.sum,
            sum_sq=self.sum_sq + other.sum_sq,
        )

    @property
    def mean(self) -> float:
        """Mean of the values; NaN when there are none."""
        return self.sum / self.n if self.n else math.nan

    @property
    def sd(self) -> float:
        """Sample standard deviation (``n - 1``); NaN for fewer than 2 values."""
        if self.n < 2:
            return math.nan
        squares = self.sum_sq - self.sum * self.sum / self.n
        return math.sqrt(max(squares, 0.0) / (self.n - 1))

    def to_dict(self) -> dict[str, float]:
        """Kebab-case record: ``n``, ``sum``, ``sum-sq``."""
        return {"n": self.n, "sum": self.sum, "sum-sq": self.sum_sq}

    @classmethod
    def from_dict(cls, record: Mapping[str, float]) -> QualitySums:
        """Read a record written by :meth:`to_dict`.

        Raises
        ------
        EvaluationError
            ``missing-key``, ``not-a-number``, ``bad-count``, listing all.
        """
        values = read_sums_record("quality sums", record, ("n", "sum", "sum-sq"))
        return cls(n=int(values["n"]), sum=values["sum"], sum_sq=values["sum-sq"])


def read_sums_record(
    subject: str, record: Mapping[str, float], keys: tuple[str, ...]
) -> dict[str, float]:
    """Read ``keys`` of a sums record (a ``to_dict`` of pooled sums) as floats.

    Parameters
    ----------
    subject
        What is read, for the error message.
    record
        The kebab-case record.
    keys
        The keys it must hold; ``n``, when among them, must be a whole count.

    Returns
    -------
    dict
        Each key's finite float value.

    Raises
    ------
    EvaluationError
        ``missing-key``, ``not-a-number``, ``bad-count``, listing all.
    """
    problems = []
    values: dict[str, float] = {}
    for key in keys:
        if key not in record:
            problems.append(
                Problem(
                    "missing-key",
                    f"the record lacks {key!r}; expected keys {list(keys)}",
                    key,
                )
            )
            continue
        try:
            value = float(record[key])
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value):
            problems.append(
                Problem(
                    "not-a-number",
                    f"{record[key]!r} is not a finite number",
                    key,
                )
            )
            continue
        values[key] = value
    count = values.get("n")
    if count is not None and (count < 0 or count != int(count)):
        problems.append(
            Problem("bad-count", f"n is {count}; expected a whole count >= 0", "n")
        )
    EvaluationError.raise_if_any(subject, problems)
    return values


def _psnr_rows(a: np.ndarray, b: np.ndarray, data_range: float) -> np.ndarray:
    squared = np.square(a - b).reshape(len(a), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(data_range**2 / squared)


def _per_chunk(a: np.ndarray, b: np.ndarray, metric: _PairMetric) -> np.ndarray:
    values = []
    for start in range(0, len(a), _CHUNK):
        first = torch.from_numpy(a[start : start + _CHUNK]).float().unsqueeze(1)
        second = torch.from_numpy(b[start : start + _CHUNK]).float().unsqueeze(1)
        with torch.no_grad():
            values.append(metric(first, second).double().numpy())
    return np.concatenate(values)


def _as_float64(
    subject: str,
    a: np.ndarray,
    b: np.ndarray,
    *,
    data_range: float,
    ndim: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Check an image pair (or batch pair); return both as float64 arrays."""
    first = np.asarray(a, dtype=np.float64)
    second = np.asarray(b, dtype=np.float64)
    problems = []
    if ndim is not None:
        for name, images in (("a", first), ("b", second)):
            if images.ndim != ndim:
                problems.append(
                    Problem(
                        "not-image-batch",
                        f"{name} has shape {images.shape}; pass (N, H, W) images "
                        "paired along the first axis",
                        name,
                    )
                )
    if first.shape != second.shape:
        problems.append(
            Problem(
                "shape-mismatch",
                f"a has shape {first.shape} and b {second.shape}; compare images "
                "of the same canvas",
            )
        )
    if first.size == 0 or second.size == 0:
        problems.append(Problem("empty-image", "there are no pixels to compare"))
    if not (np.isfinite(first).all() and np.isfinite(second).all()):
        problems.append(
            Problem("non-finite-values", "the images hold NaN or infinite values")
        )
    if not (math.isfinite(data_range) and data_range > 0):
        problems.append(
            Problem(
                "bad-data-range",
                f"data_range is {data_range}; pass the positive intensity span "
                "(1 for unit-range images)",
            )
        )
    EvaluationError.raise_if_any(subject, problems)
    return first, second
