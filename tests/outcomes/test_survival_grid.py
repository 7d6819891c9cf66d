from __future__ import annotations

import json

import numpy as np
import pytest

from fedbone.outcomes.survival_grid import (
    SiteSurvivalCounts,
    TimeGrid,
    pool_site_counts,
    site_counts,
)
from fedbone.validation.errors import EvaluationError


def cohort(seed: int, n: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    groups = np.repeat([0, 1], n // 2)
    times = rng.exponential(np.where(groups == 1, 200.0, 500.0))
    events = (rng.random(n) < 0.7).astype(np.int64)
    return times, events, groups


def test_records_are_rounded_up_to_the_end_of_their_interval() -> None:
    # Prepare: a 7-day grid of 4 intervals (28 days)
    grid = TimeGrid(7.0, 28.0)
    times = [0.0, 0.5, 7.0, 7.01, 27.9, 28.0, 40.0]
    events = [1, 1, 1, 0, 1, 1, 1]

    # Execute
    intervals, observed = grid.round_records(times, events)

    # Assert: 0 joins interval 1, exact ends stay, the event past 28 d is censored
    assert intervals.tolist() == [1, 1, 1, 2, 4, 4, 4]
    assert observed.tolist() == [1, 1, 1, 0, 1, 1, 0]


def test_grid_has_ceil_horizon_over_resolution_intervals() -> None:
    # Prepare / Execute
    grid = TimeGrid(7.0, 30.0)

    # Assert
    assert grid.intervals == 5
    assert grid.times.tolist() == [0.0, 7.0, 14.0, 21.0, 28.0, 35.0]


def test_site_counts_count_events_and_censorings_per_group() -> None:
    # Prepare: two groups of five on a 10-day grid
    grid = TimeGrid(10.0, 30.0)
    times = [5, 5, 15, 25, 25, 1, 12, 12, 18, 29]
    events = [1, 0, 1, 0, 0, 0, 1, 1, 0, 1]
    groups = ["a"] * 5 + ["b"] * 5

    # Execute
    counts = site_counts(times, events, groups, grid, min_patients_per_time=1.0)

    # Assert
    assert counts.groups["a"].events.tolist() == [1, 1, 0]
    assert counts.groups["a"].censored.tolist() == [1, 0, 2]
    assert counts.groups["b"].events.tolist() == [0, 2, 1]
    assert counts.groups["b"].censored.tolist() == [1, 1, 0]
    assert counts.groups["b"].n_at_risk == 5


def test_group_below_the_minimum_is_refused() -> None:
    # Prepare: group 1 has four patients
    times, events, groups = cohort(0)
    groups[30:56] = 0

    # Execute
    with pytest.raises(EvaluationError) as raised:
        site_counts(times, events, groups, TimeGrid(90.0, 720.0))

    # Assert
    assert raised.value.codes == ["small-group"]
    assert "group '1'" in str(raised.value)


def test_grid_too_fine_for_the_cohort_is_refused_with_every_problem() -> None:
    # Prepare: daily grid, 30 distinct times per group
    times, events, groups = cohort(1)

    # Execute
    with pytest.raises(EvaluationError) as raised:
        site_counts(times, events, groups, TimeGrid(1.0, 720.0))

    # Assert: both groups listed, and the message says how to fix it
    assert raised.value.codes == ["grid-too-fine", "grid-too-fine"]
    assert "coarser resolution_days" in str(raised.value)


def test_coarse_grid_for_the_same_cohort_is_accepted() -> None:
    # Prepare
    times, events, groups = cohort(1)

    # Execute
    counts = site_counts(times, events, groups, TimeGrid(90.0, 720.0))

    # Assert
    assert {name: c.n_at_risk for name, c in counts.groups.items()} == {
        "0": 30,
        "1": 30,
    }


def test_bad_records_are_all_listed() -> None:
    # Prepare: a negative time, an event flag of 2, a missing group
    times = [1.0, -2.0, 3.0]
    events = [1, 2, 0]
    groups = [0, 1]

    # Execute
    with pytest.raises(EvaluationError) as raised:
        site_counts(times, events, groups)

    # Assert
    assert raised.value.codes == ["bad-times", "bad-events", "length-mismatch"]


def test_counts_survive_a_json_round_trip() -> None:
    # Prepare
    times, events, groups = cohort(2)
    counts = site_counts(times, events, groups, TimeGrid(90.0, 720.0))

    # Execute
    back = SiteSurvivalCounts.from_dict(json.loads(json.dumps(counts.to_dict())))

    # Assert
    assert back.grid == counts.grid
    for name, group in counts.groups.items():
        assert back.groups[name].events.tolist() == group.events.tolist()
        assert back.groups[name].censored.tolist() == group.censored.tolist()


def test_tampered_dict_is_refused() -> None:
    # Prepare: at-risk no longer matches, and one group lost its events
    times, events, groups = cohort(3)
    data = site_counts(times, events, groups, TimeGrid(90.0, 720.0)).to_dict()
    data["groups"]["0"]["at-risk"] += 1
    del data["groups"]["1"]["events"]

    # Execute
    with pytest.raises(EvaluationError) as raised:
        SiteSurvivalCounts.from_dict(data)

    # Assert
    assert raised.value.codes == ["at-risk-mismatch", "missing-key"]


def test_pooling_adds_counts_and_fills_absent_groups_with_zeros() -> None:
    # Prepare: the second site has only group 1
    grid = TimeGrid(90.0, 720.0)
    times, events, groups = cohort(4)
    first = site_counts(times, events, groups, grid)
    second = site_counts(times[30:], events[30:], groups[30:], grid)

    # Execute
    pooled = pool_site_counts([first, second])

    # Assert
    assert pooled.groups["0"].n_at_risk == 30
    assert pooled.groups["1"].n_at_risk == 60
    assert pooled.groups["1"].events.tolist() == (2 * first.groups["1"].events).tolist()


def test_pooling_sites_on_different_grids_is_refused() -> None:
    # Prepare
    times, events, groups = cohort(5)
    weekly = site_counts(times, events, groups, TimeGrid(90.0, 720.0))
    monthly = site_counts(times, events, groups, TimeGrid(60.0, 720.0))

    # Execute
    with pytest.raises(EvaluationError) as raised:
        pool_site_counts([weekly, monthly])

    # Assert
    assert raised.value.codes == ["grid-mismatch"]
