"""Phase ``gan`` on hand-made replies: local selections and the federated GAN."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Error, Message, RecordDict
from phase_grid import ScriptedGrid, config_of, content, study_run

from fedbone.config.study import StudyConfig
from fedbone.config.synthetic import GanSettings
from fedbone.generative.arrays import arrays_digest
from fedbone.generative.gan_results import GanResults
from server.phases import gan as gan_phase
from server.phases.gan import FEDERATED_GAN, run_gan
from server.study_run import StudyError

TRAIN_SITES = {1: ("A", "train"), 2: ("B", "train"), 3: ("X", "validate-only")}


def _local_answer(message: Message) -> RecordDict | Error:
    node = message.metadata.dst_node_id
    if node == 2:
        return Error(code=3, reason="SiteTaskError")
    return content(
        metrics={"metrics": {"best-fd": 1.5, "best-step": 400.0}},
        configs={"provenance": {"checkpoint-sha256": "abc123", "step": 400}},
    )


def test_local_gans_record_each_site_selection(tmp_path: Path) -> None:
    grid = ScriptedGrid({"query.gan_train": _local_answer})
    run = study_run(tmp_path, grid, TRAIN_SITES)

    run_gan(run)

    assert grid.sent_to("query.gan_train") == [1, 2]
    assert config_of(grid.sent[0])["phase"] == "gan"
    assert run.generators == {"A": {"checkpoint-sha256": "abc123", "step": "400"}}
    assert isinstance(run.gan_results, GanResults)
    assert json.loads((run.run_dir / "gan.json").read_text()) == {
        "mode": "local",
        "sites": {
            "A": {
                "metrics": {"best-fd": 1.5, "best-step": 400.0},
                "provenance": {"checkpoint-sha256": "abc123", "step": "400"},
            }
        },
    }
    assert run.results["site-errors"][0]["site"] == "B"


def test_no_site_training_a_gan_stops_the_study(tmp_path: Path) -> None:
    grid = ScriptedGrid({"query.gan_train": lambda m: Error(code=3, reason="down")})
    run = study_run(tmp_path, grid, TRAIN_SITES)

    with pytest.raises(StudyError, match="no site trained a GAN"):
        run_gan(run)

    assert json.loads((run.run_dir / "gan.json").read_text())["sites"] == {}


class _FederatedSites:
    """GAN sites: fixed updates; FD per round as scripted per site."""

    def __init__(self, fd: dict[int, list[float]]) -> None:
        self.fd = fd
        self.evaluated = {node: 0 for node in fd}

    def train(self, message: Message) -> RecordDict:
        node = message.metadata.dst_node_id
        update = {"w": np.full(2, float(2 * node - 1), np.float32)}
        return content(arrays={"arrays": update}, metrics={"m": {"num-examples": 5}})

    def evaluate(self, message: Message) -> RecordDict:
        node = message.metadata.dst_node_id
        fd = self.fd[node][self.evaluated[node]]
        self.evaluated[node] += 1
        return content(metrics={"m": {"num-examples": 5, "fd": fd}})


def test_the_federated_gan_selects_the_round_with_the_lowest_relative_fd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A's FDs are 10x B's; both are best in round 2.
    sites = _FederatedSites({1: [20.0, 10.0], 2: [2.0, 1.0]})
    grid = ScriptedGrid(
        {"train": sites.train, "evaluate": sites.evaluate}, nodes=[1, 2, 3]
    )
    study = StudyConfig(
        name="fed-gan", gan=GanSettings(mode="federated", rounds=2, steps=10)
    )
    run = study_run(tmp_path, grid, TRAIN_SITES, study)
    start = {"w": np.zeros(2, np.float32)}
    monkeypatch.setattr(gan_phase, "_initial_arrays", lambda run, nodes: start)

    run_gan(run)

    assert (
        grid.kinds()
        == ["train"] * 2 + ["evaluate"] * 2 + ["train"] * 2 + ["evaluate"] * 2
    )
    assert set(grid.sent_to("train")) == {1, 2}
    assert run.federated_generator is not None
    best, arrays = run.federated_generator
    np.testing.assert_allclose(arrays["w"], 2.0)  # (1 + 3) / 2, equal weights
    written = json.loads((run.run_dir / "gan.json").read_text())
    assert best == written["selected-round"] == 2
    assert written["generator-sha256"] == arrays_digest(arrays)
    assert written["relative-fd-by-round"] == {
        "1": pytest.approx(4 / 3),
        "2": pytest.approx(2 / 3),
    }
    assert written["sites"]["B"]["metrics"] == {
        "best-fd": 1.0,
        "best-step": 10.0,
        "fd-step-5": 2.0,
        "fd-step-10": 1.0,
    }
    assert run.generators["A"] == {
        "checkpoint-sha256": arrays_digest(arrays),
        "round": "2",
    }
    rounds = json.loads((run.run_dir / "rounds.json").read_text())
    assert {r["model"] for r in rounds} == {FEDERATED_GAN}
