"""Statistics of a reader study: accuracy with its CI, detection, agreement.

Haberl et al. (2025) showed readers blinded, randomised sets of real and
synthetic scans; each reader marked every image real or synthetic. What the
study reports, per reader and over all readers:

- **accuracy** of the real/synthetic call with a 95% Wilson score interval
  (:func:`proportion_with_ci`; the interval stays inside [0, 1] and keeps its
  coverage for small sets, unlike the normal approximation);
- **sensitivity and specificity for spotting synthetic images**: a synthetic
  image called synthetic is a true positive, a real image called real a true
  negative (:func:`synthetic_detection`);
- **Fleiss' kappa** across readers (:func:`fleiss_kappa`): agreement beyond
  chance of several readers rating the same images into categories (1971),
  for real/synthetic and for the finding.

Accuracy near 50% and kappa near 0 mean the readers could not tell the
synthetic images from the real ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.stats import norm

from fedbone.errors import Problem
from fedbone.validation.errors import EvaluationError
from fedbone.validation.estimate import Estimate

__all__ = [
    "DetectionResult",
    "fleiss_kappa",
    "proportion_with_ci",
    "rating_table",
    "synthetic_detection",
]


def proportion_with_ci(
    successes: int, total: int, *, confidence: float = 0.95
) -> Estimate:
    """Return ``successes / total`` with its Wilson score interval.

    Parameters
    ----------
    successes
        Correct calls (0 to ``total``).
    total
        Calls in all; 0 gives NaN everywhere.
    confidence
        Two-sided confidence level, in (0, 1).

    Raises
    ------
    EvaluationError
        For counts outside ``0 <= successes <= total`` or a confidence
        outside (0, 1).
    """
    problems = []
    if not 0 <= successes <= total:
        problems.append(
            Problem(
                "bad-counts",
                f"successes {successes} must lie between 0 and total {total}",
            )
        )
    if not 0 < confidence < 1:
        problems.append(Problem("bad-confidence", f"{confidence} is not in (0, 1)"))
    EvaluationError.raise_if_any("proportion", problems)
    if total == 0:
        return Estimate(math.nan, math.nan, math.nan)
    z = float(norm.ppf(0.5 + confidence / 2))
    p = successes / total
    denominator = 1 + z**2 / total
    centre = (p + z**2 / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z**2 / (4 * total**2)) / denominator
    return Estimate(p, max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class DetectionResult:
    """How well readers spot synthetic images (synthetic = positive).

    Parameters
    ----------
    accuracy
        Share of correct real/synthetic calls.
    sensitivity
        Share of synthetic images called synthetic.
    specificity
        Share of real images called real.
    n_synthetic, n_real
        Images of each kind rated (a reader's calls, or all readers' pooled).
    """

    accuracy: Estimate
    sensitivity: Estimate
    specificity: Estimate
    n_synthetic: int
    n_real: int


def _as_bool(values: npt.ArrayLike, what: str) -> npt.NDArray[np.bool_]:
    array = np.asarray(values)
    if array.ndim != 1 or not np.isin(array, (0, 1, True, False)).all():
        raise EvaluationError(
            "reader study",
            [Problem("not-binary", f"{what} must be a 1-D list of 0/1 or booleans")],
        )
    return array.astype(bool)


def synthetic_detection(
    is_synthetic: npt.ArrayLike,
    called_synthetic: npt.ArrayLike,
    *,
    confidence: float = 0.95,
) -> DetectionResult:
    """Accuracy, sensitivity and specificity of real/synthetic calls.

    Parameters
    ----------
    is_synthetic
        Truth per rated image (True: synthetic).
    called_synthetic
        The reader's call per image (True: called synthetic).
    confidence
        Level of the Wilson intervals.

    Raises
    ------
    EvaluationError
        When the two lists are not 0/1 lists of the same length.
    """
    truth = _as_bool(is_synthetic, "is_synthetic")
    calls = _as_bool(called_synthetic, "called_synthetic")
    if truth.shape != calls.shape:
        raise EvaluationError(
            "reader study",
            [
                Problem(
                    "length-mismatch",
                    f"{truth.size} truths but {calls.size} calls; every image "
                    "needs exactly one call",
                )
            ],
        )
    correct = int((truth == calls).sum())
    hits = int((truth & calls).sum())
    rejections = int((~truth & ~calls).sum())
    n_synthetic, n_real = int(truth.sum()), int((~truth).sum())
    return DetectionResult(
        accuracy=proportion_with_ci(correct, truth.size, confidence=confidence),
        sensitivity=proportion_with_ci(hits, n_synthetic, confidence=confidence),
        specificity=proportion_with_ci(rejections, n_real, confidence=confidence),
        n_synthetic=n_synthetic,
        n_real=n_real,
    )


def rating_table(
    ratings: Sequence[Sequence[int]], n_categories: int
) -> npt.NDArray[np.int64]:
    """Count, per image, how many readers chose each category.

    Parameters
    ----------
    ratings
        ``ratings[reader][image]``: the category (0 to ``n_categories - 1``)
        each reader gave each image; every reader rates every image.
    n_categories
        Number of categories (2 for real/synthetic).

    Returns
    -------
    numpy.ndarray
        ``(n_images, n_categories)`` counts, each row summing to the readers.

    Raises
    ------
    EvaluationError
        For readers who rated different numbers of images or a category out
        of range.
    """
    lengths = {len(reader) for reader in ratings}
    problems = []
    if len(lengths) > 1:
        problems.append(
            Problem(
                "ragged-ratings",
                "every reader must rate every image once (a readers x images table)",
            )
        )
    EvaluationError.raise_if_any("ratings", problems)
    array = np.asarray(ratings)
    if array.ndim != 2:
        problems.append(
            Problem(
                "ragged-ratings",
                "every reader must rate every image once (a readers x images table)",
            )
        )
    elif array.size and (array.min() < 0 or array.max() >= n_categories):
        problems.append(
            Problem(
                "bad-category",
                f"categories must lie in 0..{n_categories - 1}",
            )
        )
    EvaluationError.raise_if_any("ratings", problems)
    table = np.zeros((array.shape[1], n_categories), dtype=np.int64)
    for reader in array:
        table[np.arange(array.shape[1]), reader] += 1
    return table


def fleiss_kappa(table: npt.ArrayLike) -> float:
    """Fleiss' kappa of an ``(items, categories)`` table of rater counts.

    Every row must sum to the same number of raters (at least 2).
    ``P_i = (sum_j n_ij^2 - n) / (n (n - 1))`` is item i's agreement,
    ``p_j`` the share of all ratings in category j; kappa is
    ``(mean P_i - sum p_j^2) / (1 - sum p_j^2)``. NaN when every rating falls
    in one category (chance agreement is then 1).

    Raises
    ------
    EvaluationError
        For negative counts, rows with different totals, or fewer than two
        raters.
    """
    counts = np.asarray(table, dtype=np.float64)
    problems = []
    if counts.ndim != 2 or counts.shape[0] == 0:
        problems.append(Problem("bad-table", "expected an (items, categories) table"))
    elif (counts < 0).any():
        problems.append(Problem("negative-count", "counts must be >= 0"))
    else:
        raters = counts.sum(axis=1)
        if not np.allclose(raters, raters[0]):
            problems.append(
                Problem(
                    "unequal-raters",
                    "every item needs the same number of ratings",
                )
            )
        elif raters[0] < 2:
            problems.append(Problem("too-few-raters", "kappa needs at least 2 raters"))
    EvaluationError.raise_if_any("Fleiss' kappa", problems)
    n = counts.sum(axis=1)[0]
    per_item = ((counts**2).sum(axis=1) - n) / (n * (n - 1))
    shares = counts.sum(axis=0) / counts.sum()
    chance = float((shares**2).sum())
    if math.isclose(chance, 1.0):
        return math.nan
    return float((per_item.mean() - chance) / (1 - chance))
