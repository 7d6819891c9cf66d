"""Phase ``synthesize`` on hand-made releases: pooled, saved, redistributed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Error
from phase_grid import ScriptedGrid, config_of, study_run
from synthetic_sites import GeneratorSites

from fedbone.generative.pool_assembly import SynthesisResults
from server.phases.synthesize import run_synthesize
from server.study_run import StudyError

SITES = {1: ("A", "train"), 2: ("B", "train"), 3: ("X", "validate-only")}
LOCAL_GENERATORS = {
    "A": {"checkpoint-sha256": "ckpt-1"},
    "B": {"checkpoint-sha256": "ckpt-2"},
}


def test_released_images_are_pooled_saved_and_sent_to_the_train_sites(
    tmp_path: Path,
) -> None:
    grid = ScriptedGrid(GeneratorSites().answers())
    run = study_run(tmp_path, grid, SITES, generators=dict(LOCAL_GENERATORS))

    run_synthesize(run)

    assert (
        grid.kinds()
        == ["query.synthesize"] * 2
        + ["query.receive_synthetic"] * 2
        + ["query.umap"] * 2
    )
    assert grid.sent_to("query.receive_synthetic") == [1, 2]
    assert "generator" not in grid.sent[0].content.array_records
    assert run.pool is not None and len(run.pool) == 6
    assert isinstance(run.synthesis_results, SynthesisResults)
    written = json.loads((run.run_dir / "synthesis.json").read_text())
    assert written["pool-size"] == 6
    assert written["deliveries"] == {"A": 6, "B": 6}
    assert written["pool-sha256"] == run.pool.digest()
    assert [b["source"] for b in written["batches"]] == [
        "A/round-0/ckpt-1",
        "B/round-0/ckpt-2",
    ]
    assert written["audits"]["A"]["histogram"] == [1, 2]
    assert "cross-audits" not in written
    assert len(list((run.run_dir / "synthetic" / "dicom").glob("*.dcm"))) == 6
    assert run.results["umap"]["B"] == {"density": [1.0, 2.0], "n": 3}


def test_a_pool_stored_differently_at_a_site_is_not_counted_as_delivered(
    tmp_path: Path,
) -> None:
    sites = GeneratorSites()
    answers = sites.answers()
    answers["query.receive_synthetic"] = lambda m: (
        Error(code=3, reason="disk full")
        if m.metadata.dst_node_id == 2
        else sites.receive_synthetic(m)
    )
    run = study_run(
        tmp_path, ScriptedGrid(answers), SITES, generators=dict(LOCAL_GENERATORS)
    )

    run_synthesize(run)

    assert run.synthesis_results is not None
    assert run.synthesis_results.deliveries == {"A": 6}


def test_a_federated_generator_is_sent_and_its_releases_cross_audited(
    tmp_path: Path,
) -> None:
    grid = ScriptedGrid(GeneratorSites(blocked={(2, 1): [0]}).answers())
    generators = {
        site: {"checkpoint-sha256": "fed-digest", "round": "2"} for site in "AB"
    }
    run = study_run(
        tmp_path,
        grid,
        SITES,
        generators=generators,
        federated_generator=(2, {"w": np.ones(3, np.float32)}),
    )

    run_synthesize(run)

    request = grid.sent[0]
    assert config_of(request)["generator-round"] == 2
    assert "generator" in request.content.array_records
    assert grid.kinds().count("query.cross_audit") == 2
    written = json.loads((run.run_dir / "synthesis.json").read_text())
    assert written["pool-size"] == 5
    assert written["audits"]["A"]["n-blocked-cross-audit"] == 1
    assert written["audits"]["B"]["n-blocked-cross-audit"] == 0
    assert written["cross-audits"] == {
        "B": {"A": {"passed": 2, "n-images": 3}},
        "A": {"B": {"passed": 3, "n-images": 3}},
    }
    assert {b["source"] for b in written["batches"]} == {
        "A/round-2/fed-digest",
        "B/round-2/fed-digest",
    }


def test_no_released_image_stops_the_study_after_writing_the_audits(
    tmp_path: Path,
) -> None:
    grid = ScriptedGrid(
        GeneratorSites(blocked={(2, 1): [0, 1, 2]}, failing=(1,)).answers()
    )
    generators = {site: {"checkpoint-sha256": "fed", "round": "1"} for site in "AB"}
    run = study_run(
        tmp_path,
        grid,
        SITES,
        generators=generators,
        federated_generator=(1, {"w": np.ones(3, np.float32)}),
    )

    with pytest.raises(StudyError, match="no site released any synthetic image"):
        run_synthesize(run)

    written = json.loads((run.run_dir / "synthesis.json").read_text())
    assert written["pool-size"] == 0
    assert written["cross-audits"]["A"] == {"B": {"failed": 1}}
    assert run.pool is None


def test_synthesize_needs_the_gan_phase_first(tmp_path: Path) -> None:
    run = study_run(tmp_path, ScriptedGrid({}), SITES)

    with pytest.raises(StudyError, match="put phase gan before it"):
        run_synthesize(run)
