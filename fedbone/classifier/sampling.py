"""Which training scans an epoch visits: class balancing for rare findings.

Metastases are present in roughly one scan in ten, so an epoch over the raw
training split mostly teaches the negative class. Two published remedies:

- random oversampling of the minority class (Haberl et al.): every scan once,
  plus minority scans drawn with replacement until the classes are even;
- balanced epochs (Ibrahim et al.): every minority scan and an equal-sized
  random draw, without replacement, of the majority class, redrawn each epoch.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np

__all__ = ["Sampling", "balanced_epoch", "epoch_indices", "oversample_minority"]


class Sampling(StrEnum):
    """How an epoch draws its training scans."""

    OVERSAMPLE = "oversample"
    BALANCED = "balanced"
    NONE = "none"


def _classes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return positions of the minority and majority class (0/1 labels)."""
    values = np.asarray(labels)
    if values.ndim != 1 or not np.isin(values, (0, 1)).all():
        raise ValueError("labels must be a 1-D array of 0/1 (drop unknown labels)")
    positives = np.flatnonzero(values == 1)
    negatives = np.flatnonzero(values == 0)
    if len(positives) <= len(negatives):
        return positives, negatives
    return negatives, positives


def oversample_minority(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Every scan once plus minority repeats until both classes are even.

    Parameters
    ----------
    labels
        0/1 label of each training scan.
    rng
        Source of the draws.

    Returns
    -------
    numpy.ndarray
        Shuffled positions into ``labels``. With one class absent nothing can
        be balanced and every scan appears once.
    """
    minority, majority = _classes(labels)
    if len(minority) == 0:
        return rng.permutation(len(labels))
    extra = rng.choice(minority, size=len(majority) - len(minority), replace=True)
    return rng.permutation(np.concatenate([minority, majority, extra]))


def balanced_epoch(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Every minority scan and as many majority scans drawn without replacement.

    Parameters
    ----------
    labels
        0/1 label of each training scan.
    rng
        Source of the draws; call once per epoch for a fresh majority draw.

    Returns
    -------
    numpy.ndarray
        Shuffled positions into ``labels``. With one class absent every scan
        appears once.
    """
    minority, majority = _classes(labels)
    if len(minority) == 0:
        return rng.permutation(len(labels))
    drawn = rng.choice(majority, size=len(minority), replace=False)
    return rng.permutation(np.concatenate([minority, drawn]))


def epoch_indices(
    sampling: Sampling, labels: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Return one epoch's shuffled positions into ``labels`` for ``sampling``.

    Parameters
    ----------
    sampling
        ``oversample`` (:func:`oversample_minority`), ``balanced``
        (:func:`balanced_epoch`) or ``none`` (every scan once).
    labels
        0/1 label of each training scan; unknown labels must be dropped first.
    rng
        Source of the draws; call once per epoch for a fresh draw.

    Raises
    ------
    ValueError
        If ``labels`` is not a 1-D array of 0/1.
    """
    if sampling is Sampling.OVERSAMPLE:
        return oversample_minority(labels, rng)
    if sampling is Sampling.BALANCED:
        return balanced_epoch(labels, rng)
    _classes(labels)
    return rng.permutation(len(labels))
