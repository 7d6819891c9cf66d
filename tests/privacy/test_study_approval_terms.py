"""What a study asks of a site, its machine-independent hash, and requests beyond it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fedbone.config.privacy import DpPhaseSettings, DpSettings, DpStatisticsSettings
from fedbone.config.study import (
    ModelSettings,
    StudyConfig,
    TrainingSettings,
    ValidationSettings,
    study_config_from_mapping,
)
from fedbone.privacy.study_approval import StudyApproval

RAW: dict[str, Any] = {
    "study": {"name": "bm-dp", "phases": ["census", "train", "validate", "report"]},
    "model": {
        "architecture": "small-cnn",
        "norm": "group",
        "pretrained_weights": "weights/imagenet.pt",
        "pretrained_sha256": "a" * 64,
    },
    "dp": {"classifier": {"target_epsilon": 8.0}, "statistics": {"epsilon": 1.0}},
    "simulation": {"sites": ["A", "B"], "sites_dir": "phantoms"},
    "output": {"runs_dir": "runs"},
}

DP_STUDY = StudyConfig(
    name="bm-dp",
    phases=("census", "train", "validate", "report"),
    model=ModelSettings(architecture="small-cnn", norm="group"),
    validation=ValidationSettings(bins=1000),
    dp=DpSettings(
        classifier=DpPhaseSettings(target_epsilon=8.0),
        statistics=DpStatisticsSettings(epsilon=1.0, bins=20),
    ),
)
APPROVAL = StudyApproval.of(DP_STUDY)


def test_the_approval_hash_does_not_depend_on_where_the_study_is_loaded(
    tmp_path: Path,
) -> None:
    centre = study_config_from_mapping(RAW, base_dir=tmp_path / "centre")
    site = study_config_from_mapping(RAW, base_dir=tmp_path / "hospital")
    other_weights = {**RAW, "model": {**RAW["model"], "pretrained_sha256": "b" * 64}}
    changed = study_config_from_mapping(other_weights, base_dir=tmp_path / "centre")

    assert centre.sha256() != site.sha256()  # runs_dir and sites_dir differ
    assert centre.approval_sha256() == site.approval_sha256()
    assert changed.approval_sha256() != centre.approval_sha256()


def test_the_approval_lists_phases_kinds_dp_and_bins() -> None:
    assert APPROVAL.study == "bm-dp"
    assert APPROVAL.approval_sha256 == DP_STUDY.approval_sha256()
    assert APPROVAL.kinds == {
        "census": ("query.census",),
        "train": ("train", "evaluate"),
        "validate": ("query.validate", "query.paired_components"),
        "report": (),
    }
    assert APPROVAL.dp["dp-target-epsilon"] == 8.0
    assert APPROVAL.dp["dp-stat-epsilon"] == 1.0
    assert APPROVAL.dp["dp-noise-multiplier"] == 0.0
    assert (APPROVAL.validation_bins, APPROVAL.statistics_bins) == (1000, 20)
    assert "classifier DP-SGD target epsilon 8" in APPROVAL.describe_dp()


def test_under_secure_aggregation_phase_train_also_sends_its_stages() -> None:
    training = TrainingSettings(secure_aggregation=True)
    study = StudyConfig(name="bm-secure", training=training)

    approval = StudyApproval.of(study)

    assert approval.kinds["train"] == (
        "train",
        "evaluate",
        "query.secagg_keys",
        "query.secagg_shares",
        "train.secagg",
        "query.secagg_unmask",
    )
    assert approval.kinds["census"] == ("query.census",)


def _config(phase: str, **values: Any) -> dict[str, Any]:
    return {"phase": phase, "run-name": "bm-dp-20250101-120000", **values}


DP_TRAIN = {"dp-target-epsilon": 8.0, "dp-noise-multiplier": 0.0}
NOISY = {"dp-stat-epsilon": 1.0, "dp-stat-bins": 20, "bins": 1000}


@pytest.mark.parametrize(
    ("kind", "config"),
    [
        ("query.census", _config("census")),
        ("train", _config("train", **DP_TRAIN)),
        ("evaluate", _config("train")),
        ("query.validate", _config("validate", **NOISY)),
        ("query.paired_components", _config("validate", **NOISY)),
    ],
)
def test_requests_within_the_approval_pass(kind: str, config: dict[str, Any]) -> None:
    assert APPROVAL.request_problems(kind, config) == []


@pytest.mark.parametrize(
    ("kind", "config", "where"),
    [
        ("query.outcomes", _config("outcomes", **NOISY), "phase"),
        ("query.validate", _config("train", **DP_TRAIN), "kind"),
        (
            "query.census",
            _config("census", **{"run-name": "other-study-1"}),
            "run-name",
        ),
        ("query.census", _config("census", **{"run-name": "bm-dpx"}), "run-name"),
        ("train", _config("train", **{"dp-target-epsilon": 80.0}), "dp-target-epsilon"),
        ("train", _config("train"), "dp-target-epsilon"),
        ("train.secagg", _config("train", **DP_TRAIN), "kind"),
        ("query.validate", _config("validate", bins=1000), "dp-stat-epsilon"),
        ("query.validate", _config("validate", **{**NOISY, "bins": 2000}), "bins"),
        (
            "query.validate",
            _config("validate", **{**NOISY, "dp-stat-bins": 200}),
            "dp-stat-bins",
        ),
        (
            "evaluate",
            _config("train", **{"dp-gan-noise-multiplier": 0.5}),
            "dp-gan-noise-multiplier",
        ),
    ],
    ids=[
        "phase",
        "kind",
        "other-study",
        "name-prefix",
        "epsilon",
        "dp-dropped",
        "secure-aggregation-not-approved",
        "exact-statistics",
        "bins",
        "noisy-bins",
        "undeclared-dp",
    ],
)
def test_requests_beyond_the_approval_are_refused(
    kind: str, config: dict[str, Any], where: str
) -> None:
    problems = APPROVAL.request_problems(kind, config)

    assert [p.code for p in problems] == ["not-in-approved-study"]
    assert problems[0].where == where
    assert "fedbone site approve" in problems[0].message
