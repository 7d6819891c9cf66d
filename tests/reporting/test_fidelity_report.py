"""The centre's fidelity table (synthetic next to real vs real) and pool grids."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from fedbone.classifier.synthetic_mix import SyntheticSet
from fedbone.reporting import StudyReport, write_study_report
from fedbone.reporting.fidelity_report import fidelity_rows, write_pool_grids
from fedbone.reporting.synthetic_report import write_synthetic_sections

HEADING = "Fidelity per class: synthetic vs held-out real, next to real vs real"


def _per_class(fd_synthetic: float, fd_real: float) -> dict[str, float]:
    metrics = {}
    for group in ("neg", "pos", "all"):
        for measure, synthetic, real in (
            ("fd", fd_synthetic, fd_real),
            ("kid", 0.02, 0.01),
            ("precision", 0.6, 0.8),
            ("recall", 0.5, 0.7),
        ):
            metrics[f"{measure}-synthetic-{group}"] = synthetic
            metrics[f"{measure}-real-{group}"] = real
    metrics["fd-real-pos"] = math.nan  # too few held-out positives
    return metrics


def _gan(**per_site: dict[str, float]) -> dict[str, Any]:
    return {
        "mode": "local",
        "sites": {
            site: {"metrics": {"best-fd": 1.0, **metrics}, "provenance": {}}
            for site, metrics in per_site.items()
        },
    }


def _pool() -> SyntheticSet:
    rng = np.random.default_rng(0)
    class_ids = np.array([0, 1, 0, 1, 0, 1, 0, 1, 2, 3], dtype=np.int64)
    sources = ["A/round-0/aaaa"] * 6 + ["B/round-0/bbbb"] * 4
    return SyntheticSet(
        images=rng.uniform(size=(10, 32, 16)).astype(np.float32),
        class_ids=class_ids,
        source=np.array(sources),
    )


def _write(
    out_dir: Path, gan: dict[str, Any], pool: SyntheticSet | None
) -> dict[str, Any]:
    sections = write_synthetic_sections(
        out_dir, gan=gan, synthesis={}, umap={}, sweep=[], pool=pool, task="bm"
    )
    return {section.heading: section for section in sections}


def test_rows_put_synthetic_next_to_real_per_site_and_class() -> None:
    # Prepare: site C ran before per-class figures existed
    gan = _gan(A=_per_class(3.0, 1.5), B=_per_class(2.0, 2.0), C={})

    # Execute
    rows = fidelity_rows(gan["sites"])

    # Assert
    assert [(r["site"], r["class"]) for r in rows] == [
        (site, group) for site in "AB" for group in ("negative", "positive", "all")
    ]
    assert rows[0]["FD synthetic"] == 3.0 and rows[0]["FD real"] == 1.5
    assert rows[0]["FD ratio"] == 2.0
    assert math.isnan(rows[1]["FD ratio"])  # no real-vs-real for positives
    assert rows[0]["precision real"] == 0.8


def test_the_report_section_holds_the_table_and_its_csv(tmp_path: Path) -> None:
    # Prepare
    gan = _gan(A=_per_class(3.0, 1.5))

    # Execute
    sections = _write(tmp_path, gan, pool=None)

    # Assert
    ((table, columns),) = sections[HEADING].tables
    assert columns[:5] == ("site", "class", "FD synthetic", "FD real", "FD ratio")
    assert table[1]["FD real"] == "n/a" and table[0]["FD ratio"] == "2"
    with (tmp_path / "fidelity.csv").open(newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 3


def test_a_run_without_per_class_figures_or_pool_has_no_such_sections(
    tmp_path: Path,
) -> None:
    # Prepare: an old run's gan.json
    gan = _gan(A={"best-fd": 1.0, "fd-step-2": 1.0})

    # Execute
    sections = _write(tmp_path, gan, pool=None)

    # Assert
    assert list(sections) == ["Generative models"]
    assert not (tmp_path / "fidelity.csv").exists()


def test_pool_grids_show_each_class_with_a_row_per_generator_site(
    tmp_path: Path,
) -> None:
    # Prepare: bm positives (classes 2, 3) come from site B only
    pool = _pool()

    # Execute
    paths = write_pool_grids(pool, "bm", tmp_path)

    # Assert: two rows (A, B) of negatives, one (B) of positives
    assert [p.name for p in paths] == ["pool_neg.png", "pool_pos.png"]
    negatives, positives = (plt.imread(p) for p in paths)
    assert negatives.shape[0] > 1.5 * positives.shape[0]


def test_the_study_report_embeds_the_fidelity_table_and_pool_grids(
    tmp_path: Path,
) -> None:
    # Prepare
    report = StudyReport(
        title="generative study",
        config={"task": "bm"},
        gan=_gan(A=_per_class(3.0, 1.5)),
        synthetic_pool=_pool(),
    )

    # Execute
    page = write_study_report(report, tmp_path).read_text()

    # Assert
    assert f"<h2>{HEADING}</h2>" in page
    assert "<h2>Released synthetic images (the centre&#x27;s pool)</h2>" in page
    assert page.count('alt="pool_') == 2
