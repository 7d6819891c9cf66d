"""Survival counts on a shared time grid: what a site sends instead of its records.

Every site and the server use one :class:`TimeGrid`: intervals of
``resolution_days`` up to ``horizon_days``. Interval ``k`` (1-based) covers the
follow-up times ``(k - 1) * resolution < t <= k * resolution``; a record is
*rounded up* to the end of its interval, ``k * resolution``, with
``k = max(1, ceil(t / resolution))``, so a time of 0 joins the first interval
and no rounded time is 0. Records beyond the last interval are censored at the
horizon (an event after it counts as a censoring there). Kaplan-Meier and
log-rank computed from the counts are *exactly* those of the records rounded
this way (see :meth:`TimeGrid.round_records`).

Disclosure control (:func:`site_counts`): a group with fewer than
``min_per_group`` patients is refused, and so is a grid so fine for the cohort
that the counts become individual follow-up times: in every group the number of
occupied grid points (intervals with an event or a censoring) times
``min_patients_per_time`` must not exceed the group's patients; by default an
occupied grid point holds, on average, at least two patients.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fedbone.errors import Problem
from fedbone.validation.errors import EvaluationError

__all__ = [
    "DEFAULT_HORIZON_DAYS",
    "DEFAULT_MIN_PATIENTS_PER_TIME",
    "DEFAULT_MIN_PER_GROUP",
    "DEFAULT_RESOLUTION_DAYS",
    "GroupCounts",
    "SiteSurvivalCounts",
    "TimeGrid",
    "pool_site_counts",
    "site_counts",
]

DEFAULT_RESOLUTION_DAYS = 7.0
"""Width of a grid interval: one week."""

DEFAULT_HORIZON_DAYS = 3650.0
"""Follow-up beyond ten years is censored at ten years."""

DEFAULT_MIN_PER_GROUP = 5
"""Fewest patients a site may report in one group (the site's small-cell rule)."""

DEFAULT_MIN_PATIENTS_PER_TIME = 2.0
"""Fewest patients per occupied grid point, on average, in every group."""

_SUBJECT = "survival counts"
Int64Array = npt.NDArray[np.int64]


@dataclass(frozen=True)
class TimeGrid:
    """Shared follow-up grid, in days.

    Parameters
    ----------
    resolution_days
        Width of an interval, > 0.
    horizon_days
        Follow-up covered, at least one interval; the grid has
        ``ceil(horizon_days / resolution_days)`` intervals.

    Raises
    ------
    EvaluationError
        ``bad-grid`` for a non-positive or non-finite resolution or horizon, or a
        horizon shorter than one interval.
    """

    resolution_days: float = DEFAULT_RESOLUTION_DAYS
    horizon_days: float = DEFAULT_HORIZON_DAYS

    def __post_init__(self) -> None:
        problems = []
        for name in ("resolution_days", "horizon_days"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                problems.append(_bad_grid(f"{name}={value!r} is not a number"))
            elif not (math.isfinite(value) and value > 0):
                problems.append(_bad_grid(f"{name}={value!r} must be finite and > 0"))
        if not problems and self.horizon_days < self.resolution_days:
            problems.append(
                _bad_grid(
                    f"horizon {self.horizon_days} days is shorter than one interval "
                    f"of {self.resolution_days} days"
                )
            )
        EvaluationError.raise_if_any("time grid", problems)
        object.__setattr__(self, "resolution_days", float(self.resolution_days))
        object.__setattr__(self, "horizon_days", float(self.horizon_days))

    @property
    def intervals(self) -> int:
        """Number of intervals ``K``."""
        return math.ceil(self.horizon_days / self.resolution_days)

    @property
    def times(self) -> npt.NDArray[np.float64]:
        """Grid times ``0, r, 2r, ..., K r`` (the ends of the intervals, with 0)."""
        return np.arange(self.intervals + 1, dtype=np.float64) * self.resolution_days

    def round_records(
        self, times: npt.ArrayLike, events: npt.ArrayLike
    ) -> tuple[Int64Array, Int64Array]:
        """Interval of every record and its event flag after horizon censoring.

        Parameters
        ----------
        times
            Follow-up times in days, finite and >= 0.
        events
            1 = event observed, 0 = censored.

        Returns
        -------
        tuple of numpy.ndarray
            Intervals ``k`` in ``1..K`` (the rounded time is
            ``k * resolution_days``) and the 0/1 event flags, 0 for records
            past the horizon.
        """
        durations, observed = _check_records(times, events, None)
        raw = np.maximum(1, np.ceil(durations / self.resolution_days)).astype(np.int64)
        beyond = raw > self.intervals
        return np.minimum(raw, self.intervals), np.where(beyond, 0, observed)


@dataclass(frozen=True, eq=False)
class GroupCounts:
    """Events and censorings of one group per grid interval (index ``k - 1``).

    Parameters
    ----------
    events, censored
        Non-negative integer counts, one per interval; stored read-only.
    """

    events: Int64Array
    censored: Int64Array

    def __post_init__(self) -> None:
        problems = []
        for name in ("events", "censored"):
            array, problem = _counts(name, getattr(self, name))
            if problem is not None:
                problems.append(problem)
            array.setflags(write=False)
            object.__setattr__(self, name, array)
        if not problems and self.events.size != self.censored.size:
            problems.append(
                Problem(
                    "length-mismatch",
                    f"{self.events.size} event counts but {self.censored.size} "
                    "censoring counts; send one of each per grid interval",
                )
            )
        EvaluationError.raise_if_any(_SUBJECT, problems)

    @property
    def n_at_risk(self) -> int:
        """Patients at risk at time 0 (every record counted once)."""
        return int(self.events.sum() + self.censored.sum())

    @property
    def occupied_times(self) -> int:
        """Intervals with at least one event or censoring."""
        return int(np.count_nonzero(self.events + self.censored))


@dataclass(frozen=True, eq=False)
class SiteSurvivalCounts:
    """Per-group survival counts of one site (or of pooled sites) on one grid.

    Parameters
    ----------
    grid
        The shared grid.
    groups
        Counts per group label; every group has one count per grid interval.
        Add two with ``+`` (or :func:`pool_site_counts`) to pool sites.

    Raises
    ------
    EvaluationError
        ``no-groups`` or ``length-mismatch`` (counts not matching the grid).
    """

    grid: TimeGrid
    groups: Mapping[str, GroupCounts] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        if not self.groups:
            problems.append(
                Problem("no-groups", "no group counts; count at least one group")
            )
        for name, counts in self.groups.items():
            if counts.events.size != self.grid.intervals:
                problems.append(
                    Problem(
                        "length-mismatch",
                        f"{counts.events.size} intervals but the grid has "
                        f"{self.grid.intervals}; count on the shared grid",
                        f"group {name!r}",
                    )
                )
        EvaluationError.raise_if_any(_SUBJECT, problems)
        object.__setattr__(self, "groups", dict(sorted(self.groups.items())))

    def __add__(self, other: SiteSurvivalCounts) -> SiteSurvivalCounts:
        """Pool two sites; a group absent at one site counts as zeros there."""
        if not isinstance(other, SiteSurvivalCounts):
            return NotImplemented
        if other.grid != self.grid:
            EvaluationError.raise_if_any(
                _SUBJECT,
                [
                    Problem(
                        "grid-mismatch",
                        f"cannot pool counts on {self.grid} and {other.grid}; "
                        "every site must count on the same TimeGrid",
                    )
                ],
            )
        zeros = np.zeros(self.grid.intervals, dtype=np.int64)
        empty = GroupCounts(zeros, zeros)
        pooled = {}
        for name in sorted(set(self.groups) | set(other.groups)):
            mine = self.groups.get(name, empty)
            theirs = other.groups.get(name, empty)
            pooled[name] = GroupCounts(
                mine.events + theirs.events, mine.censored + theirs.censored
            )
        return SiteSurvivalCounts(self.grid, pooled)

    def to_dict(self) -> dict[str, Any]:
        """Plain numbers for transport: grid in days, per group ints per interval."""
        return {
            "resolution-days": self.grid.resolution_days,
            "horizon-days": self.grid.horizon_days,
            "groups": {
                name: {
                    "at-risk": counts.n_at_risk,
                    "events": counts.events.tolist(),
                    "censored": counts.censored.tolist(),
                }
                for name, counts in self.groups.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SiteSurvivalCounts:
        """Rebuild (and validate) counts written by :meth:`to_dict`.

        Raises
        ------
        EvaluationError
            ``missing-key`` for an absent entry, ``at-risk-mismatch`` when the
            number at risk is not the sum of the events and censorings, else as
            the constructors.
        """
        missing = [
            _missing(key)
            for key in ("resolution-days", "horizon-days", "groups")
            if key not in data
        ]
        EvaluationError.raise_if_any(_SUBJECT, missing)
        grid = TimeGrid(data["resolution-days"], data["horizon-days"])
        problems: list[Problem] = []
        groups = {}
        for name, entry in dict(data["groups"]).items():
            absent = [
                key for key in ("at-risk", "events", "censored") if key not in entry
            ]
            if absent:
                problems.extend(_missing(key, f"group {name!r}") for key in absent)
                continue
            counts = GroupCounts(entry["events"], entry["censored"])
            if counts.n_at_risk != entry["at-risk"]:
                problems.append(
                    Problem(
                        "at-risk-mismatch",
                        f"at-risk {entry['at-risk']!r} but events and censorings "
                        f"add up to {counts.n_at_risk}; send the dict written by "
                        "SiteSurvivalCounts.to_dict() unchanged",
                        f"group {name!r}",
                    )
                )
            groups[str(name)] = counts
        EvaluationError.raise_if_any(_SUBJECT, problems)
        return cls(grid, groups)


def site_counts(
    times: npt.ArrayLike,
    events: npt.ArrayLike,
    groups: npt.ArrayLike,
    grid: TimeGrid | None = None,
    *,
    min_per_group: int = DEFAULT_MIN_PER_GROUP,
    min_patients_per_time: float = DEFAULT_MIN_PATIENTS_PER_TIME,
) -> SiteSurvivalCounts:
    """Count one site's events and censorings per group on the shared grid.

    Parameters
    ----------
    times
        Follow-up in days per patient (finite, >= 0), rounded as
        :meth:`TimeGrid.round_records` documents.
    events
        1 = event (death, hospitalisation), 0 = censored.
    groups
        Group label per patient (for example the predicted class); labels are
        sent as ``str(label)``.
    grid
        The study's grid; default ``TimeGrid()`` (7 days, 10 years).
    min_per_group
        Fewest patients a group may hold (the site's small-cell threshold).
    min_patients_per_time
        Fewest patients per occupied grid point, on average, in every group.

    Returns
    -------
    SiteSurvivalCounts
        Counts only; no follow-up time leaves with them.

    Raises
    ------
    EvaluationError
        For bad records, ``small-group`` for a group below ``min_per_group`` and
        ``grid-too-fine`` for a group whose counts would be nearly per patient;
        every problem listed.
    """
    grid = TimeGrid() if grid is None else grid
    labels = np.asarray(groups)
    _check_records(times, events, labels)
    _check_thresholds(min_per_group, min_patients_per_time)
    intervals, observed = grid.round_records(times, events)
    problems = []
    counted = {}
    names = labels.astype(str)
    for label in np.unique(names).tolist():
        member = names == label
        found = intervals[member] - 1
        counts = GroupCounts(
            np.bincount(found[observed[member] == 1], minlength=grid.intervals),
            np.bincount(found[observed[member] == 0], minlength=grid.intervals),
        )
        problems.extend(
            _disclosure_problems(label, counts, min_per_group, min_patients_per_time)
        )
        counted[label] = counts
    EvaluationError.raise_if_any("site_counts", problems)
    return SiteSurvivalCounts(grid, counted)


def pool_site_counts(sites: Sequence[SiteSurvivalCounts]) -> SiteSurvivalCounts:
    """Add the counts of every site (same grid; absent groups count as zeros).

    Raises
    ------
    EvaluationError
        ``no-sites`` for an empty sequence, ``grid-mismatch`` for sites counted
        on different grids.
    """
    if not sites:
        EvaluationError.raise_if_any(
            _SUBJECT,
            [Problem("no-sites", "no site counts to pool; pass at least one site")],
        )
    pooled = sites[0]
    for site in sites[1:]:
        pooled = pooled + site
    return pooled


def _disclosure_problems(
    label: str, counts: GroupCounts, min_per_group: int, min_patients_per_time: float
) -> list[Problem]:
    where = f"group {label!r}"
    n = counts.n_at_risk
    if n < min_per_group:
        return [
            Problem(
                "small-group",
                f"{n} patients, fewer than the site's minimum of {min_per_group}; "
                "merge groups or leave this site out of the analysis",
                where,
            )
        ]
    if counts.occupied_times * min_patients_per_time > n:
        return [
            Problem(
                "grid-too-fine",
                f"{n} patients spread over {counts.occupied_times} grid points, "
                f"fewer than {min_patients_per_time:g} per point on average, so "
                "the counts would reveal individual follow-up times; use a "
                "coarser resolution_days or a shorter horizon_days",
                where,
            )
        ]
    return []


def _check_records(
    times: npt.ArrayLike, events: npt.ArrayLike, labels: npt.ArrayLike | None
) -> tuple[npt.NDArray[np.float64], Int64Array]:
    """Validate follow-up records, listing every problem."""
    problems = []
    durations = np.asarray(times)
    observed = np.asarray(events)
    if durations.ndim != 1 or durations.dtype.kind not in "iuf":
        problems.append(Problem("bad-times", "times must be a 1-D array of days"))
    elif durations.size == 0:
        problems.append(Problem("no-records", "no records; count at least one"))
    elif not (np.isfinite(durations).all() and (durations >= 0).all()):
        problems.append(
            Problem("bad-times", "times must be finite days >= 0; fix or drop them")
        )
    if observed.ndim != 1 or not np.isin(observed, (0, 1)).all():
        problems.append(
            Problem("bad-events", "events must be a 1-D array of 0 (censored) or 1")
        )
    sizes = {observed.size, durations.size}
    if labels is not None:
        sizes.add(np.asarray(labels).size)
    if len(sizes) > 1:
        problems.append(
            Problem(
                "length-mismatch",
                f"records of unequal lengths {sorted(sizes)}; give one time, "
                "event and group per patient",
            )
        )
    EvaluationError.raise_if_any("survival records", problems)
    return durations.astype(np.float64), observed.astype(np.int64)


def _check_thresholds(min_per_group: int, min_patients_per_time: float) -> None:
    problems = []
    whole = isinstance(min_per_group, int) and not isinstance(min_per_group, bool)
    if not whole or min_per_group < 1:
        message = f"min_per_group={min_per_group!r}; use an int >= 1"
        problems.append(Problem("bad-threshold", message))
    number = isinstance(min_patients_per_time, int | float) and not isinstance(
        min_patients_per_time, bool
    )
    if not number or not min_patients_per_time >= 1:
        message = f"min_patients_per_time={min_patients_per_time!r}; use a number >= 1"
        problems.append(Problem("bad-threshold", message))
    EvaluationError.raise_if_any("site_counts", problems)


def _bad_grid(message: str) -> Problem:
    return Problem("bad-grid", f"{message}; e.g. TimeGrid(7.0, 3650.0)")


def _missing(key: str, where: str = "") -> Problem:
    return Problem(
        "missing-key",
        f"no {key!r} entry; send the dict written by SiteSurvivalCounts.to_dict()",
        where,
    )


def _counts(name: str, values: object) -> tuple[Int64Array, Problem | None]:
    """Convert counts to int64 if they are non-negative whole numbers."""
    try:
        array = np.asarray(values)
        numbers = array.astype(np.float64)
    except (TypeError, ValueError):
        array = numbers = np.zeros((0, 0))
    valid = (
        array.dtype.kind in "iuf"
        and array.ndim == 1
        and bool(np.isfinite(numbers).all() and (numbers >= 0).all())
        and bool((numbers == np.round(numbers)).all())
    )
    if valid:
        return array.astype(np.int64), None
    message = "counts must be a 1-D list of non-negative integers"
    return np.zeros(0, dtype=np.int64), Problem("bad-counts", message, name)
