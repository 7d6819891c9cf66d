import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedbone.outcomes.kaplan_meier import FederatedKaplanMeier, FederatedLogRank
from fedbone.outcomes.survival_grid import TimeGrid, site_counts
from fedbone.reporting import (
    StudyReport,
    format_summary,
    plot_kaplan_meier,
    write_outcome_sections,
    write_study_report,
)

GRID = TimeGrid(resolution_days=30.0, horizon_days=1500.0)


def _site(seed: int, n: int) -> Any:
    """One site's counts: predicted positives die about four times as fast."""
    rng = np.random.default_rng(seed)
    positive = rng.random(n) < 0.3
    hazard = np.where(positive, 4.0, 1.0) / 2000.0
    event_days = rng.exponential(1.0 / hazard)
    censor_days = rng.uniform(200.0, 1400.0, n)
    return site_counts(
        np.minimum(event_days, censor_days),
        (event_days <= censor_days).astype(int),
        np.where(positive, "positive", "negative"),
        GRID,
    )


def _km_entry(sites: list[Any]) -> dict[str, Any]:
    """The ``km`` entry as the outcomes phase writes it, from the estimator."""
    km = FederatedKaplanMeier().fit(sites)
    last = int(np.flatnonzero(km.at_risk_.to_numpy().max(axis=1) > 0)[-1])
    bands = km.confidence_interval_.iloc[: last + 1]
    entry: dict[str, Any] = {
        "time-days": km.survival_function_.index[: last + 1].tolist()
    }
    for group in km.survival_function_.columns:
        entry[group] = {
            "survival": km.survival_function_[group].iloc[: last + 1].tolist(),
            "lower": bands[f"{group}_lower_0.95"].tolist(),
            "upper": bands[f"{group}_upper_0.95"].tolist(),
            "at-risk": km.at_risk_[group].iloc[: last + 1].tolist(),
        }
    return entry


def _test(sites: list[Any], stratified: bool) -> dict[str, Any]:
    test = FederatedLogRank(stratified=stratified).fit(sites)
    return {
        "statistic": test.test_statistic_,
        "df": test.degrees_of_freedom_,
        "p-value": test.p_value_,
    }


def _coefficient(covariate: str, hr: float, low: float, high: float) -> dict:
    return {
        "covariate": covariate,
        "coef": float(np.log(hr)),
        "se": 0.3,
        "hr": hr,
        "hr-low": low,
        "hr-high": high,
        "p-value": 2e-5,
    }


def _fit(*coefficients: dict[str, Any]) -> dict[str, Any]:
    return {
        "sites": ["A", "D"],
        "n-patients": 320,
        "n-events": 35,
        "converged": True,
        "iterations": 5,
        "rounds": 6,
        "log-likelihood": -150.2,
        "coefficients": list(coefficients),
    }


def _endpoint(seed: int) -> dict[str, Any]:
    sites = [_site(seed, 300), _site(seed + 1, 300)]
    crude = _fit(_coefficient("predicted-positive", 3.71, 2.1, 6.5))
    adjusted = _fit(
        _coefficient("predicted-positive", 3.02, 1.6, 5.7),
        _coefficient("age-per-year", 1.04, 1.01, 1.07),
        _coefficient("male", 1.25, 0.7, 2.2),
    )
    meta_row = {"covariate": "predicted-positive", "hr": 3.5, "hr-low": 1.9}
    return {
        "sites": ["A", "D"],
        "groups": {
            "positive": {"n-patients": 80, "n-events": 20},
            "negative": {"n-patients": 240, "n-events": 15},
        },
        "km": _km_entry(sites),
        "logrank": _test(sites, stratified=False),
        "logrank-stratified": _test(sites, stratified=True),
        "cox": {"crude": crude, "adjusted": adjusted},
        "meta": {
            "crude": [meta_row | {"hr-high": 6.4, "q": 0.3, "i2": 0.0, "n-sites": 2}],
            "adjusted": [],
        },
        "site-fits": [
            {
                "site": site,
                "model": "crude",
                "covariate": "predicted-positive",
                "hr": 3.0,
                "hr-low": 1.2,
                "hr-high": 7.5,
                "n-patients": 160,
                "n-events": 17,
            }
            for site in ("D", "A")
        ],
        "ph-checks": [
            {
                "site": "D",
                "model": "adjusted",
                "covariate": "age-per-year",
                "statistic": 6.1,
                "p-value": 0.013,
            }
        ],
        "errors": [],
    }


def _outcomes(**endpoints: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": "federated",
        "threshold": 0.5,
        "resolution-days": 30.0,
        "horizon-days": 1500.0,
        "ties": "efron",
        "dp": False,
        "site-status": [
            {"site": "A", "endpoint": "death", "part": "counts", "status": "included"},
            {
                "site": "E",
                "endpoint": "death",
                "part": "counts",
                "status": "no-follow-up",
            },
        ],
        "endpoints": endpoints,
    }


@pytest.fixture(scope="module")
def outcomes() -> dict[str, Any]:
    return _outcomes(death=_endpoint(1), hf=_endpoint(7))


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_sections_write_one_km_figure_per_endpoint_and_both_csvs(
    tmp_path: Path, outcomes: dict[str, Any]
) -> None:
    # Execute
    sections = write_outcome_sections(tmp_path, outcomes)

    # Assert
    assert [s.heading for s in sections] == [
        "Outcome sites",
        "Outcome: death — predicted positive vs negative",
        "Outcome: hf — predicted positive vs negative",
    ]
    for endpoint in ("death", "hf"):
        png = tmp_path / f"km_{endpoint}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 10_000
    cox = _rows(tmp_path / "outcomes_cox.csv")
    assert len(cox) == 2 * (1 + 3)
    assert {(r["endpoint"], r["model"]) for r in cox} == {
        (e, m) for e in ("death", "hf") for m in ("crude", "adjusted")
    }
    km = _rows(tmp_path / "outcomes_km.csv")
    n_times = len(outcomes["endpoints"]["death"]["km"]["time-days"])
    death_positive = [
        r for r in km if r["endpoint"] == "death" and r["group"] == "positive"
    ]
    assert len(death_positive) == n_times
    assert float(death_positive[0]["survival"]) == 1.0
    assert set(km[0]) == {
        "endpoint",
        "group",
        "time-days",
        "survival",
        "lower",
        "upper",
        "at-risk",
    }


def test_endpoint_section_tables_show_hazard_ratios_tests_and_ph_flag(
    tmp_path: Path, outcomes: dict[str, Any]
) -> None:
    # Execute
    death = write_outcome_sections(tmp_path, outcomes)[1]

    # Assert
    cells = [str(v) for rows, _ in death.tables for row in rows for v in row.values()]
    assert "3.71 (2.10-6.50)" in cells
    assert "3.02 (1.60-5.70)" in cells
    assert "3.50 (1.90-6.40)" in cells  # meta-analysis
    assert "PH doubtful" in cells
    tests = next(rows for rows, columns in death.tables if "chi-squared" in columns)
    assert [t["test"] for t in tests] == ["log-rank", "site-stratified"]
    assert any("Newton-Raphson" in note for note in death.notes)
    assert any("30-day grid" in note for note in death.notes)
    assert death.images == (tmp_path / "km_death.png",)


def test_missing_analyses_render_what_exists(tmp_path: Path) -> None:
    # Prepare: only the groups and an error survive; a KM with a ragged curve.
    endpoint = {
        "sites": ["D"],
        "groups": {"positive": {"n-patients": 6, "n-events": 1}},
        "km": {"time-days": [0.0, 7.0], "positive": {"survival": [1.0]}},
        "errors": [{"analysis": "cox-adjusted", "reason": "no variance in sex"}],
    }
    outcomes = {"endpoints": {"death": endpoint}}

    # Execute
    sections = write_outcome_sections(tmp_path, outcomes)

    # Assert
    (death,) = sections
    assert death.images == ()
    cells = [str(v) for rows, _ in death.tables for row in rows for v in row.values()]
    assert "no variance in sex" in cells
    assert not any("Newton-Raphson" in note for note in death.notes)
    assert not (tmp_path / "outcomes_cox.csv").exists()


def test_no_endpoints_gives_one_section_saying_no_follow_up(tmp_path: Path) -> None:
    # Execute
    sections = write_outcome_sections(tmp_path, {"endpoints": {}, "dp": False})

    # Assert
    assert len(sections) == 1
    assert "No site had follow-up data" in sections[0].notes[0]
    assert list(tmp_path.iterdir()) == []


def test_plot_without_curves_still_writes_a_png(tmp_path: Path) -> None:
    # Execute
    path = plot_kaplan_meier("death", {}, tmp_path / "km.png", title="empty")

    # Assert
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_study_report_renders_outcomes_and_summary_lines(
    tmp_path: Path, outcomes: dict[str, Any]
) -> None:
    # Prepare
    json.dumps(outcomes)  # the phase's dict must be JSON-ready as built here
    report = StudyReport(title="t", config={"task": "bm"}, outcomes=outcomes)

    # Execute
    page = write_study_report(report, tmp_path).read_text()
    summary = format_summary(report)

    # Assert
    assert "Outcome: death — predicted positive vs negative" in page
    assert "3.71 (2.10-6.50)" in page
    assert page.count('alt="km_') == 2
    death_line = next(
        line for line in summary.splitlines() if line.startswith("death:")
    )
    assert "crude HR 3.71 (2.10-6.50)" in death_line
    assert "adjusted HR 3.02 (1.60-5.70)" in death_line
    assert "log-rank p = " in death_line


def test_study_report_without_outcomes_has_no_outcome_section(tmp_path: Path) -> None:
    # Execute
    page = write_study_report(StudyReport(title="t", config={}), tmp_path).read_text()

    # Assert
    assert "Outcome" not in page
    assert not (tmp_path / "outcomes_km.csv").exists()
