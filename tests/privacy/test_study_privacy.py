"""The study's privacy table, from what the sites' replies reported."""

from __future__ import annotations

import math

from fedbone.privacy.study_privacy import add_statistics_spending, privacy_by_site


def test_each_sites_latest_dp_sgd_report_is_its_total() -> None:
    rounds = [
        {"site": "A", "dp-epsilon": 0.5, "dp-delta": 1e-5},
        {"site": "B", "auc": 0.7},
        {"site": "A", "dp-epsilon": 1.2, "dp-noise-multiplier": 1.1},
    ]

    spent = privacy_by_site(rounds)

    assert list(spent) == ["A"]
    assert spent["A"]["epsilon"] == 1.2 and spent["A"]["noise-multiplier"] == 1.1
    assert math.isnan(spent["A"]["delta"])


def test_statistics_epsilon_adds_up_and_the_ledger_total_is_the_latest() -> None:
    privacy = {"A": {"epsilon": 2.0, "statistics-epsilon": 0.5}}
    spent = {
        "A": {"statistics-epsilon": 0.25, "epsilon-spent": 3.0, "delta-spent": 1e-6},
        "B": {"statistics-epsilon": 1.0, "epsilon-spent": 1.0, "delta-spent": 0.0},
    }

    add_statistics_spending(privacy, spent)

    assert privacy["A"] == {
        "epsilon": 2.0,
        "statistics-epsilon": 0.75,
        "epsilon-total": 3.0,
        "delta-total": 1e-6,
    }
    assert privacy["B"]["statistics-epsilon"] == 1.0
