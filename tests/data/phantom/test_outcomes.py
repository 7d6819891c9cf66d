from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter

from fedbone.data.phantom.outcomes import DEATH, HEART_FAILURE, simulate_outcomes


@pytest.fixture(scope="module")
def cohort() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 40_000
    table = pd.DataFrame(
        {
            "bm": (rng.random(n) < 0.25).astype(int),
            "ca": (rng.random(n) < 0.1).astype(int),
            "age": np.clip(rng.normal(68.0, 12.0, n), 20, 95),
            "male": (rng.random(n) < 0.5).astype(int),
        }
    )
    outcomes = simulate_outcomes(
        table["bm"].to_numpy(),
        table["ca"].to_numpy(),
        table["age"].to_numpy(),
        table["male"].to_numpy(),
        rng,
    )
    for name, result in outcomes.items():
        table[f"time_{name}_days"] = result.time_days
        table[f"event_{name}"] = result.event
    return table


@pytest.mark.parametrize(
    ("endpoint", "label", "model"),
    [("death", "bm", DEATH), ("hf", "ca", HEART_FAILURE)],
)
def test_cox_model_recovers_the_planted_hazard_ratios(
    cohort: pd.DataFrame, endpoint: str, label: str, model: object
) -> None:
    data = cohort[[label, "age", "male", f"time_{endpoint}_days", f"event_{endpoint}"]]

    fit = CoxPHFitter().fit(
        data, duration_col=f"time_{endpoint}_days", event_col=f"event_{endpoint}"
    )

    ratios = fit.hazard_ratios_
    assert ratios[label] == pytest.approx(model.hazard_ratio_label, rel=0.15)
    assert ratios["age"] == pytest.approx(model.hazard_ratio_age_per_year, abs=0.01)
    assert ratios["male"] == pytest.approx(model.hazard_ratio_male, rel=0.2)


def test_event_fractions_and_follow_up_match_the_paper(cohort: pd.DataFrame) -> None:
    assert cohort["event_death"].mean() == pytest.approx(0.11, abs=0.01)
    assert cohort["event_hf"].mean() == pytest.approx(0.04, abs=0.006)
    years = cohort["time_death_days"].median() / 365.25
    assert years == pytest.approx(1.8, abs=0.3)
    assert cohort["time_hf_days"].median() / 365.25 == pytest.approx(2.4, abs=0.4)
    assert cohort["time_death_days"].min() >= 1
