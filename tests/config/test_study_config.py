from pathlib import Path

import pytest

from fedbone.config.study import (
    StrategyName,
    load_study_config,
    study_config_from_mapping,
)
from fedbone.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "name",
    [
        "simulation.yaml",
        "paper.yaml",
        "ratio-sweep.yaml",
        "cv-ensemble.yaml",
        "two-views.yaml",
    ],
)
def test_shipped_study_configs_are_valid(name: str) -> None:
    study = load_study_config(ROOT / "configs" / name, base_dir=ROOT)

    assert set(study.phases) >= {"census", "train", "validate", "report"}
    assert study.simulation is not None
    assert study.simulation.sites_dir.is_relative_to(ROOT)


def test_every_study_problem_is_reported_at_once(tmp_path: Path) -> None:
    raw = {
        "study": {"task": "lungs", "phases": ["train", "census"], "baselines": ["x"]},
        "model": {"architecture": "vgg19", "pretrained_weights": "w.pt"},
        "training": {"strategy": "fedsgd", "rounds": 0, "typo": 1},
        "validation": {"bins": 10},
    }

    with pytest.raises(ConfigError) as caught:
        study_config_from_mapping(raw, base_dir=tmp_path)

    wheres = {p.where for p in caught.value.problems}
    assert wheres >= {
        "study.name",
        "study.task",
        "study.phases",
        "study.baselines",
        "model.architecture",
        "model.pretrained_sha256",
        "training.strategy",
        "training.rounds",
        "training.typo",
        "validation.bins",
    }


def test_the_config_hash_changes_with_any_setting(tmp_path: Path) -> None:
    base = {"study": {"name": "s"}, "training": {"strategy": "fedavg"}}
    other = {"study": {"name": "s"}, "training": {"strategy": "fedprox"}}

    a = study_config_from_mapping(base, base_dir=tmp_path)
    b = study_config_from_mapping(other, base_dir=tmp_path)

    assert b.training.strategy is StrategyName.FEDPROX
    assert a.sha256() != b.sha256()


def test_cross_validation_and_phantom_pretraining_settings_are_checked() -> None:
    # Prepare
    raw = {
        "study": {"name": "cv", "phases": ["census", "train", "outcomes"]},
        "model": {
            "architecture": "small-cnn-narrow",
            "pretrained_weights": "w.pt",
            "pretrained_sha256": "0" * 64,
            "pretrain_phantom_epochs": 5,
        },
        "cross_validation": {"folds": 1, "early_stopping_rounds": 0},
        "outcomes": {"model": "cv-ensemble"},
        "simulation": {"views": "sideways"},
    }

    # Execute
    with pytest.raises(ConfigError) as caught:
        study_config_from_mapping(raw, base_dir=ROOT)

    # Assert: every problem, each where it is
    where = {problem.where for problem in caught.value.problems}
    assert {
        "cross_validation.folds",
        "cross_validation.early_stopping_rounds",
        "model.pretrain_phantom_epochs",
        "outcomes.model",
        "simulation.views",
    } <= where
