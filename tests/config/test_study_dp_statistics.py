from pathlib import Path

import pytest

from fedbone.config.privacy import DpStatisticsSettings
from fedbone.config.study import study_config_from_mapping
from fedbone.errors import ConfigError


def _raw(**dp: object) -> dict[str, object]:
    return {
        "study": {"name": "dp-study", "phases": ["census", "train", "validate"]},
        "dp": dp,
    }


def test_statistics_alone_are_read_with_their_defaults(tmp_path: Path) -> None:
    # Execute
    study = study_config_from_mapping(_raw(statistics={}), base_dir=tmp_path)

    # Assert
    assert study.dp.statistics == DpStatisticsSettings(
        epsilon=1.0, bins=20, max_scans_per_patient=1
    )
    assert study.dp.classifier is None and study.dp.gan is None
    assert study.dp.enabled


def test_statistics_settings_travel_as_request_config(tmp_path: Path) -> None:
    # Prepare
    raw = _raw(statistics={"epsilon": 0.5, "bins": 30, "max_scans_per_patient": 2})

    # Execute
    study = study_config_from_mapping(raw, base_dir=tmp_path)

    # Assert
    assert study.dp.statistics is not None
    assert study.dp.statistics.to_config() == {
        "dp-stat-epsilon": 0.5,
        "dp-stat-bins": 30,
        "dp-stat-max-scans": 2,
    }


def test_a_study_without_dp_releases_exact_statistics(tmp_path: Path) -> None:
    # Execute
    raw = {"study": {"name": "plain", "phases": ["census", "train", "validate"]}}
    study = study_config_from_mapping(raw, base_dir=tmp_path)

    # Assert
    assert study.dp.statistics is None
    assert not study.dp.enabled


def test_every_statistics_problem_is_reported_at_once(tmp_path: Path) -> None:
    # Prepare
    raw = _raw(statistics={"epsilon": 0, "bins": 21, "sensitivity": 2})

    # Execute
    with pytest.raises(ConfigError) as caught:
        study_config_from_mapping(raw, base_dir=tmp_path)

    # Assert
    found = {(p.code, p.where) for p in caught.value.problems}
    assert found == {
        ("unknown-key", "dp.statistics.sensitivity"),
        ("odd-bins", "dp.statistics.bins"),
        ("out-of-range", "dp.statistics.epsilon"),
    }


@pytest.mark.parametrize(
    ("statistics", "where"),
    [
        ({"bins": 8}, "dp.statistics.bins"),
        ({"max_scans_per_patient": 0}, "dp.statistics.max_scans_per_patient"),
        ({"epsilon": "high"}, "dp.statistics.epsilon"),
        (0.5, "dp.statistics"),
    ],
)
def test_bad_statistics_settings_name_their_place(
    tmp_path: Path, statistics: object, where: str
) -> None:
    # Execute
    with pytest.raises(ConfigError) as caught:
        study_config_from_mapping(_raw(statistics=statistics), base_dir=tmp_path)

    # Assert
    assert [p.where for p in caught.value.problems] == [where]
