"""Count-level consistency of the hottest lesion (Qi et al. 2024).

Qi et al. compare the counts of each scan's hottest lesion in the enhanced scan
with those in the standard scan by Bland-Altman limits of agreement and Pearson
correlation. Here:

1. :func:`hottest_focus` finds the hottest focal uptake of the **standard**
   scan, with the bladder excluded (rule below);
2. :func:`focus_counts` reads the maximum counts in a small window around that
   position in the standard scan (``x``) and in each method's scan (``y``);
3. a site reports only :class:`AgreementSums` of its ``(x, y)`` pairs; the
   centre adds the sites' sums and :func:`agreement` turns them into the bias
   ``mean(y - x)``, its sample standard deviation, the 95 % limits
   ``bias +/- 1.96 sd`` and Pearson's r. Pooled sums give exactly the values
   of the concatenated pairs.

Bladder rule of :func:`hottest_focus`, per view (a canvas may hold several
views side by side, as preprocessing's anterior + posterior canvas does):

* smooth the counts with a ``window x window`` mean filter (zero outside the
  image) so that a single noisy pixel is not a focus;
* the body's row extent runs from the first to the last row whose count sum
  exceeds 5 % of the median non-zero row sum (the body-top rule of
  preprocessing, applied at both ends); the body's midline is the
  count-weighted mean column;
* the *pelvis line* lies 45 % of that extent below its top. A standing
  patient's iliac crests sit at about 0.40 and the filled bladder's centre at
  about 0.48-0.50 of height from the vertex (on phantom scans the bladder's
  smoothed maximum lies at 0.48-0.50 of the row extent and within 0.007 of it
  from the midline), while the kidneys (0.36) and the thoracic and upper lumbar
  spine lie above the line;
* if the smoothed maximum lies on or below the pelvis line **and** within
  3 % of the row extent (about 5 cm) of the midline, it is taken to be the
  bladder: its 8-connected region of smoothed counts at or above half that
  maximum is masked, and the focus is the highest *local* maximum of the
  smoothed counts (a pixel no lower than its 8 neighbours) outside it. Asking
  for a local maximum keeps the bladder's own flank, just under half its
  maximum, from being taken for a focus. If no local maximum with counts is
  left, the first maximum stays the focus;
* the focus of the canvas is the view focus with the highest smoothed counts.

Only one region per view is masked, and a lesion that is the hottest uptake of
the view and lies in the midline below the pelvis line (sacrum, pubis) is
masked as if it were the bladder; lateral pelvic and femoral lesions are not.
This is the price of a rule that needs no organ segmentation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from fedbone.enhance.metrics import read_sums_record
from fedbone.errors import Problem
from fedbone.validation.errors import EvaluationError

__all__ = [
    "LIMITS_Z",
    "MIDLINE_FRACTION",
    "PELVIS_LINE_FRACTION",
    "Agreement",
    "AgreementSums",
    "agreement",
    "focus_counts",
    "hottest_focus",
]

#: Fraction of the body's row extent, from its top, where the bladder zone begins.
PELVIS_LINE_FRACTION = 0.45
#: Largest distance of the bladder's maximum from the midline, in row extents.
MIDLINE_FRACTION = 0.03
#: Multiplier of the standard deviation in the 95 % limits of agreement.
LIMITS_Z = 1.96
# Rows whose count sum exceeds this share of the median non-zero row sum are body.
_BODY_ROW_FRACTION = 0.05
_EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)


def hottest_focus(
    standard_counts: np.ndarray,
    *,
    window: int = 3,
    bladder_exclusion: bool = True,
    views: int = 1,
) -> tuple[int, int]:
    """Find the hottest focal uptake of a standard scan (see the module rule).

    Parameters
    ----------
    standard_counts
        ``(H, W)`` counts of the standard acquisition on the canvas.
    window
        Side of the mean filter that defines "focal", odd.
    bladder_exclusion
        Apply the bladder rule; ``False`` returns the smoothed maximum.
    views
        Number of equally wide views placed side by side on the canvas
        (2 for preprocessing's anterior + posterior canvas); the bladder rule
        runs in each.

    Returns
    -------
    tuple of int
        ``(row, column)`` of the focus on the canvas.

    Raises
    ------
    EvaluationError
        ``not-an-image``, ``non-finite-counts``, ``negative-counts``,
        ``empty-image``, ``bad-window``, ``bad-views``, listing all.
    """
    counts = np.asarray(standard_counts, dtype=np.float64)
    problems = _image_problems(counts, window, need_counts=True)
    width = counts.shape[-1] if counts.ndim else 0
    if views < 1 or width % views:
        problems.append(
            Problem(
                "bad-views",
                f"views is {views} for a canvas {width} px wide; pass the "
                "number of equally wide views side by side (1 or 2)",
            )
        )
    EvaluationError.raise_if_any("hottest focus", problems)
    smoothed = ndimage.uniform_filter(counts, size=window, mode="constant")
    view_width = width // views
    best: tuple[float, int, int] | None = None
    for view in range(views):
        columns = slice(view * view_width, (view + 1) * view_width)
        found = _view_focus(counts[:, columns], smoothed[:, columns], bladder_exclusion)
        if found is None:
            continue
        row, column = found
        value = float(smoothed[row, columns][column])
        if best is None or value > best[0]:
            best = (value, row, view * view_width + column)
    if best is None:
        # Unreachable for a checked image with counts; kept for the type checker.
        raise EvaluationError(
            "hottest focus", [Problem("empty-image", "no view holds counts")]
        )
    return best[1], best[2]


def focus_counts(
    image_counts: np.ndarray, focus: tuple[int, int], window: int = 3
) -> float:
    """Maximum counts in the ``window x window`` square centred on ``focus``.

    Parameters
    ----------
    image_counts
        ``(H, W)`` counts of any scan on the same canvas (standard, fast or
        enhanced, all scaled to the standard acquisition).
    focus
        ``(row, column)``, normally from :func:`hottest_focus` of the standard.
    window
        Side of the square, odd; it is cut at the image border.

    Returns
    -------
    float
        The largest pixel count in the square.

    Raises
    ------
    EvaluationError
        ``not-an-image``, ``non-finite-counts``, ``bad-window``,
        ``focus-outside``.
    """
    counts = np.asarray(image_counts, dtype=np.float64)
    EvaluationError.raise_if_any(
        "focus counts", _image_problems(counts, window, need_counts=False)
    )
    row, column = int(focus[0]), int(focus[1])
    height, width = counts.shape
    if not (0 <= row < height and 0 <= column < width):
        EvaluationError.raise_if_any(
            "focus counts",
            [
                Problem(
                    "focus-outside",
                    f"focus {focus} lies outside the {height} x {width} image; "
                    "pass a focus found on the same canvas",
                )
            ],
        )
    half = window // 2
    square = counts[
        max(0, row - half) : row + half + 1, max(0, column - half) : column + half + 1
    ]
    return float(square.max())


@dataclass(frozen=True)
class AgreementSums:
    """Sums of paired focus counts that pool across sites by addition.

    Parameters
    ----------
    n
        Number of pairs.
    sum_x, sum_y
        Sums of the standard's (``x``) and the method's (``y``) counts.
    sum_xx, sum_yy, sum_xy
        Sums of squares and of products.
    """

    n: int = 0
    sum_x: float = 0.0
    sum_y: float = 0.0
    sum_xx: float = 0.0
    sum_yy: float = 0.0
    sum_xy: float = 0.0

    @classmethod
    def of(cls, x: np.ndarray, y: np.ndarray) -> AgreementSums:
        """Sum paired values: ``x`` the standard's, ``y`` the method's counts.

        Raises
        ------
        EvaluationError
            ``not-one-dimensional``, ``length-mismatch``, ``non-finite-values``.
        """
        first = np.asarray(x, dtype=np.float64)
        second = np.asarray(y, dtype=np.float64)
        problems = []
        if first.ndim != 1 or second.ndim != 1:
            problems.append(
                Problem(
                    "not-one-dimensional",
                    f"x has shape {first.shape} and y {second.shape}; pass one "
                    "value per scan",
                )
            )
        elif first.shape != second.shape:
            problems.append(
                Problem(
                    "length-mismatch",
                    f"{first.size} standard values but {second.size} method "
                    "values; pass one pair per scan",
                )
            )
        if not (np.isfinite(first).all() and np.isfinite(second).all()):
            problems.append(
                Problem("non-finite-values", "the counts hold NaN or infinity")
            )
        EvaluationError.raise_if_any("agreement pairs", problems)
        return cls(
            n=int(first.size),
            sum_x=float(first.sum()),
            sum_y=float(second.sum()),
            sum_xx=float(first @ first),
            sum_yy=float(second @ second),
            sum_xy=float(first @ second),
        )

    def __add__(self, other: AgreementSums) -> AgreementSums:
        if not isinstance(other, AgreementSums):
            return NotImplemented
        return AgreementSums(
            n=self.n + other.n,
            sum_x=self.sum_x + other.sum_x,
            sum_y=self.sum_y + other.sum_y,
            sum_xx=self.sum_xx + other.sum_xx,
            sum_yy=self.sum_yy + other.sum_yy,
            sum_xy=self.sum_xy + other.sum_xy,
        )

    def to_dict(self) -> dict[str, float]:
        """Kebab-case record: ``n``, ``sum-x``, ``sum-y``, ``sum-xx``, ...."""
        return {
            "n": self.n,
            "sum-x": self.sum_x,
            "sum-y": self.sum_y,
            "sum-xx": self.sum_xx,
            "sum-yy": self.sum_yy,
            "sum-xy": self.sum_xy,
        }

    @classmethod
    def from_dict(cls, record: Mapping[str, float]) -> AgreementSums:
        """Read a record written by :meth:`to_dict`.

        Raises
        ------
        EvaluationError
            ``missing-key``, ``not-a-number``, ``bad-count``, listing all.
        """
        keys = ("n", "sum-x", "sum-y", "sum-xx", "sum-yy", "sum-xy")
        values = read_sums_record("agreement sums", record, keys)
        return cls(
            n=int(values["n"]),
            sum_x=values["sum-x"],
            sum_y=values["sum-y"],
            sum_xx=values["sum-xx"],
            sum_yy=values["sum-yy"],
            sum_xy=values["sum-xy"],
        )


@dataclass(frozen=True)
class Agreement:
    """Bland-Altman agreement and Pearson correlation of method vs standard.

    Attributes
    ----------
    n
        Number of pairs.
    bias
        Mean difference ``y - x`` (method minus standard), in counts.
    sd
        Sample standard deviation of the differences (``n - 1``).
    lower, upper
        95 % limits of agreement, ``bias -/+ 1.96 sd``.
    pearson_r
        Pearson correlation of ``x`` and ``y``; NaN when either is constant.
    """

    n: int
    bias: float
    sd: float
    lower: float
    upper: float
    pearson_r: float

    def to_dict(self) -> dict[str, float]:
        """Kebab-case record for results tables."""
        return {
            "n": self.n,
            "bias": self.bias,
            "sd": self.sd,
            "lower": self.lower,
            "upper": self.upper,
            "pearson-r": self.pearson_r,
        }


def agreement(sums: AgreementSums) -> Agreement:
    """Bland-Altman limits and Pearson's r from (pooled) sums alone.

    Parameters
    ----------
    sums
        Sums of the pairs, e.g. every site's :class:`AgreementSums` added.

    Returns
    -------
    Agreement
        Equal, up to rounding, to the statistics of the concatenated pairs.

    Raises
    ------
    EvaluationError
        ``too-few-pairs`` for fewer than two pairs.
    """
    n = sums.n
    if n < 2:
        EvaluationError.raise_if_any(
            "agreement sums",
            [
                Problem(
                    "too-few-pairs",
                    f"{n} pairs; limits of agreement need at least 2 (pool more "
                    "sites or scans)",
                )
            ],
        )
    bias = (sums.sum_y - sums.sum_x) / n
    sum_dd = sums.sum_yy - 2.0 * sums.sum_xy + sums.sum_xx
    sd = math.sqrt(max(sum_dd - n * bias * bias, 0.0) / (n - 1))
    spread_x = n * sums.sum_xx - sums.sum_x**2
    spread_y = n * sums.sum_yy - sums.sum_y**2
    covariance = n * sums.sum_xy - sums.sum_x * sums.sum_y
    pearson_r = (
        max(-1.0, min(1.0, covariance / math.sqrt(spread_x * spread_y)))
        if spread_x > 0 and spread_y > 0
        else math.nan
    )
    return Agreement(
        n=n,
        bias=bias,
        sd=sd,
        lower=bias - LIMITS_Z * sd,
        upper=bias + LIMITS_Z * sd,
        pearson_r=pearson_r,
    )


def _view_focus(
    counts: np.ndarray, smoothed: np.ndarray, bladder_exclusion: bool
) -> tuple[int, int] | None:
    """``(row, column)`` of one view's focus; None when the view holds no counts."""
    if not (smoothed > 0).any():
        return None
    peak = _argmax(smoothed)
    if not bladder_exclusion or not _in_bladder_zone(counts, peak):
        return peak
    regions, _ = ndimage.label(
        smoothed >= smoothed[peak] / 2, structure=_EIGHT_NEIGHBOURS
    )
    local_maximum = smoothed >= ndimage.maximum_filter(
        smoothed, footprint=_EIGHT_NEIGHBOURS, mode="constant"
    )
    candidates = np.where(local_maximum & (regions != regions[peak]), smoothed, 0.0)
    return _argmax(candidates) if (candidates > 0).any() else peak


def _in_bladder_zone(counts: np.ndarray, peak: tuple[int, int]) -> bool:
    """Whether ``peak`` lies below the pelvis line and near the body's midline."""
    row_sums = counts.sum(axis=1)
    nonzero = row_sums[row_sums > 0]
    body = np.flatnonzero(row_sums > _BODY_ROW_FRACTION * float(np.median(nonzero)))
    top, bottom = int(body[0]), int(body[-1])
    extent = bottom - top
    column_sums = counts.sum(axis=0)
    midline = float(column_sums @ np.arange(counts.shape[1])) / float(column_sums.sum())
    return (
        peak[0] >= top + PELVIS_LINE_FRACTION * extent
        and abs(peak[1] - midline) <= MIDLINE_FRACTION * extent
    )


def _argmax(image: np.ndarray) -> tuple[int, int]:
    row, column = np.unravel_index(int(np.argmax(image)), image.shape)
    return int(row), int(column)


def _image_problems(
    counts: np.ndarray, window: int, *, need_counts: bool
) -> list[Problem]:
    """Problems of a counts image and a window side."""
    problems = []
    if counts.ndim != 2 or counts.size == 0:
        problems.append(
            Problem(
                "not-an-image",
                f"got shape {counts.shape}; pass one (H, W) counts image",
            )
        )
    elif not np.isfinite(counts).all():
        problems.append(
            Problem("non-finite-counts", "the image holds NaN or infinite values")
        )
    elif need_counts and (counts < 0).any():
        problems.append(
            Problem("negative-counts", "counts must be >= 0; pass raw counts")
        )
    elif need_counts and not (counts > 0).any():
        problems.append(
            Problem("empty-image", "the image holds no counts; no focus to find")
        )
    if window < 1 or window % 2 == 0:
        problems.append(
            Problem("bad-window", f"window is {window}; use an odd side such as 3")
        )
    return problems
