"""The ``outcomes`` study section and the phantom sites with follow-up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fedbone.config.outcomes import OutcomeSettings
from fedbone.config.study import study_config_from_mapping
from fedbone.errors import ConfigError


def _raw(task: str = "bm", **sections: Any) -> dict[str, Any]:
    return {"study": {"name": "outcomes", "task": task}, **sections}


def _problems(raw: dict[str, Any], tmp_path: Path) -> set[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        study_config_from_mapping(raw, base_dir=tmp_path)
    return {(p.code, p.where) for p in caught.value.problems}


@pytest.mark.parametrize(("task", "endpoint"), [("bm", "death"), ("ca", "hf")])
def test_defaults_analyse_the_tasks_endpoint(
    task: str, endpoint: str, tmp_path: Path
) -> None:
    # Execute
    study = study_config_from_mapping(_raw(task), base_dir=tmp_path)

    # Assert
    assert study.outcomes == OutcomeSettings()
    assert study.outcomes.endpoints_for(task) == (endpoint,)
    assert (study.outcomes.resolution_days, study.outcomes.horizon_days) == (
        7.0,
        3650.0,
    )


def test_endpoints_given_replace_the_tasks_default(tmp_path: Path) -> None:
    # Prepare
    raw = _raw("bm", outcomes={"endpoints": ["death", "hf"], "ties": "breslow"})

    # Execute
    study = study_config_from_mapping(raw, base_dir=tmp_path)

    # Assert
    assert study.outcomes.endpoints_for("bm") == ("death", "hf")
    assert study.outcomes.ties == "breslow"


def test_every_bad_outcome_setting_is_reported_at_once(tmp_path: Path) -> None:
    # Prepare
    raw = _raw(
        outcomes={
            "ties": "exact",
            "split": "train",
            "resolution_days": 30,
            "horizon_days": 14,
            "endpoints": ["Death"],
            "typo": 1,
        }
    )

    # Execute
    problems = _problems(raw, tmp_path)

    # Assert
    assert problems >= {
        ("invalid-choice", "outcomes.ties"),
        ("invalid-choice", "outcomes.split"),
        ("invalid-value", "outcomes.horizon_days"),
        ("invalid-value", "outcomes.endpoints"),
    }
    assert any(where == "outcomes.typo" for _, where in problems)


def test_the_outcomes_phase_needs_a_trained_model(tmp_path: Path) -> None:
    # Prepare
    raw = {"study": {"name": "s", "phases": ["census", "validate", "outcomes"]}}

    # Execute / Assert
    assert ("invalid-value", "study.phases") in _problems(raw, tmp_path)


def test_the_outcomes_phase_after_training_is_accepted(tmp_path: Path) -> None:
    # Prepare
    raw = {"study": {"name": "s", "phases": ["train", "outcomes", "report"]}}

    # Execute
    study = study_config_from_mapping(raw, base_dir=tmp_path)

    # Assert
    assert "outcomes" in study.phases


def test_outcome_sites_must_be_simulated_sites(tmp_path: Path) -> None:
    # Prepare
    raw = _raw(simulation={"sites": ["A", "B"], "outcome_sites": ["B", "D"]})

    # Execute / Assert
    assert ("invalid-choice", "simulation.outcome_sites") in _problems(raw, tmp_path)


def test_outcome_sites_default_to_the_profiles_choice(tmp_path: Path) -> None:
    # Prepare
    given = _raw(simulation={"sites": ["A", "D"], "outcome_sites": ["A"]})
    absent = _raw(simulation={"sites": ["A", "D"]})

    # Execute
    chosen = study_config_from_mapping(given, base_dir=tmp_path).simulation
    default = study_config_from_mapping(absent, base_dir=tmp_path).simulation

    # Assert
    assert chosen is not None and chosen.outcome_sites == ("A",)
    assert default is not None and default.outcome_sites is None
