from pathlib import Path

import pytest

from fedbone.config.study import study_config_from_mapping
from fedbone.config.synthetic import synthetic_model_name
from fedbone.errors import ConfigError


def _raw(**sections: object) -> dict[str, object]:
    return {
        "study": {
            "name": "gan-study",
            "phases": ["census", "gan", "synthesize", "train", "validate", "report"],
        },
        **sections,
    }


def test_generative_sections_are_read_with_defaults(tmp_path: Path) -> None:
    # Execute
    study = study_config_from_mapping(
        _raw(
            gan={"sites": ["A"], "steps": 300, "ada_target": None},
            synthesis={"n_per_class": 50, "recipients": ["B"]},
            synthetic_training={
                "sites": ["B"],
                "ratios": [1, 2.5],
                "synthetic_only": True,
            },
        ),
        base_dir=tmp_path,
    )

    # Assert
    assert study.gan.sites == ("A",) and study.gan.steps == 300
    assert study.gan.ada_target is None and study.gan.mode == "local"
    assert study.synthesis.recipients == ("B",)
    assert list(study.synthetic_training.model_names()) == [
        "local-B-syn1",
        "local-B-syn2p5",
        "local-B-synonly",
    ]


def test_every_generative_problem_is_reported_at_once(tmp_path: Path) -> None:
    # Prepare
    raw = _raw(
        gan={"mode": "central", "steps": 0, "encoder": "torchscript", "typo": 1},
        synthesis={"classes": [0, 7]},
        synthetic_training={"sites": ["B"], "ratios": [-1]},
    )

    # Execute
    with pytest.raises(ConfigError) as caught:
        study_config_from_mapping(raw, base_dir=tmp_path)

    # Assert
    wheres = {p.where for p in caught.value.problems}
    assert wheres >= {
        "gan.mode",
        "gan.steps",
        "gan.encoder_sha256",
        "gan.typo",
        "synthesis.classes",
        "synthetic_training.ratios",
    }


def test_a_study_may_not_name_an_encoder_file_at_the_sites(tmp_path: Path) -> None:
    # Prepare: the centre names a file (TorchScript runs code where it loads)
    raw = _raw(
        gan={
            "encoder": "torchscript",
            "encoder_path": "/tmp/evil.pt",
            "encoder_sha256": "ab" * 32,
        }
    )

    # Execute
    with pytest.raises(ConfigError) as caught:
        study_config_from_mapping(raw, base_dir=tmp_path)

    # Assert
    assert [(p.code, p.where) for p in caught.value.problems] == [
        ("site-setting", "gan.encoder_path")
    ]


def test_federated_gan_mode_reads_its_rounds(tmp_path: Path) -> None:
    study = study_config_from_mapping(
        _raw(gan={"mode": "federated", "steps": 90, "rounds": 3}), base_dir=tmp_path
    )

    assert study.gan.mode == "federated" and study.gan.rounds == 3


def test_fewer_steps_than_federated_rounds_is_refused(tmp_path: Path) -> None:
    raw = _raw(gan={"mode": "federated", "steps": 2, "rounds": 3})

    with pytest.raises(ConfigError) as caught:
        study_config_from_mapping(raw, base_dir=tmp_path)

    assert [p.where for p in caught.value.problems] == ["gan.steps"]


def test_a_study_without_phases_runs_the_classifier_study(tmp_path: Path) -> None:
    study = study_config_from_mapping({"study": {"name": "x"}}, base_dir=tmp_path)

    assert study.phases == ("census", "train", "validate", "report")


def test_synthetic_model_names() -> None:
    assert synthetic_model_name("B", 50.0) == "local-B-syn50"
    assert synthetic_model_name("B", None) == "local-B-synonly"


def test_a_dp_study_reads_its_settings(tmp_path: Path) -> None:
    raw = _raw(
        model={"norm": "group"},
        dp={
            "classifier": {"target_epsilon": 8.0},
            "gan": {"noise_multiplier": 1.2},
            "on_budget_exhausted": "stop",
        },
    )

    study = study_config_from_mapping(raw, base_dir=tmp_path)

    assert study.dp.enabled and study.dp.on_budget_exhausted == "stop"
    assert study.dp.classifier is not None
    assert study.dp.classifier.target_epsilon == 8.0
    assert study.dp.classifier.to_config()["dp-noise-multiplier"] == 0.0


def test_every_dp_problem_is_reported_at_once(tmp_path: Path) -> None:
    raw = _raw(
        model={"norm": "batch"},
        dp={
            "classifier": {"target_epsilon": 8.0, "noise_multiplier": 1.0},
            "gan": {"max_grad_norm": 1.0},
            "on_budget_exhausted": "ignore",
        },
    )

    with pytest.raises(ConfigError) as caught:
        study_config_from_mapping(raw, base_dir=tmp_path)

    assert {p.where for p in caught.value.problems} == {
        "dp.classifier",
        "dp.gan",
        "dp.on_budget_exhausted",
        "model.norm",
    }


def test_synthesis_attempts_are_read_and_bounded(tmp_path: Path) -> None:
    # Execute
    default = study_config_from_mapping(_raw(), base_dir=tmp_path)
    chosen = study_config_from_mapping(
        _raw(synthesis={"max_attempts": 3}), base_dir=tmp_path
    )
    with pytest.raises(ConfigError) as caught:
        study_config_from_mapping(
            _raw(synthesis={"max_attempts": 0}), base_dir=tmp_path
        )

    # Assert
    assert default.synthesis.max_attempts == 8
    assert chosen.synthesis.max_attempts == 3
    assert {p.where for p in caught.value.problems} == {"synthesis.max_attempts"}
