"""Phase ``train`` over sites answering Flower's train/evaluate rounds."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Error, Message, RecordDict
from phase_grid import ScriptedGrid, config_of, content, study_run

from fedbone.config.privacy import DpSettings
from fedbone.config.study import StudyConfig, TrainingSettings
from fedbone.config.synthetic import SyntheticTrainingSettings
from fedbone.federation.records import record_to_arrays
from server.phases import train as train_phase
from server.phases.train import run_train
from server.study_run import StudyError

SITES = {1: ("A", "train"), 2: ("B", "train"), 3: ("X", "validate-only")}
START = {"w": np.zeros(2, np.float32)}


class _TrainingSites:
    """Site ``n`` moves every weight to ``n`` and has ``10 n`` scans."""

    def __init__(self, refusing: tuple[int, ...] = ()) -> None:
        self.refusing = refusing

    def train(self, message: Message) -> RecordDict | Error:
        node = message.metadata.dst_node_id
        if node in self.refusing:
            return Error(code=3, reason="budget-exceeded: privacy budget spent")
        arrays = record_to_arrays(next(iter(message.content.array_records.values())))
        update = {"w": arrays["w"] * 0 + float(node)}
        return content(
            arrays={"arrays": update},
            metrics={"metrics": {"num-examples": 10 * node, "train-loss": 0.5}},
        )

    def evaluate(self, message: Message) -> RecordDict:
        node = message.metadata.dst_node_id
        return content(metrics={"metrics": {"num-examples": 10 * node, "auc": 0.6}})


STUDY = StudyConfig(name="train", training=TrainingSettings(rounds=2))


@pytest.fixture(autouse=True)
def tiny_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train_phase, "initial_arrays", lambda run: dict(START))


def test_the_federated_model_and_local_baselines_are_trained_and_saved(
    tmp_path: Path,
) -> None:
    sites = _TrainingSites()
    grid = ScriptedGrid({"train": sites.train, "evaluate": sites.evaluate}, SITES)
    run = study_run(tmp_path, grid, SITES, replace(STUDY, baselines=("local",)))

    run_train(run)

    assert list(run.models) == ["federated", "local-A", "local-B"]
    # FedAvg weighs by scans: (1 * 10 + 2 * 20) / 30.
    np.testing.assert_allclose(run.models["federated"]["w"], 5 / 3, rtol=1e-6)
    np.testing.assert_allclose(run.models["local-B"]["w"], 2.0)
    assert 3 not in grid.sent_to("train")
    first = grid.sent[0]
    assert config_of(first)["model"] == "federated"
    assert config_of(first)["rounds"] == 2
    saved = np.load(run.run_dir / "models" / "local-A.npz")
    np.testing.assert_allclose(saved["w"], 1.0)
    rounds = json.loads((run.run_dir / "rounds.json").read_text())
    federated = [r for r in rounds if r["model"] == "federated"]
    # Sites answer in any order; the recorder keeps the order of arrival.
    assert sorted((r["round"], r["kind"], r["site"]) for r in federated[:2]) == [
        (1, "train", "A"),
        (1, "train", "B"),
    ]
    assert federated[-1]["auc"] == 0.6 and federated[-1]["round"] == 2
    assert run.progress == {}
    assert not (run.run_dir / "privacy.json").exists()


def test_an_exhausted_budget_stops_the_study_when_it_says_so(tmp_path: Path) -> None:
    sites = _TrainingSites(refusing=(2,))
    grid = ScriptedGrid({"train": sites.train, "evaluate": sites.evaluate}, SITES)
    study = replace(STUDY, dp=DpSettings(on_budget_exhausted="stop"))
    run = study_run(tmp_path, grid, SITES, study)

    with pytest.raises(StudyError, match="privacy budget exhausted at B"):
        run_train(run)

    assert run.results["budget-refusals"][0] == {
        "site": "B",
        "model": "federated",
        "round": 1,
    }


def test_synthetic_training_without_a_pool_is_refused(tmp_path: Path) -> None:
    sites = _TrainingSites()
    grid = ScriptedGrid({"train": sites.train, "evaluate": sites.evaluate}, SITES)
    study = replace(
        STUDY,
        synthetic_training=SyntheticTrainingSettings(sites=("A",), ratios=(1.0,)),
    )
    run = study_run(tmp_path, grid, SITES, study)

    with pytest.raises(StudyError, match="needs a synthetic pool"):
        run_train(run)
