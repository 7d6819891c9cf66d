"""What a site releases for the outcome analysis, and the codes of what it withholds."""

from __future__ import annotations

import numpy as np
import pytest

from fedbone.outcomes.cohort import OutcomeCohort
from fedbone.outcomes.release import (
    INCLUDED,
    MAX_ABS_COEFFICIENT,
    cohort_derivatives,
    outcome_release,
)
from fedbone.outcomes.stratified_cox import stratum_derivatives
from fedbone.outcomes.survival_grid import TimeGrid
from fedbone.validation.errors import EvaluationError

COARSE = TimeGrid(365.0, 1825.0)
MIN_PATIENTS = 5
COX_PARTS = ("stratum", "fit", "ph")


def _cohort(
    n: int = 60,
    *,
    positives: int | None = None,
    all_male: bool = False,
    any_events: bool = True,
    seed: int = 0,
) -> OutcomeCohort:
    """A site's cohort with death follow-up; the positives die sooner."""
    rng = np.random.default_rng(seed)
    predicted = np.zeros(n, dtype=np.int64)
    predicted[: n // 2 if positives is None else positives] = 1
    hazard = 0.001 * np.exp(1.2 * predicted)
    event_time = rng.exponential(1.0 / hazard)
    censor_time = rng.uniform(300.0, 2500.0, n)
    events = (event_time <= censor_time).astype(np.float64)
    if not any_events:
        events[:] = 0.0
    male = np.ones(n) if all_male else (np.arange(n) % 2).astype(np.float64)
    return OutcomeCohort(
        predicted=predicted,
        age=rng.normal(70.0, 8.0, n),
        male=male,
        times={"death": np.ceil(np.minimum(event_time, censor_time))},
        events={"death": events},
    )


def _statuses(model: str, release_status: dict[str, str]) -> set[str]:
    return {release_status[f"{model}-{part}"] for part in COX_PARTS}


def test_a_healthy_site_releases_counts_fits_and_checks() -> None:
    # Execute
    release = outcome_release(_cohort(), ["death"], COARSE, min_patients=MIN_PATIENTS)

    # Assert
    death = release["death"]
    assert set(death.status.values()) == {INCLUDED}
    assert death.counts is not None
    assert set(death.counts.groups) == {"negative", "positive"}
    assert sum(g.n_at_risk for g in death.counts.groups.values()) == 60
    assert set(death.site_fits) == set(death.ph_checks) == {"crude", "adjusted"}
    assert death.site_fits["crude"].params[0] > 0


def test_endpoints_without_follow_up_are_reported_not_fitted() -> None:
    # Prepare: hf exists but nobody has it; stroke is not in the cohort at all.
    base = _cohort()
    cohort = OutcomeCohort(
        predicted=base.predicted,
        age=base.age,
        male=base.male,
        times={**base.times, "hf": np.full(base.n_patients, np.nan)},
        events={**base.events, "hf": np.full(base.n_patients, np.nan)},
    )

    # Execute
    release = outcome_release(
        cohort, ["hf", "stroke"], COARSE, min_patients=MIN_PATIENTS
    )

    # Assert
    for endpoint in ("hf", "stroke"):
        assert release[endpoint].status == {"counts": "no-follow-up"}
        assert release[endpoint].counts is None
        assert release[endpoint].site_fits == {}


def test_a_site_below_its_minimum_releases_nothing_but_the_reason() -> None:
    # Prepare
    cohort = _cohort(4, positives=2)

    # Execute
    death = outcome_release(cohort, ["death"], COARSE, min_patients=MIN_PATIENTS)[
        "death"
    ]

    # Assert
    assert death.status["counts"] == "too-few-patients"
    assert _statuses("crude", death.status) == {"too-few-patients"}
    assert _statuses("adjusted", death.status) == {"too-few-patients"}
    assert death.counts is None
    assert death.site_fits == {} and death.ph_checks == {}


def test_a_predicted_group_of_three_is_withheld_everywhere() -> None:
    # Prepare
    cohort = _cohort(40, positives=3)

    # Execute
    death = outcome_release(cohort, ["death"], COARSE, min_patients=MIN_PATIENTS)[
        "death"
    ]

    # Assert
    assert death.status["counts"] == "small-group"
    assert _statuses("crude", death.status) == {"small-group"}
    assert _statuses("adjusted", death.status) == {"small-group"}
    assert death.counts is None
    assert death.site_fits == {}


def test_a_grid_finer_than_the_cohort_withholds_only_the_counts() -> None:
    # Prepare: one-day intervals over ten years for 60 patients.
    fine = TimeGrid(1.0, 3650.0)

    # Execute
    death = outcome_release(_cohort(), ["death"], fine, min_patients=MIN_PATIENTS)[
        "death"
    ]

    # Assert
    assert death.status["counts"] == "grid-too-fine"
    assert death.counts is None
    assert death.status["crude-fit"] == INCLUDED
    assert "crude" in death.site_fits


def test_a_site_without_events_is_a_stratum_but_fits_nothing() -> None:
    # Prepare
    cohort = _cohort(any_events=False)

    # Execute
    death = outcome_release(cohort, ["death"], COARSE, min_patients=MIN_PATIENTS)[
        "death"
    ]

    # Assert
    assert death.status["counts"] == INCLUDED
    assert death.status["crude-stratum"] == INCLUDED
    assert death.status["crude-fit"] == death.status["crude-ph"] == "no-events"
    assert death.site_fits == {} and death.ph_checks == {}


def test_an_all_male_site_fits_the_crude_model_but_not_the_adjusted_one() -> None:
    # Prepare
    cohort = _cohort(all_male=True)

    # Execute
    death = outcome_release(cohort, ["death"], COARSE, min_patients=MIN_PATIENTS)[
        "death"
    ]

    # Assert
    assert death.status["adjusted-stratum"] == INCLUDED
    assert death.status["adjusted-fit"] == "no-variance"
    assert death.status["crude-fit"] == INCLUDED
    assert set(death.site_fits) == {"crude"}


def test_counts_only_skips_every_cox_part() -> None:
    # Execute
    death = outcome_release(
        _cohort(), ["death"], COARSE, min_patients=MIN_PATIENTS, counts_only=True
    )["death"]

    # Assert
    assert death.status == {"counts": INCLUDED}
    assert death.counts is not None
    assert death.site_fits == {} and death.ph_checks == {}


@pytest.mark.parametrize(
    "beta",
    [[0.1], [0.1, 0.0, 0.0, 0.0], [0.1, MAX_ABS_COEFFICIENT + 0.5, 0.0], [np.nan] * 3],
)
def test_derivatives_refuse_coefficients_of_wrong_length_or_size(
    beta: list[float],
) -> None:
    # Execute
    with pytest.raises(EvaluationError) as caught:
        cohort_derivatives(
            _cohort(), "death", "adjusted", beta, ties="efron", min_patients=5
        )

    # Assert
    assert [p.code for p in caught.value.problems] == ["bad-coefficients"]


def test_derivatives_refuse_a_site_that_is_no_stratum() -> None:
    # Execute
    with pytest.raises(EvaluationError) as caught:
        cohort_derivatives(
            _cohort(40, positives=3),
            "death",
            "crude",
            [0.0],
            ties="efron",
            min_patients=5,
        )

    # Assert
    assert [p.code for p in caught.value.problems] == ["small-group"]


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_derivatives_are_those_of_the_sites_complete_cases(ties: str) -> None:
    # Prepare
    cohort = _cohort()
    beta = [0.5, 0.02, -MAX_ABS_COEFFICIENT]
    times, events, covariates = cohort.records("death", "adjusted")
    expected = stratum_derivatives(times, events, covariates, beta, ties)

    # Execute
    actual = cohort_derivatives(
        cohort, "death", "adjusted", beta, ties=ties, min_patients=MIN_PATIENTS
    )

    # Assert
    assert actual.to_dict() == expected.to_dict()
    assert actual.n_patients == 60


def test_a_site_with_two_women_is_no_stratum_of_the_adjusted_model() -> None:
    # Prepare
    base = _cohort()
    male = np.ones(base.n_patients)
    male[:2] = 0.0
    cohort = OutcomeCohort(
        predicted=base.predicted,
        age=base.age,
        male=male,
        times=base.times,
        events=base.events,
    )

    # Execute
    release = outcome_release(cohort, ["death"], COARSE, min_patients=MIN_PATIENTS)

    # Assert
    status = release["death"].status
    assert status["adjusted-stratum"] == "small-group"
    assert "adjusted" not in release["death"].site_fits
    assert status["crude-stratum"] == INCLUDED
