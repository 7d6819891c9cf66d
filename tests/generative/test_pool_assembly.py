"""Assembling the synthetic pool from the sites' released batches."""

from __future__ import annotations

import numpy as np

from fedbone.generative.pool_assembly import (
    ReleasedBatch,
    SynthesisResults,
    assemble_pool,
)


def _batch(site: str, seed: int, count: int = 3) -> ReleasedBatch:
    rng = np.random.default_rng(seed)
    return ReleasedBatch(
        site=site,
        images=rng.random((count, 8, 4)).astype(np.float16),
        class_ids=np.arange(count, dtype=np.int64) % 4,
        provenance={"checkpoint-sha256": f"own-{site}", "spacing-mm": "1.0"},
        audit={"n-generated": 10},
    )


def test_local_releases_are_pooled_under_their_own_checkpoints() -> None:
    releases = [_batch("A", 1), _batch("B", 2)]
    duplicate = ReleasedBatch(
        "C",
        releases[0].images[:1],
        np.zeros(1, np.int64),
        {"checkpoint-sha256": "c", "spacing-mm": 2.5},
        {},
    )

    assembly = assemble_pool([*releases, duplicate], {"A": {}, "B": {}, "C": {}})

    assert len(assembly.pool) == 6
    assert assembly.spacing_mm == 2.5
    assert [b["source"] for b in assembly.pool.batches] == [
        "A/round-0/own-A",
        "B/round-0/own-B",
        "C/round-0/c",
    ]
    assert assembly.pool.batches[2]["n-exact-duplicates"] == 1
    assert assembly.audits["A"] == {"n-generated": 10}


def test_cross_audited_releases_keep_only_passed_images_under_the_shared_digest() -> (
    None
):
    releases = [_batch("A", 1), _batch("B", 2)]
    generators = {site: {"checkpoint-sha256": "fed", "round": "3"} for site in "AB"}
    keep = {"A": np.array([True, False, True]), "B": np.zeros(3, dtype=bool)}

    assembly = assemble_pool(releases, generators, keep)

    assert len(assembly.pool) == 2
    assert [b["source"] for b in assembly.pool.batches] == ["A/round-3/fed"]
    assert assembly.audits["A"]["n-blocked-cross-audit"] == 1
    assert assembly.audits["B"]["n-blocked-cross-audit"] == 3
    assert "n-blocked-cross-audit" not in releases[0].audit


def test_synthesis_results_write_only_what_the_phase_reached() -> None:
    results = SynthesisResults(audits={"A": {}}, pool_size=0)

    before = results.to_json()
    results.cross_audits = {"B": {"A": {"failed": 1}}}
    results.batches, results.pool_sha256, results.deliveries = [], "d", {"A": 1}

    assert before == {"audits": {"A": {}}, "pool-size": 0}
    assert list(results.to_json()) == [
        "audits",
        "pool-size",
        "cross-audits",
        "batches",
        "pool-sha256",
        "deliveries",
    ]
