"""A federated GAN through Flower's simulation runtime: A and B average G and D.

Both sites train the global GAN each round and score it on their held-out
scans; the centre keeps the best round, sends that generator back, and each
site's releases are cross-audited by the other before anything is pooled.
"""

import json
from pathlib import Path

import pytest
from tiny_study import TINY_GAN, write_tiny_study

from fedbone.config.study import load_study_config
from fedbone.federation.egress.guard import EgressLog
from server.simulation import simulate_study

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("federated-gan")
    path = write_tiny_study(
        root,
        "tiny-fedgan",
        ["census", "gan", "synthesize", "report"],
        sites=["A", "B"],
        min_scans=40,
        gan={
            "mode": "federated",
            "sites": ["A", "B"],
            "steps": 4,
            "rounds": 2,
            **TINY_GAN,
        },
        synthesis={"n_per_class": 6, "recipients": ["B"]},
    )

    outcome = simulate_study(load_study_config(path))

    return outcome.run_dir, root / "sites"


def test_the_best_round_is_selected_and_shared_by_both_sites(
    finished: tuple[Path, Path],
) -> None:
    run_dir, _ = finished

    gan = json.loads((run_dir / "gan.json").read_text())
    rounds = json.loads((run_dir / "rounds.json").read_text())

    assert gan["mode"] == "federated" and gan["selected-round"] in (1, 2)
    assert set(gan["relative-fd-by-round"]) == {"1", "2"}
    digests = {s["provenance"]["checkpoint-sha256"] for s in gan["sites"].values()}
    assert digests == {gan["generator-sha256"]}
    evaluated = {(r["site"], r["round"]) for r in rounds if r["kind"] == "evaluate"}
    assert evaluated == {("A", 1), ("A", 2), ("B", 1), ("B", 2)}
    assert Path(gan["generator-file"]).is_file()


def test_releases_were_cross_audited_before_pooling(
    finished: tuple[Path, Path],
) -> None:
    run_dir, _ = finished

    synthesis = json.loads((run_dir / "synthesis.json").read_text())

    assert set(synthesis["cross-audits"]) <= {"A", "B"}
    for auditor, audited in synthesis["cross-audits"].items():
        assert auditor not in audited
    for audit in synthesis["audits"].values():
        assert audit["n-blocked-cross-audit"] <= audit["n-released"]
    kept = sum(
        a["n-released"] - a["n-blocked-cross-audit"]
        for a in synthesis["audits"].values()
    )
    # Each site draws its own latents from the shared generator: the pool
    # holds both sites' images, not one set twice.
    assert 0 < synthesis["pool-size"] <= kept
    assert {b["site"] for b in synthesis["batches"]} == {"A", "B"}


def test_only_weights_figures_verdicts_and_audited_images_left(
    finished: tuple[Path, Path],
) -> None:
    _, sites = finished

    logs = {
        site: EgressLog(sites / f"site-{site}" / "egress-log.jsonl").entries()
        for site in "AB"
    }

    for site, entries in logs.items():
        assert all(e["verdict"] == "passed" for e in entries), site
        kinds = {e["kind"] for e in entries}
        assert {"train", "evaluate", "query.synthesize"} <= kinds
