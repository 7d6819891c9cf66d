"""The one intensity convention every enhancer, metric and tool shares.

A fast (or low-count) acquisition holds ``1/speed`` of the standard counts.
Enhancers work on counts **scaled to the standard acquisition**
(``fast * speed``), divided by one intensity level: the ``clip_percentile``
percentile of that scaled image (the same rule preprocessing uses for the
classifier's canvas). The target of training is the standard scan divided by
the *same* level, so a network's output times the level is again counts of a
standard acquisition (:func:`to_counts`). Images are not clipped for the
networks: hot spots keep their contrast.

Quality metrics (PSNR, SSIM) compare images on the standard scan's unit range:
each image divided by the standard's level and clipped to ``[0, 1]``
(:func:`unit_range`).
"""

from __future__ import annotations

import numpy as np

from fedbone.errors import Problem
from fedbone.validation.errors import EvaluationError

__all__ = ["intensity_level", "network_input", "to_counts", "unit_range"]

#: Percentile of the intensity level, as in preprocessing (SCIENCE.md).
DEFAULT_PERCENTILE = 99.5


def intensity_level(
    counts: np.ndarray, percentile: float = DEFAULT_PERCENTILE
) -> float:
    """Return the ``percentile`` percentile of ``counts`` (its maximum if that is 0).

    Raises
    ------
    EvaluationError
        ``empty-image`` when the image holds no counts at all, or
        ``non-finite-counts`` for NaN or infinite values.
    """
    values = np.asarray(counts, dtype=np.float64)
    if not np.isfinite(values).all():
        raise EvaluationError(
            "intensity level",
            [Problem("non-finite-counts", "the image holds NaN or infinite values")],
        )
    level = float(np.percentile(values, percentile))
    if level <= 0:
        level = float(values.max(initial=0.0))
    if level <= 0:
        raise EvaluationError(
            "intensity level",
            [Problem("empty-image", "the image holds no counts; nothing to scale")],
        )
    return level


def network_input(
    fast_counts: np.ndarray, speed: float, percentile: float = DEFAULT_PERCENTILE
) -> tuple[np.ndarray, float]:
    """Scale a fast scan to the standard acquisition and to the network's range.

    Parameters
    ----------
    fast_counts
        The fast (low-count) acquisition's counts on the canvas.
    speed
        Standard counts over fast counts (2 for a 2x scan, 1000/300 for
        300 kcounts out of 1,000 kcounts).
    percentile
        The intensity level's percentile.

    Returns
    -------
    tuple
        ``float32`` network input and the level it was divided by.
    """
    scaled = np.asarray(fast_counts, dtype=np.float32) * np.float32(speed)
    level = intensity_level(scaled, percentile)
    return scaled / np.float32(level), level


def to_counts(output: np.ndarray, level: float) -> np.ndarray:
    """Turn a network output back into non-negative standard-acquisition counts."""
    return np.maximum(np.asarray(output, dtype=np.float32) * np.float32(level), 0.0)


def unit_range(counts: np.ndarray, standard_level: float) -> np.ndarray:
    """Divide by the standard scan's level and clip to ``[0, 1]`` (for metrics)."""
    return np.clip(
        np.asarray(counts, dtype=np.float32) / np.float32(standard_level), 0.0, 1.0
    )
