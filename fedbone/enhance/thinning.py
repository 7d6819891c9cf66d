"""Simulated fast and low-count scans by binomial thinning of the raw counts.

Each of the ``n`` photons a pixel recorded is kept independently with
probability ``p``, so the pixel keeps ``Binomial(n, p)`` counts: on average
``p n``, with variance ``p (1 - p) n``. A Poisson image thinned this way is
again a Poisson image, of mean ``p`` times the original (Qi et al. 2024's
"Poisson resampling"): a thinned standard scan is statistically a faster
acquisition of the same patient, noise included. This holds for the raw
counts only, which is why thinning comes before preprocessing (resampling
and normalisation would change the noise).

A :class:`CountLevel` says how much to keep: ``"<k>x"`` keeps ``1/k`` of the
counts (a ``k``-times faster scan), ``"<n>k"`` keeps ``n`` kcounts of each
view (the review's low-count levels, e.g. 300 kcounts out of ~1,000).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedbone.config.enhance import level_problem
from fedbone.enhance.errors import EnhanceError
from fedbone.errors import Problem

__all__ = ["CountLevel", "binomial_thin", "parse_level"]


@dataclass(frozen=True)
class CountLevel:
    """How many of a scan's counts a simulated acquisition keeps.

    Exactly one of ``fraction`` and ``total_kcounts`` is set.

    Attributes
    ----------
    name
        The level as the study names it (``"2x"``, ``"300k"``).
    fraction
        Share of the counts kept (``1/k`` for a ``k``-times faster scan).
    total_kcounts
        Counts kept per view, in thousands (all of them when a view has
        fewer).
    """

    name: str
    fraction: float | None = None
    total_kcounts: float | None = None

    def __post_init__(self) -> None:
        problems = []
        if (self.fraction is None) == (self.total_kcounts is None):
            problems.append(
                Problem(
                    "ambiguous-level",
                    "give exactly one of fraction (1/k of the counts) and "
                    "total_kcounts (counts kept per view)",
                )
            )
        if self.fraction is not None and not 0.0 < self.fraction <= 1.0:
            problems.append(
                Problem(
                    "invalid-fraction",
                    f"fraction {self.fraction} must lie in (0, 1], e.g. 0.5 "
                    "for a 2x scan",
                )
            )
        if self.total_kcounts is not None and not self.total_kcounts > 0:
            problems.append(
                Problem(
                    "invalid-kcounts",
                    f"total_kcounts {self.total_kcounts} must be positive",
                )
            )
        EnhanceError.raise_if_any(f"count level {self.name!r}", problems)

    def probability(self, total_counts: float) -> float:
        """Return the thinning probability for a view of ``total_counts``.

        Parameters
        ----------
        total_counts
            The view's total counts before thinning.

        Returns
        -------
        float
            In ``(0, 1]``: ``fraction``, or the share that leaves
            ``total_kcounts`` thousand counts (1 for a view with fewer).

        Raises
        ------
        EnhanceError
            ``empty-view`` for a view without counts (nothing to keep).
        """
        if self.fraction is not None:
            return self.fraction
        if not (math.isfinite(total_counts) and total_counts > 0):
            raise EnhanceError(
                f"count level {self.name!r}",
                [
                    Problem(
                        "empty-view",
                        f"a view of {total_counts} counts cannot be thinned to "
                        f"{self.total_kcounts} kcounts; expected positive counts",
                    )
                ],
            )
        assert self.total_kcounts is not None  # one of the two is set
        return min(1.0, self.total_kcounts * 1000.0 / total_counts)


def parse_level(text: str) -> CountLevel:
    """Turn a study's level name into a :class:`CountLevel`.

    Parameters
    ----------
    text
        ``"<k>x"`` (keep ``1/k`` of the counts, ``1 < k <= 10``) or ``"<n>k"``
        (keep ``n`` kcounts of each view, ``10 <= n <= 100000``).

    Returns
    -------
    CountLevel
        Named ``text``.

    Raises
    ------
    EnhanceError
        ``invalid-level`` for anything else, saying what is accepted.
    """
    name = str(text)
    problem = level_problem(name)
    if problem is not None:
        raise EnhanceError(f"count level {name!r}", [Problem("invalid-level", problem)])
    if name.endswith("x"):
        return CountLevel(name, fraction=1.0 / float(name[:-1]))
    return CountLevel(name, total_kcounts=float(name[:-1]))


def _count_problems(values: np.ndarray) -> list[Problem]:
    """Why ``values`` are not non-negative whole counts (empty when they are)."""
    if values.dtype.kind not in "iuf":
        return [
            Problem(
                "not-counts",
                f"expected an integer or float array of counts, got {values.dtype}",
            )
        ]
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        return [
            Problem(
                "non-finite-counts",
                "the image holds NaN or infinite values; counts are finite",
            )
        ]
    problems = []
    if values.size and values.min() < 0:
        problems.append(
            Problem(
                "negative-counts",
                f"the smallest value is {values.min()}; photon counts are >= 0",
            )
        )
    if values.dtype.kind == "f" and not np.array_equal(values, np.round(values)):
        problems.append(
            Problem(
                "non-integer-counts",
                "the image holds fractional values; thin the raw counts as "
                "acquired, before resampling or any rescaling",
            )
        )
    return problems


def binomial_thin(counts: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """Keep each recorded count independently with probability ``p``.

    Parameters
    ----------
    counts
        Raw counts: non-negative whole numbers, any shape, integer or float
        dtype.
    p
        Probability of keeping a count, in ``[0, 1]``.
    rng
        Source of randomness; the same state gives the same image.

    Returns
    -------
    numpy.ndarray
        Same shape; the input's dtype for integer input, ``float32`` (whole
        numbers) otherwise. ``E[out] = p counts``,
        ``Var[out] = p (1 - p) counts``.

    Raises
    ------
    EnhanceError
        ``invalid-probability``, ``not-counts``, ``non-finite-counts``,
        ``negative-counts`` or ``non-integer-counts``, every problem listed.
    """
    values = np.asarray(counts)
    problems = _count_problems(values)
    if not (math.isfinite(p) and 0.0 <= p <= 1.0):
        problems.append(
            Problem(
                "invalid-probability",
                f"p = {p} must lie in [0, 1] (0.5 keeps half of the counts)",
            )
        )
    EnhanceError.raise_if_any("count image", problems)
    thinned = rng.binomial(values.astype(np.int64), p)
    dtype = values.dtype if values.dtype.kind in "iu" else np.dtype(np.float32)
    return thinned.astype(dtype)
