"""Egress checks of outcome-analysis records (survival counts, Cox derivatives).

These records are checked as a whole, not value by value: the counts of a
group must add up to its number at risk and fit the grid, a small group must
not be sent exactly, nor counts on a grid so fine that they are follow-up
times (as :func:`~fedbone.outcomes.survival_grid.site_counts` refuses), and
the derivative lists must be as long as a Cox model with few covariates makes
them (so they cannot carry per-patient values).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from fedbone.errors import Problem
from fedbone.federation.kinds import MAX_COX_COVARIATES
from fedbone.outcomes.survival_grid import DEFAULT_MIN_PATIENTS_PER_TIME

__all__ = ["cox_derivative_problems", "survival_count_problems"]

_MAX_INTERVALS = 100_000
_PER_TIME = DEFAULT_MIN_PATIENTS_PER_TIME


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _grid_problems(name: str, record: Mapping[str, Any]) -> tuple[int, list[Problem]]:
    resolution: Any = record.get("resolution-days")
    horizon: Any = record.get("horizon-days")
    if not (_is_number(resolution) and _is_number(horizon)) or not (
        0 < resolution <= horizon
    ):
        return 0, [
            Problem(
                "bad-grid",
                "resolution-days and horizon-days must be numbers with "
                "0 < resolution <= horizon",
                name,
            )
        ]
    intervals = math.ceil(horizon / resolution)
    if intervals > _MAX_INTERVALS:
        return 0, [Problem("bad-grid", f"more than {_MAX_INTERVALS} intervals", name)]
    return intervals, []


def _count_list(value: Any, intervals: int) -> bool:
    return (
        isinstance(value, list)
        and len(value) == intervals
        and all(_is_int(v) and v >= 0 for v in value)
    )


def survival_count_problems(
    name: str, record: Mapping[str, Any], *, small_cell_threshold: int, noisy: bool
) -> list[Problem]:
    """Why a ``survival-*`` (or ``noisy-survival-*``) record may not leave.

    Parameters
    ----------
    name
        The record's name, for messages.
    record
        Its keys and values.
    small_cell_threshold
        A group's number at risk must be 0 or at least this, unless ``noisy``.
    noisy
        The counts are differentially private (no small-cell rule).
    """
    intervals, problems = _grid_problems(name, record)
    if problems:
        return problems
    groups = [k.removeprefix("at-risk-") for k in record if k.startswith("at-risk-")]
    for key in record:
        for prefix in ("events-", "censored-"):
            if key.startswith(prefix) and key.removeprefix(prefix) not in groups:
                problems.append(
                    Problem("orphan-counts", "counts of a group without at-risk", key)
                )
    for group in groups:
        where = f"{name}/{group}"
        at_risk = record[f"at-risk-{group}"]
        events: Any = record.get(f"events-{group}")
        censored: Any = record.get(f"censored-{group}")
        if not (_count_list(events, intervals) and _count_list(censored, intervals)):
            problems.append(
                Problem(
                    "bad-counts",
                    f"events-{group} and censored-{group} must be list[int] of "
                    f"{intervals} non-negative counts (one per grid interval)",
                    where,
                )
            )
            continue
        if not _is_int(at_risk) or at_risk != sum(events) + sum(censored):
            problems.append(
                Problem(
                    "at-risk-mismatch",
                    "at-risk must be the int sum of the group's events and censorings",
                    where,
                )
            )
        elif not noisy and 0 < at_risk < small_cell_threshold:
            problems.append(
                Problem(
                    "small-cell",
                    f"a group of fewer than {small_cell_threshold} patients may "
                    "not be sent",
                    where,
                )
            )
        elif not noisy and _occupied(events, censored) * _PER_TIME > at_risk:
            # The site's site_counts refuses such grids; the guard checks again
            # so that exact follow-up times cannot leave as one-patient counts.
            problems.append(
                Problem(
                    "grid-too-fine",
                    f"fewer than {_PER_TIME:g} patients per occupied grid "
                    "interval on average, so the counts are individual "
                    "follow-up times; use a coarser grid",
                    where,
                )
            )
    return problems


def _occupied(events: list[int], censored: list[int]) -> int:
    return sum(1 for e, c in zip(events, censored, strict=True) if e + c > 0)


def cox_derivative_problems(
    name: str, record: Mapping[str, Any], *, small_cell_threshold: int
) -> list[Problem]:
    """Why a ``cox-derivatives`` record may not leave.

    Parameters
    ----------
    name
        The record's name, for messages.
    record
        Its keys and values: ``gradient`` (one value per covariate),
        ``hessian`` (p x p, flattened), ``log-likelihood``, ``num-patients``
        and ``num-events``.
    small_cell_threshold
        Fewest patients a stratum may have for its derivatives to leave.
    """
    problems = []
    gradient: Any = record.get("gradient")
    hessian: Any = record.get("hessian")
    if not (
        isinstance(gradient, list)
        and 1 <= len(gradient) <= MAX_COX_COVARIATES
        and all(_is_number(v) for v in gradient)
    ):
        problems.append(
            Problem(
                "bad-gradient",
                f"gradient must be 1..{MAX_COX_COVARIATES} finite numbers, one "
                "per covariate",
                f"{name}/gradient",
            )
        )
    elif not (
        isinstance(hessian, list)
        and len(hessian) == len(gradient) ** 2
        and all(_is_number(v) for v in hessian)
    ):
        problems.append(
            Problem(
                "bad-hessian",
                f"hessian must be {len(gradient) ** 2} finite numbers (p x p)",
                f"{name}/hessian",
            )
        )
    if not _is_number(record.get("log-likelihood")):
        problems.append(
            Problem("bad-value", "must be a finite number", f"{name}/log-likelihood")
        )
    patients: Any = record.get("num-patients")
    events: Any = record.get("num-events")
    if not (_is_int(patients) and patients >= small_cell_threshold):
        problems.append(
            Problem(
                "small-cell",
                f"a stratum needs at least {small_cell_threshold} patients",
                f"{name}/num-patients",
            )
        )
    if not (_is_int(events) and events >= 0):
        problems.append(
            Problem("not-a-count", "must be an int >= 0", f"{name}/num-events")
        )
    return problems
