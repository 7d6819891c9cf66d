"""Phase ``report``: what earlier phases left in the run becomes the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from phase_grid import ScriptedGrid, study_run

from fedbone.generative.gan_results import GanResults, SiteGanResult
from fedbone.generative.pool_assembly import SynthesisResults
from fedbone.validation.histograms import score_histograms
from fedbone.validation.pooled_roc import PooledROC, pooled_roc
from fedbone.validation.study_results import ValidationResults, private_site_row
from server.phases.report import build_report, run_report
from server.study_run import StudyRun

SITES = {1: ("A", "train"), 2: ("X", "validate-only")}


def _finished_run(tmp_path: Path) -> tuple[StudyRun, PooledROC]:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 50)
    histograms = score_histograms(labels, rng.random(50), bins=1000)
    roc = pooled_roc([histograms])
    run = study_run(tmp_path, ScriptedGrid({}), SITES)
    run.validation_results = ValidationResults(
        per_site=[private_site_row("A", "federated", histograms, 0.5)],
        pooled={"federated": roc},
        pooled_external={"federated": roc},
    )
    run.gan_results = GanResults(
        mode="local",
        sites={"A": SiteGanResult({"best-fd": 1.0}, {"checkpoint-sha256": "c"})},
    )
    run.synthesis_results = SynthesisResults(
        audits={"A": {"n-blocked": 1, "nearest-mse-histogram-edges": [0.0, 1.0]}},
        pool_size=0,
    )
    run.results["site-errors"] = [{"site": "X", "action": "umap", "reason": "down"}]
    run.results["skipped-models"] = [{"model": "local-A-syn1", "site": "A"}]
    run.timings["train"] = 1.5
    return run, roc


def test_the_report_gathers_every_phase_result(tmp_path: Path) -> None:
    run, roc = _finished_run(tmp_path)

    report = build_report(run)

    assert report.census[1] == {"site": "X", "role": "validate-only", "counts": {}}
    assert report.pooled == {"federated": roc}
    assert report.gan == {
        "mode": "local",
        "sites": {
            "A": {"metrics": {"best-fd": 1.0}, "provenance": {"checkpoint-sha256": "c"}}
        },
    }
    assert report.synthesis["pool-size"] == 0
    assert report.site_errors == run.results["site-errors"]


def test_results_json_holds_the_pooled_figures_and_the_summary_is_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, roc = _finished_run(tmp_path)

    run_report(run)

    results = json.loads((run.run_dir / "results.json").read_text())
    assert results["pooled"]["federated"] == {
        "auc": pytest.approx(roc.auc),
        "auc_low": pytest.approx(roc.auc_ci.low),
        "auc_high": pytest.approx(roc.auc_ci.high),
        "n_positive": roc.n_positive,
        "n_negative": roc.n_negative,
    }
    assert [(r["site"], r["n"]) for r in results["per_site"]] == [("A", 50)]
    assert results["synthesis"]["audits"] == {"A": {"n-blocked": 1}}
    assert results["skipped_models"][0]["model"] == "local-A-syn1"
    assert results["timings"] == {"train": 1.5}
    assert (run.run_dir / "report.html").is_file()
    assert "federated" in capsys.readouterr().out


def test_a_run_without_results_still_reports(tmp_path: Path) -> None:
    run = study_run(tmp_path, ScriptedGrid({}), SITES)

    report = build_report(run)

    assert report.pooled == {} and report.gan == {} and report.synthesis == {}
