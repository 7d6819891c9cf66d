"""Egress rules of the outcome analysis: only the aggregates leave a site."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from federation_messages import config, request
from flwr.app import ConfigRecord, MetricRecord, RecordDict

from fedbone.errors import Problem
from fedbone.federation.egress.reply_rules import RequestSnapshot, reply_problems
from fedbone.federation.kinds import (
    OUTCOME_STATUS_RECORD,
    QUERY_OUTCOME_COX,
    QUERY_OUTCOMES,
)
from fedbone.federation.outcome_messages import (
    COX_DERIVATIVES_RECORD,
    counts_from_record,
    counts_record,
    derivatives_from_record,
    derivatives_record,
    outcome_reply,
)
from fedbone.outcomes.cohort import OutcomeCohort
from fedbone.outcomes.release import EndpointRelease, outcome_release
from fedbone.outcomes.stratified_cox import stratum_derivatives
from fedbone.outcomes.survival_grid import TimeGrid

GRID = TimeGrid(365.0, 1825.0)
SMALL_CELL = 5
Records = dict[str, MetricRecord | ConfigRecord]


@pytest.fixture(scope="module")
def cohort() -> OutcomeCohort:
    rng = np.random.default_rng(1)
    n = 60
    predicted = (np.arange(n) < n // 2).astype(np.int64)
    event_time = rng.exponential(1000.0 * np.exp(-1.2 * predicted))
    censor_time = rng.uniform(300.0, 2500.0, n)
    return OutcomeCohort(
        predicted=predicted,
        age=rng.normal(70.0, 8.0, n),
        male=(np.arange(n) % 2).astype(np.float64),
        times={"death": np.ceil(np.minimum(event_time, censor_time))},
        events={"death": (event_time <= censor_time).astype(np.float64)},
    )


@pytest.fixture(scope="module")
def releases(cohort: OutcomeCohort) -> dict[str, EndpointRelease]:
    return outcome_release(cohort, ["death", "hf"], GRID, min_patients=SMALL_CELL)


def _problems(content: Records, kind: str = QUERY_OUTCOMES, **extra: Any) -> list:
    message = request(kind, RecordDict({"config": config("outcomes", **extra)}))
    return reply_problems(
        RequestSnapshot.of(message),
        RecordDict(dict(content)),
        min_histogram_bins=10,
        small_cell_threshold=SMALL_CELL,
    )


def _codes(problems: list[Problem]) -> list[tuple[str, str]]:
    return [(p.code, p.where) for p in problems]


def _edited(record: Mapping[str, Any], **values: Any) -> MetricRecord:
    return MetricRecord({**dict(record), **values})


def _dp(**extra: Any) -> dict[str, Any]:
    return {"dp-stat-epsilon": 1.0, **extra}


def _privacy() -> MetricRecord:
    return MetricRecord(
        {"statistics-epsilon": 1.0, "epsilon-spent": 2.0, "delta-spent": 1e-5}
    )


def test_a_real_exact_reply_passes(releases: dict[str, EndpointRelease]) -> None:
    # Prepare
    content = outcome_reply(releases)

    # Execute
    problems = _problems(content)

    # Assert
    assert problems == []
    assert {"survival-death", "site-cox-death-adjusted", "ph-death-crude"} <= set(
        content
    )
    assert content[OUTCOME_STATUS_RECORD]["hf-counts"] == "no-follow-up"


def test_a_group_of_three_is_a_small_cell(
    releases: dict[str, EndpointRelease],
) -> None:
    # Prepare
    content = outcome_reply(releases)
    intervals = GRID.intervals
    content["survival-death"] = _edited(
        content["survival-death"],
        **{
            "at-risk-positive": 3,
            "events-positive": [1] + [0] * (intervals - 1),
            "censored-positive": [0] * (intervals - 1) + [2],
        },
    )

    # Execute / Assert
    assert _codes(_problems(content)) == [("small-cell", "survival-death/positive")]


def test_counts_that_do_not_add_up_are_refused(
    releases: dict[str, EndpointRelease],
) -> None:
    # Prepare
    content = outcome_reply(releases)
    at_risk = content["survival-death"]["at-risk-negative"]
    assert isinstance(at_risk, int)
    content["survival-death"] = _edited(
        content["survival-death"], **{"at-risk-negative": at_risk + 1}
    )

    # Execute / Assert
    assert _codes(_problems(content)) == [
        ("at-risk-mismatch", "survival-death/negative")
    ]


def test_count_lists_must_match_the_grid(
    releases: dict[str, EndpointRelease],
) -> None:
    # Prepare: one interval short; at-risk still adds up.
    content = outcome_reply(releases)
    record: Any = content["survival-death"]
    events = list(record["events-positive"])
    censored = list(record["censored-positive"])
    content["survival-death"] = _edited(
        record,
        **{
            "events-positive": events[:-1],
            "censored-positive": [*censored[:-2], censored[-2] + censored[-1]],
        },
    )

    # Execute / Assert
    assert _codes(_problems(content)) == [("bad-counts", "survival-death/positive")]


def test_a_grid_as_fine_as_follow_up_times_is_refused() -> None:
    # Prepare: five deaths on five distinct days of a one-day grid.
    events = [0] * 3650
    for day in (12, 400, 913, 1500, 2999):
        events[day] = 1
    record = MetricRecord(
        {
            "resolution-days": 1.0,
            "horizon-days": 3650.0,
            "at-risk-positive": 5,
            "events-positive": events,
            "censored-positive": [0] * 3650,
        }
    )

    # Execute / Assert
    assert _codes(_problems({"survival-death": record})) == [
        ("grid-too-fine", "survival-death/positive")
    ]


def test_a_float_list_smuggled_into_a_site_fit_is_per_patient_values(
    releases: dict[str, EndpointRelease],
) -> None:
    # Prepare
    content = outcome_reply(releases)
    content["site-cox-death-crude"] = _edited(
        content["site-cox-death-crude"],
        **{"coef-predicted-positive": [812.0, 1033.5, 45.0]},
    )

    # Execute / Assert
    assert _codes(_problems(content)) == [
        ("per-patient-values", "site-cox-death-crude/coef-predicted-positive")
    ]


def test_an_unknown_record_is_refused(releases: dict[str, EndpointRelease]) -> None:
    # Prepare
    content = outcome_reply(releases)
    content["follow-up-death"] = MetricRecord({"median-days": 412.0})

    # Execute / Assert
    assert [p.code for p in _problems(content)] == ["unexpected-record"]


ADJUSTED = {"cox-model": "adjusted"}


def _derivatives(cohort: OutcomeCohort) -> MetricRecord:
    times, events, covariates = cohort.records("death", "adjusted")
    return derivatives_record(
        stratum_derivatives(times, events, covariates, np.zeros(3), "efron")
    )


def test_real_cox_derivatives_pass(cohort: OutcomeCohort) -> None:
    # Execute
    problems = _problems(
        {COX_DERIVATIVES_RECORD: _derivatives(cohort)}, QUERY_OUTCOME_COX, **ADJUSTED
    )

    # Assert
    assert problems == []


def test_a_hessian_that_is_not_the_gradients_square_is_refused(
    cohort: OutcomeCohort,
) -> None:
    # Prepare
    record = _edited(
        _derivatives(cohort), gradient=[0.1, 0.2, 0.3, 0.4], hessian=[-1.0] * 9
    )

    # Execute
    content = {COX_DERIVATIVES_RECORD: record}
    problems = _problems(content, QUERY_OUTCOME_COX, **ADJUSTED)

    # Assert: four values for the adjusted model's three covariates, too
    assert _codes(problems) == [
        ("bad-hessian", "cox-derivatives/hessian"),
        ("bad-gradient", "cox-derivatives/gradient"),
    ]


def test_derivatives_of_three_patients_are_a_small_cell(
    cohort: OutcomeCohort,
) -> None:
    # Prepare
    record = _edited(_derivatives(cohort), **{"num-patients": 3, "num-events": 1})

    # Execute
    content = {COX_DERIVATIVES_RECORD: record}
    problems = _problems(content, QUERY_OUTCOME_COX, **ADJUSTED)

    # Assert
    assert _codes(problems) == [("small-cell", "cox-derivatives/num-patients")]


def test_noisy_counts_need_a_request_for_them(
    releases: dict[str, EndpointRelease],
) -> None:
    # Prepare
    content = outcome_reply(releases)
    content["noisy-survival-death"] = content.pop("survival-death")
    content["privacy"] = _privacy()

    # Execute
    problems = _problems(content)

    # Assert
    assert sorted(_codes(problems)) == [
        ("noisy-without-request", "noisy-survival-death"),
        ("noisy-without-request", "privacy"),
    ]


def test_exact_records_are_refused_under_dp(
    releases: dict[str, EndpointRelease],
) -> None:
    # Prepare
    content = outcome_reply(releases)
    content["privacy"] = _privacy()

    # Execute
    problems = _problems(content, **_dp())

    # Assert: every exact record, the status record aside.
    assert {p.code for p in problems} == {"exact-statistic-under-dp"}
    assert {p.where for p in problems} == {
        "survival-death",
        "site-cox-death-crude",
        "site-cox-death-adjusted",
        "ph-death-crude",
        "ph-death-adjusted",
    }


def test_a_noisy_reply_must_say_what_it_spent(
    releases: dict[str, EndpointRelease],
) -> None:
    # Prepare
    counts = releases["death"].counts
    assert counts is not None
    content: Records = {"noisy-survival-death": counts_record(counts)}

    # Execute / Assert
    assert _codes(_problems(content, **_dp())) == [
        ("missing-privacy-record", "privacy")
    ]


def test_the_status_record_is_allowed_in_both_modes(
    cohort: OutcomeCohort,
) -> None:
    # Prepare: the reply a site sends under dp.statistics.
    counts_only = outcome_release(
        cohort, ["death", "hf"], GRID, min_patients=SMALL_CELL, counts_only=True
    )
    counts = counts_only["death"].counts
    assert counts is not None
    noisy = outcome_reply(counts_only, counts=False)
    noisy["noisy-survival-death"] = counts_record(counts)
    noisy["privacy"] = _privacy()
    exact = outcome_reply(counts_only)

    # Execute
    under_dp = _problems(noisy, **_dp())
    without_dp = _problems(exact)

    # Assert
    assert OUTCOME_STATUS_RECORD in noisy and OUTCOME_STATUS_RECORD in exact
    assert "survival-death" not in noisy
    assert under_dp == [] and without_dp == []


def test_counts_survive_their_record(releases: dict[str, EndpointRelease]) -> None:
    # Prepare
    counts = releases["death"].counts
    assert counts is not None

    # Execute
    rebuilt = counts_from_record(dict(counts_record(counts)))

    # Assert
    assert rebuilt.to_dict() == counts.to_dict()


def test_derivatives_survive_their_record(cohort: OutcomeCohort) -> None:
    # Prepare
    times, events, covariates = cohort.records("death", "adjusted")
    original = stratum_derivatives(
        times, events, covariates, [0.4, 0.01, -0.2], "breslow"
    )

    # Execute
    rebuilt = derivatives_from_record(dict(derivatives_record(original)), "breslow")

    # Assert
    assert rebuilt.to_dict() == original.to_dict()
    assert rebuilt.hessian.shape == (3, 3)
