"""``training.secure_aggregation`` and the settings it must not be mixed with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fedbone.config.study import study_config_from_mapping
from fedbone.errors import ConfigError


def _study(**training: Any) -> dict[str, Any]:
    return {"study": {"name": "secagg"}, "training": training}


def test_secure_aggregation_with_fedavg_is_a_valid_study(tmp_path: Path) -> None:
    study = study_config_from_mapping(
        _study(secure_aggregation=True, secure_aggregation_clip=10.0),
        base_dir=tmp_path,
    )

    assert study.training.secure_aggregation
    assert study.training.secure_aggregation_clip == 10.0
    assert study.training.secure_aggregation_scale_bits == 24


@pytest.mark.parametrize("strategy", ["krum", "fedmedian", "fedbn", "fedadam"])
def test_strategies_that_need_single_updates_are_refused(
    tmp_path: Path, strategy: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        study_config_from_mapping(
            _study(secure_aggregation=True, strategy=strategy), base_dir=tmp_path
        )

    [problem] = caught.value.problems
    assert problem.where == "training.strategy" and "fedavg" in problem.message


def test_a_clip_and_scale_that_could_overflow_the_sum_are_refused(
    tmp_path: Path,
) -> None:
    raw = _study(
        secure_aggregation=True,
        secure_aggregation_clip=1e6,
        secure_aggregation_scale_bits=40,
    )

    with pytest.raises(ConfigError) as caught:
        study_config_from_mapping(raw, base_dir=tmp_path)

    assert [p.where for p in caught.value.problems] == [
        "training.secure_aggregation_clip"
    ]


def test_without_secure_aggregation_its_settings_restrict_nothing(
    tmp_path: Path,
) -> None:
    study = study_config_from_mapping(
        _study(strategy="krum", secure_aggregation_clip=1e6), base_dir=tmp_path
    )

    assert not study.training.secure_aggregation
