"""A whole enhancement study through Flower's simulation runtime.

Sites A and B train the classifier, then every enhancer on pairs thinned from
their own standard scans; C only evaluates. Every phantom patient also has a
real 2x acquisition, so the "2x-real" level is evaluated. Only weights and
sums may leave the sites.
"""

import json
from pathlib import Path

import pytest
from tiny_study import write_tiny_study

from fedbone.config.study import load_study_config
from fedbone.enhance.model_file import load_enhancer
from fedbone.federation.egress.guard import EgressLog
from server.simulation import simulate_study

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TINY_ENHANCE = {
    "methods": ["gaussian", "dncnn", "ddsrcnn", "rrdbnet"],
    "levels": ["2x", "3x"],
    "rounds": 1,
    "steps_per_epoch": 2,
    "batch_size": 2,
    "patch_height": 32,
    "patch_width": 16,
    "width": 8,
    "rrdb_blocks": 1,
    "dncnn_depth": 3,
    "ddsrcnn_levels": 1,
    "encoder_epochs": 1,
    "examples": 1,
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("enhance")
    path = write_tiny_study(
        root,
        "tiny-enhance",
        ["census", "train", "enhance", "report"],
        sites=["A", "B", "C"],
        # C (external, test only) then holds enough positives for a level
        min_scans=60,
        enhance=TINY_ENHANCE,
        validation={"bins": 1000, "n_bootstrap": 0},
        simulation={"fast_speeds": [2]},
    )

    outcome = simulate_study(load_study_config(path))

    return outcome.run_dir, root / "sites"


def test_every_method_and_level_is_evaluated_and_pooled(
    finished: tuple[Path, Path],
) -> None:
    run_dir, _ = finished

    results = json.loads((run_dir / "enhance" / "enhance.json").read_text())

    sets = {row["image_set"] for row in results["quality"]}
    for level in ("2x", "3x", "2x-real"):
        for method in ("fast", "gaussian", "dncnn", "ddsrcnn", "rrdbnet"):
            assert f"{method}-{level}" in sets
    for row in results["quality"]:
        assert row["n"] > 0 and row["psnr"] > 0 and 0 < row["ssim"] <= 1
    assert {row["image_set"] for row in results["equivalence"]} <= sets
    assert results["equivalence"], "no diagnostic-equivalence test was run"
    assert all(isinstance(r["non_inferior"], bool) for r in results["equivalence"])
    assert results["agreement"]


def test_the_report_has_the_tables_and_the_centres_phantom_examples(
    finished: tuple[Path, Path],
) -> None:
    run_dir, _ = finished

    page = (run_dir / "report.html").read_text()

    assert "Fast-scan enhancement: image quality" in page
    assert "diagnostic equivalence" in page
    assert (run_dir / "enhance" / "examples.png").is_file()
    assert (run_dir / "enhance_quality.csv").is_file()


def test_each_site_keeps_its_enhancers_examples_and_scores(
    finished: tuple[Path, Path],
) -> None:
    run_dir, sites = finished

    folders = {
        site: sites / f"site-{site}" / "work" / "enhance" / run_dir.name
        for site in ("A", "B", "C")
    }

    for folder in folders.values():
        model = load_enhancer(folder / "rrdbnet.enhancer.npz")
        assert model.spec.method == "rrdbnet"
        assert (folder / "scores.npz").is_file()
    # C's external test split is large enough to be evaluated (A's and B's
    # hold a small class: they evaluate nothing and show no examples)
    assert list((folders["C"] / "examples").glob("*.png"))


def test_only_weights_and_sums_left_the_sites(finished: tuple[Path, Path]) -> None:
    _, sites = finished

    for site in ("A", "B", "C"):
        entries = EgressLog(sites / f"site-{site}" / "egress-log.jsonl").entries()
        kinds = {e["kind"] for e in entries if e["phase"] == "enhance"}
        assert "query.enhance_evaluate" in kinds
        assert all(e["verdict"] == "passed" for e in entries)
        if site in ("A", "B"):
            assert {"train", "evaluate"} <= kinds
