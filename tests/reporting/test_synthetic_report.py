import csv
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from fedbone.generative.audit.similarity import HISTOGRAM_EDGES
from fedbone.generative.fidelity.umap_view import UmapView
from fedbone.reporting import (
    StudyReport,
    compact_synthesis,
    format_summary,
    study_ratio_sweep,
    write_study_report,
)
from fedbone.reporting.synthetic_plots import umap_view_from_record
from fedbone.validation.histograms import score_histograms
from fedbone.validation.pooled_roc import PooledROC, pooled_roc

SYNTHETIC_MODELS: dict[str, tuple[str, float | None]] = {
    "local-B-syn1": ("B", 1.0),
    "local-B-syn5": ("B", 5.0),
    "local-B-synonly": ("B", None),
}
MODELS = ["federated", "local-B", *SYNTHETIC_MODELS]


def _roc(seed: int) -> PooledROC:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 200)
    scores = np.clip(0.4 * labels + rng.normal(0.3, 0.2, 200), 0, 1)
    return pooled_roc([score_histograms(labels, scores)])


def _site_row(site: str, model: str, auc: float) -> dict[str, Any]:
    return {
        "site": site,
        "model": model,
        "n": 40,
        "n-pos": 8,
        "n-neg": 32,
        "auc": auc,
        "auc-low": auc - 0.1,
        "auc-high": auc + 0.05,
        "sensitivity": 0.75,
        "sensitivity-low": 0.5,
        "sensitivity-high": 0.9,
        "specificity": 0.8,
        "specificity-low": 0.7,
        "specificity-high": 0.9,
    }


def _auc(site: str, model: str) -> float:
    """A distinct AUC per (site, model), so the sweep table can be checked."""
    return 0.6 + 0.01 * MODELS.index(model) + (0.1 if site == "D" else 0.0)


def _pair(a: str, b: str) -> dict[str, Any]:
    test = SimpleNamespace(difference=0.02, se=0.01, z=2.0, p_value=0.0455)
    return {"model_a": a, "model_b": b, "test": test}


def _umap_record() -> dict[str, Any]:
    view = UmapView(
        grid_real=np.arange(16).reshape(4, 4),
        grid_synthetic=np.ones((4, 4), dtype=np.int64),
        extent=(-1.0, 1.0, -2.0, 2.0),
        min_cell=5,
        n_real=120,
        n_synthetic=16,
    )
    return view.to_record()


def _generative_report() -> StudyReport:
    per_site = [
        _site_row(site, model, _auc(site, model))
        for site in ("B", "C", "D")
        for model in MODELS
    ]
    audit = {
        "n-generated": 40,
        "n-curated-out": 6,
        "n-audited": 34,
        "n-blocked": 2,
        "n-released": 32,
        "threshold-mse": 1.5e-3,
        "closest-pair-mse": 2.5e-3,
        "membership-auc": 0.51,
        "nearest-mse-histogram": [0, 1, 3, 10, 20, 0],
        "nearest-mse-histogram-edges": list(HISTOGRAM_EDGES),
        "passed": 1,
    }
    return StudyReport(
        title="generative study",
        config={"task": "bm", "training": {"rounds": 1}, "model": {}},
        census=[
            {"site": "B", "role": "train", "counts": {}},
            {"site": "C", "role": "validate-only", "counts": {}},
            {"site": "D", "role": "validate-only", "counts": {}},
        ],
        per_site=per_site,
        pooled={m: _roc(i) for i, m in enumerate(MODELS)},
        pooled_pairs=[_pair("local-B-syn5", "local-B")],
        pooled_external={m: _roc(10 + i) for i, m in enumerate(MODELS)},
        pooled_pairs_external=[_pair("local-B-syn5", "local-B")],
        gan={
            "mode": "local",
            "sites": {
                "B": {
                    "metrics": {
                        "best-fd": 12.5,
                        "best-step": 400,
                        "fd-step-200": 20.0,
                        "fd-step-400": 12.5,
                    },
                    "provenance": {"checkpoint-sha256": "ab" * 32, "encoder": "site"},
                }
            },
        },
        synthesis={
            "audits": {"B": audit},
            "pool-size": 30,
            "batches": [
                {
                    "site": "B",
                    "n-received": 32,
                    "n-added": 30,
                    "n-exact-duplicates": 1,
                    "n-near-duplicates": 1,
                    "audit": audit,
                }
            ],
            "pool-sha256": "cd" * 32,
            "deliveries": {"B": 30},
        },
        umap={"B": _umap_record()},
        synthetic_models=SYNTHETIC_MODELS,
    )


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_ratio_sweep_holds_external_sites_and_pooled_external_in_ratio_order() -> None:
    report = _generative_report()

    rows = study_ratio_sweep(report)

    models = ["local-B", "local-B-syn1", "local-B-syn5", "local-B-synonly"]
    assert [(r["model"], r["scope"]) for r in rows] == [
        (m, scope) for m in models for scope in ("C", "D", "pooled-external")
    ]
    assert [r["kind"] for r in rows[::3]] == [
        "real-only",
        "mixed",
        "mixed",
        "synthetic-only",
    ]
    assert [r["ratio"] for r in rows[::3]] == [0.0, 1.0, 5.0, None]
    d_syn5 = rows[7]
    assert d_syn5["auc"] == pytest.approx(_auc("D", "local-B-syn5"))
    assert (d_syn5["low"], d_syn5["high"], d_syn5["n"]) == pytest.approx(
        (d_syn5["auc"] - 0.1, d_syn5["auc"] + 0.05, 40)
    )
    pooled = report.pooled_external["local-B-syn5"]
    assert (rows[8]["auc"], rows[8]["low"], rows[8]["high"], rows[8]["n"]) == (
        pooled.auc,
        pooled.auc_ci.low,
        pooled.auc_ci.high,
        pooled.n_positive + pooled.n_negative,
    )


def test_report_writes_generative_tables_figures_and_sections(tmp_path: Path) -> None:
    report = _generative_report()

    page = write_study_report(report, tmp_path).read_text()

    for name in (
        "gan.csv",
        "gan_fd.png",
        "audit.csv",
        "audit_nearest_mse.png",
        "umap_B.png",
        "ratio_sweep.csv",
        "ratio_sweep.png",
    ):
        assert (tmp_path / name).is_file(), name
    for heading in (
        "Generative models",
        "Synthetic images: curation and privacy audit",
        "Real vs synthetic (UMAP at the site)",
        "Training with synthetic images (ratio sweep)",
    ):
        assert f"<h2>{heading}</h2>" in page
    assert "about 0.5 means no detectable membership leakage" in page
    assert "abababababab" in page and "ab" * 13 not in page  # sha256 first 12
    sweep = _read_csv(tmp_path / "ratio_sweep.csv")
    assert len(sweep) == 12
    assert float(sweep[0]["auc"]) == pytest.approx(_auc("C", "local-B"))
    audit = _read_csv(tmp_path / "audit.csv")
    assert (audit[0]["generated"], audit[0]["released"]) == ("40", "32")


def test_pooled_and_comparison_tables_carry_the_external_scope(
    tmp_path: Path,
) -> None:
    report = _generative_report()

    write_study_report(report, tmp_path)

    pooled = _read_csv(tmp_path / "pooled.csv")
    assert [r["scope"] for r in pooled] == ["pooled"] * 5 + ["external"] * 5
    external = next(r for r in pooled if r["scope"] == "external")
    assert float(external["auc"]) == pytest.approx(
        report.pooled_external["federated"].auc
    )
    pairs = _read_csv(tmp_path / "comparisons.csv")
    assert {(r["scope"], r["model_a"], r["model_b"]) for r in pairs} == {
        ("pooled", "local-B-syn5", "local-B"),
        ("external", "local-B-syn5", "local-B"),
    }


def test_summary_has_an_external_block_with_its_delong_lines() -> None:
    report = _generative_report()

    summary = format_summary(report)

    overall, external = summary.split("External (validation-only sites)")
    assert "DeLong local-B-syn5 vs local-B" in overall
    assert "DeLong local-B-syn5 vs local-B" in external
    assert f"{report.pooled_external['local-B-synonly'].auc:.3f}" in external


def test_generative_sections_are_absent_without_their_data(tmp_path: Path) -> None:
    report = StudyReport(
        title="classifier only",
        config={"task": "bm"},
        per_site=[_site_row("A", "federated", 0.8)],
        pooled={"federated": _roc(0)},
    )

    page = write_study_report(report, tmp_path).read_text()

    assert "Generative models" not in page
    assert "privacy audit" not in page
    assert "UMAP" not in page
    assert "ratio sweep" not in page
    assert "External" not in format_summary(report)
    assert not (tmp_path / "ratio_sweep.csv").exists()
    assert not (tmp_path / "gan.csv").exists()


def test_compact_synthesis_drops_repeated_audits_and_histogram_edges() -> None:
    synthesis = _generative_report().synthesis

    compact = compact_synthesis(synthesis)

    assert "audit" not in compact["batches"][0]
    assert compact["batches"][0]["n-added"] == 30
    assert "nearest-mse-histogram-edges" not in compact["audits"]["B"]
    assert compact["audits"]["B"]["membership-auc"] == 0.51
    assert "audit" in synthesis["batches"][0]  # the input is left as it was


def test_umap_view_is_rebuilt_from_its_record() -> None:
    record = _umap_record()

    view = umap_view_from_record(record)

    assert view.to_record() == record
