"""Phase ``census`` on hand-made census replies."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest
from flwr.app import Error, Message, RecordDict
from flwr.serverapp import Grid
from phase_grid import ScriptedGrid, config_of, content

from fedbone.config.study import StudyConfig, TrainingSettings
from server.phases.census import run_census
from server.study_run import StudyError, StudyRun

SITES = {1: ("B", "train"), 2: ("A", "train"), 3: ("X", "validate-only")}


def _census_answer(
    sites: dict[int, tuple[str, str]], fingerprints: dict[int, str] | None = None
) -> Callable[[Message], RecordDict]:
    def answer(message: Message) -> RecordDict:
        node = message.metadata.dst_node_id
        site, role = sites[node]
        return content(
            configs={
                "site": {
                    "site-id": site,
                    "role": role,
                    "spec-fingerprint": (fingerprints or {}).get(node, "spec-1"),
                    "cache-hash": f"cache-{site}",
                    "config-sha256": f"sha-{site}",
                    "canvas": "512x256",
                }
            },
            metrics={"census": {"n-train": 10 * node, "n-val": 2, "n-test": 3}},
        )

    return answer


def _run(
    tmp_path: Path, grid: ScriptedGrid, study: StudyConfig | None = None
) -> StudyRun:
    return StudyRun(
        study=study or StudyConfig(name="census"),
        grid=cast(Grid, grid),
        run_dir=tmp_path,
        sim_site_configs=[f"site-{n}.yaml" for n in grid.nodes],
    )


def test_the_census_records_every_site_and_writes_census_json(tmp_path: Path) -> None:
    grid = ScriptedGrid({"query.census": _census_answer(SITES)}, nodes=SITES)
    run = _run(tmp_path, grid)

    run_census(run)

    assert grid.sent_to("query.census") == [1, 2, 3]
    assert config_of(grid.sent[0])["phase"] == "census"
    assert run.sites[2].site_id == "A" and run.sites[2].counts["n-train"] == 20
    assert run.sites[3].role == "validate-only" and run.sites[3].canvas == "512x256"
    assert run.train_nodes == [2, 1]
    written = json.loads((tmp_path / "census.json").read_text())
    assert [row["site"] for row in written] == ["A", "B", "X"]
    assert written[0] == {
        "site": "A",
        "role": "train",
        "counts": {"n-train": 20, "n-val": 2, "n-test": 3},
        "spec-fingerprint": "spec-1",
        "cache-hash": "cache-A",
    }


def test_sites_preprocessing_differently_and_duplicate_ids_are_refused(
    tmp_path: Path,
) -> None:
    sites = {1: ("A", "train"), 2: ("A", "train")}
    grid = ScriptedGrid(
        {"query.census": _census_answer(sites, {2: "spec-2"})}, nodes=sites
    )
    run = _run(tmp_path, grid)

    with pytest.raises(StudyError) as raised:
        run_census(run)

    assert "several nodes claim site ids ['A']" in str(raised.value)
    assert "spec fingerprints" in str(raised.value)


def test_too_few_train_sites_for_the_study_is_refused(tmp_path: Path) -> None:
    sites = {1: ("A", "train"), 2: ("X", "validate-only")}
    grid = ScriptedGrid({"query.census": _census_answer(sites)}, nodes=sites)
    study = StudyConfig(name="census", training=TrainingSettings(min_train_sites=2))
    run = _run(tmp_path, grid, study)

    with pytest.raises(StudyError, match=r"1 train site\(s\) answered"):
        run_census(run)


def test_a_census_refusal_is_named_in_the_failure(tmp_path: Path) -> None:
    reason = (
        "site 'B' refused query.census of run 'census-1' (1 problem(s)); it "
        "answers only studies it approved:\n  - [study-not-approved] ..."
    )
    sites = {1: ("A", "train")}

    def answer(message: Message) -> RecordDict | Error:
        if message.metadata.dst_node_id == 2:
            return Error(code=6, reason=reason)
        return _census_answer(sites)(message)

    grid = ScriptedGrid({"query.census": answer}, nodes=[1, 2])
    study = StudyConfig(name="census", training=TrainingSettings(min_train_sites=2))
    run = _run(tmp_path, grid, study)

    with pytest.raises(StudyError) as raised:
        run_census(run)

    assert "1 train site(s) answered" in str(raised.value)
    assert "a site refused the census: site 'B' refused" in str(raised.value)
    assert "[study-not-approved]" in str(raised.value)
    assert run.results["site-errors"][0]["reason"] == reason


def test_every_census_request_names_the_study_to_approve(tmp_path: Path) -> None:
    grid = ScriptedGrid({"query.census": _census_answer(SITES)}, nodes=SITES)
    run = _run(tmp_path, grid)

    run_census(run)

    config = config_of(grid.sent[0])
    assert config["study-approval-sha256"] == run.study.approval_sha256()
