from pathlib import Path

import numpy as np

from fedbone.reporting import StudyReport, format_summary, write_study_report
from fedbone.validation.histograms import score_histograms
from fedbone.validation.pooled_roc import pooled_roc


def _site_row(site: str, model: str, auc: float) -> dict[str, float | str]:
    return {
        "site": site,
        "model": model,
        "n": 40,
        "n-pos": 8,
        "n-neg": 32,
        "auc": auc,
        "auc-low": auc - 0.1,
        "auc-high": min(auc + 0.1, 1.0),
        "sensitivity": 0.75,
        "sensitivity-low": 0.5,
        "sensitivity-high": 0.9,
        "specificity": 0.8,
        "specificity-low": 0.7,
        "specificity-high": 0.9,
    }


def test_report_writes_tables_figures_and_one_self_contained_page(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = np.clip(0.5 * labels + rng.normal(0.25, 0.2, 300), 0, 1)
    roc = pooled_roc([score_histograms(labels, scores)])
    report = StudyReport(
        title="test study",
        config={
            "task": "bm",
            "training": {"strategy": "fedavg", "rounds": 2},
            "model": {"architecture": "small-cnn", "norm": "batch"},
        },
        census=[
            {
                "site": "A",
                "role": "train",
                "counts": {"n-train": 30, "n-train-bm-pos": -1},
            }
        ],
        rounds=[
            {
                "model": "federated",
                "round": r,
                "kind": "train",
                "site": "A",
                "val-auc": 0.6 + 0.1 * r,
                "train-loss": 1 / r,
            }
            for r in (1, 2)
        ],
        per_site=[_site_row("A", "federated", 0.8)],
        pooled={"federated": roc},
        timings={"train": 1.5},
    )

    page = write_study_report(report, tmp_path)

    html = page.read_text()
    assert "data:image/png;base64," in html  # figures embedded
    assert "suppressed" in html  # small cells shown as suppressed, not as -1
    assert "0.800 (0.700-0.900)" in html
    for name in (
        "per_site.csv",
        "pooled.csv",
        "rounds.csv",
        "roc_pooled.png",
        "summary.txt",
    ):
        assert (tmp_path / name).is_file()
    assert f"{roc.auc:.3f}" in format_summary(report)
