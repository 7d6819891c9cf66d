"""The federated outcome estimators recover the phantom's planted hazard ratios."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter

from fedbone.data.phantom.outcomes import DEATH, HEART_FAILURE, EndpointModel
from fedbone.data.phantom.plan import plan_site_cohort
from fedbone.outcomes.planted import (
    SiteOutcomeCohort,
    plan_outcome_cohorts,
    recover_hazard_ratios,
)
from fedbone.outcomes.survival_grid import TimeGrid
from fedbone.validation.errors import EvaluationError

SCALE = 0.5
MIN_SCANS = 200
SITES = {DEATH.name: ("A", "D"), HEART_FAILURE.name: ("B", "C", "D")}
# B and C are small: their disclosure rule refuses a weekly grid for hf.
GRIDS = {DEATH.name: TimeGrid(7.0), HEART_FAILURE.name: TimeGrid(91.0)}


def _cohorts(endpoint: EndpointModel, seed: int) -> list[SiteOutcomeCohort]:
    return plan_outcome_cohorts(
        endpoint.label,
        SITES[endpoint.name],
        seed=seed,
        scale=SCALE,
        min_scans=MIN_SCANS,
    )


@pytest.mark.parametrize("endpoint", [DEATH, HEART_FAILURE], ids=lambda e: e.name)
def test_adjusted_ci_covers_planted_hazard_ratio_for_most_seeds(
    endpoint: EndpointModel,
) -> None:
    # Prepare
    seeds = (0, 1, 2)

    # Execute
    recoveries = [
        recover_hazard_ratios(
            _cohorts(endpoint, seed), endpoint, grid=GRIDS[endpoint.name]
        )
        for seed in seeds
    ]

    # Assert
    covered = [r.adjusted.covers_planted for r in recoveries]
    assert sum(covered) >= 2, [(r.adjusted.low, r.adjusted.high) for r in recoveries]
    assert all(
        r.planted_hazard_ratio == endpoint.hazard_ratio_label for r in recoveries
    )
    assert all(r.logrank_p_value < 0.05 for r in recoveries)


def test_stratified_estimate_equals_lifelines_on_pooled_records() -> None:
    # Prepare
    cohorts = _cohorts(HEART_FAILURE, seed=0)
    pooled = pd.concat(
        [
            pd.DataFrame(
                {
                    "time": c.time_days["hf"],
                    "event": c.event["hf"],
                    "group": c.group,
                    "age": c.age,
                    "male": c.male,
                    "site": c.site,
                }
            )
            for c in cohorts
        ]
    )

    # Execute
    recovery = recover_hazard_ratios(cohorts, HEART_FAILURE, grid=GRIDS["hf"])
    reference = CoxPHFitter().fit(pooled, "time", "event", strata=["site"])
    crude_reference = CoxPHFitter().fit(
        pooled[["time", "event", "group", "site"]], "time", "event", strata=["site"]
    )

    # Assert
    summary = reference.summary.loc["group"]
    assert np.log(recovery.adjusted.hazard_ratio) == pytest.approx(
        summary["coef"], abs=1e-6
    )
    assert np.log(recovery.adjusted.low) == pytest.approx(
        summary["coef lower 95%"], abs=1e-6
    )
    assert np.log(recovery.adjusted.high) == pytest.approx(
        summary["coef upper 95%"], abs=1e-6
    )
    assert np.log(recovery.crude.hazard_ratio) == pytest.approx(
        crude_reference.params_["group"], abs=1e-6
    )


def test_cohort_keeps_one_first_scan_per_patient() -> None:
    # Prepare
    plans = plan_site_cohort(
        "D", scale=SCALE, min_scans=MIN_SCANS, seed=3, outcomes=True
    )
    patients = {plan.patient_id for plan in plans}
    # A repeat scan is a later visit of an older patient, so first scans carry
    # each patient's youngest age.
    youngest: dict[str, float] = {}
    for plan in plans:
        youngest[plan.patient_id] = min(
            youngest.get(plan.patient_id, plan.age_years), plan.age_years
        )

    # Execute
    (cohort,) = plan_outcome_cohorts(
        "bm", ["D"], seed=3, scale=SCALE, min_scans=MIN_SCANS
    )

    # Assert
    assert cohort.n_patients == len(patients) < len(plans)
    assert np.array_equal(np.sort(cohort.age), np.sort(list(youngest.values())))
    assert np.array_equal(cohort.group, cohort.true_label)
    assert set(cohort.time_days) == {"death", "hf"}
    assert np.all(cohort.time_days["death"] >= 1)


def test_imperfect_classifier_flips_labels_at_its_error_rates() -> None:
    # Prepare
    sensitivity, specificity = 0.85, 0.90

    # Execute
    (cohort,) = plan_outcome_cohorts(
        "bm",
        ["A"],
        seed=0,
        scale=SCALE,
        min_scans=MIN_SCANS,
        sensitivity=sensitivity,
        specificity=specificity,
    )

    # Assert
    positives = cohort.true_label == 1
    assert cohort.group[positives].mean() == pytest.approx(sensitivity, abs=0.05)
    assert 1 - cohort.group[~positives].mean() == pytest.approx(specificity, abs=0.02)


def test_cohort_grouped_by_another_label_is_refused() -> None:
    # Prepare
    cohorts = _cohorts(DEATH, seed=0)

    # Execute / Assert
    with pytest.raises(EvaluationError, match="wrong-task"):
        recover_hazard_ratios(cohorts, HEART_FAILURE)


def test_bad_planning_arguments_are_all_listed() -> None:
    # Execute
    with pytest.raises(EvaluationError) as raised:
        plan_outcome_cohorts("xx", [], seed=0, scale=SCALE, min_scans=20, sensitivity=2)

    # Assert
    codes = {problem.code for problem in raised.value.problems}
    assert codes == {"unknown-task", "no-sites", "bad-rate"}
