"""The cross-audit step of phase ``synthesize`` on hand-made verdicts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from phase_grid import ScriptedGrid, config_of, study_run
from synthetic_sites import GeneratorSites, released_images

from fedbone.generative.pool_assembly import ReleasedBatch
from server.phases.cross_audit import cross_audit

SITES = {1: ("A", "train"), 2: ("B", "train"), 3: ("C", "train")}


def _batch(site: str, node: int, count: int = 3) -> ReleasedBatch:
    return ReleasedBatch(
        site=site,
        images=released_images(node, count),
        class_ids=np.zeros(count, dtype=np.int64),
        provenance={},
        audit={},
    )


def test_every_other_site_audits_each_release_and_all_must_pass(
    tmp_path: Path,
) -> None:
    sites = GeneratorSites(blocked={(2, 1): [0], (3, 1): [2]})
    sites.site_of[3] = "C"
    grid = ScriptedGrid(sites.answers())
    run = study_run(tmp_path, grid, SITES)

    outcome = cross_audit(run, [1, 2, 3], [_batch("A", 1), _batch("B", 2)])

    assert grid.sent_to("query.cross_audit") == [2, 3, 1, 3]
    assert config_of(grid.sent[0])["released-by"] == "A"
    assert "release-signature" in config_of(grid.sent[0])
    assert outcome.keep["A"].tolist() == [False, True, False]
    assert outcome.keep["B"].tolist() == [True, True, True]
    # only verdict bits come back: the summary is their count
    assert outcome.audits["C"] == {
        "A": {"passed": 2, "n-images": 3},
        "B": {"passed": 3, "n-images": 3},
    }


def test_an_auditor_that_cannot_answer_withholds_the_whole_release(
    tmp_path: Path,
) -> None:
    grid = ScriptedGrid(GeneratorSites(failing=(2,)).answers())
    run = study_run(tmp_path, grid, SITES)

    outcome = cross_audit(run, [1, 2], [_batch("A", 1), _batch("B", 2)])

    assert not outcome.keep["A"].any()
    assert outcome.keep["B"].all()
    assert outcome.audits["B"] == {"A": {"failed": 1}}
    assert run.results["site-errors"][0]["action"] == "cross_audit"


def test_an_empty_release_is_not_sent_for_audit(tmp_path: Path) -> None:
    grid = ScriptedGrid(GeneratorSites().answers())
    run = study_run(tmp_path, grid, SITES)

    outcome = cross_audit(run, [1, 2], [_batch("A", 1, count=0)])

    assert grid.sent == []
    assert outcome.keep["A"].shape == (0,)
