"""Phase ``report``: tables, figures and the HTML report of the run."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedbone.reporting import (
    StudyReport,
    compact_synthesis,
    format_summary,
    study_ratio_sweep,
    write_study_report,
)
from fedbone.validation.study_results import ValidationResults
from server.phases.train import classifier_spec
from server.study_run import StudyRun

__all__ = ["build_report", "run_report"]

logger = logging.getLogger(__name__)


def build_report(run: StudyRun) -> StudyReport:
    """Collect what the earlier phases left in ``run`` as plain report data."""
    validation = run.validation_results or ValidationResults()
    return StudyReport(
        title=f"fedbone study {run.run_dir.name}",
        config=run.study.to_json() | {"task": run.study.task},
        census=[
            {"site": s.site_id, "role": s.role, "counts": s.counts}
            for s in sorted(run.sites.values(), key=lambda s: s.site_id)
        ],
        rounds=run.rounds,
        per_site=validation.per_site,
        pooled=validation.pooled,
        site_pairs=validation.site_pairs,
        pooled_pairs=validation.pooled_pairs,
        rejected=run.results.get("rejected-updates", []),
        site_errors=run.results.get("site-errors", []),
        privacy=run.results.get("privacy", {}),
        budget_refusals=run.results.get("budget-refusals", []),
        timings=dict(run.timings),
        pooled_external=validation.pooled_external,
        pooled_pairs_external=validation.pooled_pairs_external,
        gan=run.gan_results.to_json() if run.gan_results else {},
        synthesis=run.synthesis_results.to_json() if run.synthesis_results else {},
        umap=run.results.get("umap", {}),
        synthetic_models=run.study.synthetic_training.model_names(),
        outcomes=run.results.get("outcomes", {}),
        synthetic_pool=(
            run.pool.synthetic_set() if run.pool is not None and len(run.pool) else None
        ),
        enhance=run.results.get("enhance", {}),
        classifier=(
            (classifier_spec(run), run.models["federated"])
            if "federated" in run.models
            else None
        ),
        enhance_examples=_existing(run.run_dir / "enhance" / "examples.png"),
        fold_models=run.results.get("fold-models", []),
    )


def _existing(path: Path) -> Path | None:
    return path if path.is_file() else None


def _pooled_json(pooled: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: {
            "auc": roc.auc,
            "auc_low": roc.auc_ci.low,
            "auc_high": roc.auc_ci.high,
            "n_positive": roc.n_positive,
            "n_negative": roc.n_negative,
        }
        for name, roc in pooled.items()
    }


def run_report(run: StudyRun) -> None:
    """Write the report files and print the pooled summary."""
    report = build_report(run)
    path = write_study_report(report, run.run_dir)
    run.write_json(
        "results.json",
        {
            "pooled": _pooled_json(report.pooled),
            "pooled_external": _pooled_json(report.pooled_external),
            "per_site": list(report.per_site),
            "gan": dict(report.gan),
            "synthesis": compact_synthesis(report.synthesis),
            "ratio_sweep": study_ratio_sweep(report),
            "outcomes": dict(report.outcomes),
            "enhance": dict(report.enhance),
            "rejected": list(report.rejected),
            "site_errors": list(report.site_errors),
            "skipped_models": run.results.get("skipped-models", []),
            "fold_models": list(report.fold_models),
            "privacy": dict(report.privacy),
            "budget_refusals": list(report.budget_refusals),
            "timings": report.timings,
        },
    )
    sys.stdout.write("\n" + format_summary(report) + "\n")
    logger.info("report: %s", path)
