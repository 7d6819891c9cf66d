"""The study report: machine-readable tables plus one self-contained HTML page.

Everything here is computed from what the server already holds (aggregates);
the report adds no patient-level data. Figures are embedded as base64 PNG so
the HTML file can be mailed or archived on its own.
"""

from __future__ import annotations

import base64
import csv
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedbone.reporting.plots import plot_pooled_roc, plot_rounds

__all__ = ["StudyReport", "format_summary", "write_study_report"]


@dataclass
class StudyReport:
    """What a finished study run has to report (plain data)."""

    title: str
    config: Mapping[str, Any]
    census: Sequence[Mapping[str, Any]] = ()
    rounds: Sequence[Mapping[str, Any]] = ()
    per_site: Sequence[Mapping[str, Any]] = ()
    pooled: Mapping[str, Any] = field(default_factory=dict)  # name -> PooledROC
    site_pairs: Sequence[Mapping[str, Any]] = ()
    pooled_pairs: Sequence[Mapping[str, Any]] = ()  # {model_a, model_b, test}
    rejected: Sequence[Mapping[str, Any]] = ()
    site_errors: Sequence[Mapping[str, Any]] = ()
    timings: Mapping[str, float] = field(default_factory=dict)


def _ci(value: float, low: float, high: float) -> str:
    if any(math.isnan(v) for v in (value, low, high)):
        return "n/a" if math.isnan(value) else f"{value:.3f}"
    return f"{value:.3f} ({low:.3f}-{high:.3f})"


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _pooled_rows(report: StudyReport) -> list[dict[str, Any]]:
    return [
        {
            "model": name,
            "n_positive": roc.n_positive,
            "n_negative": roc.n_negative,
            "auc": roc.auc,
            "auc_low": roc.auc_ci.low,
            "auc_high": roc.auc_ci.high,
            "sensitivity": roc.sensitivity_at,
            "specificity": roc.specificity_at,
        }
        for name, roc in report.pooled.items()
    ]


def _pair_rows(report: StudyReport) -> list[dict[str, Any]]:
    rows = [dict(row, scope=row["site"]) for row in report.site_pairs]
    for item in report.pooled_pairs:
        test = item["test"]
        rows.append(
            {
                "scope": "pooled",
                "model_a": item["model_a"],
                "model_b": item["model_b"],
                "difference": test.difference,
                "se": test.se,
                "z": test.z,
                "p-value": test.p_value,
            }
        )
    return rows


def format_summary(report: StudyReport) -> str:
    """Return a short fixed-width table of pooled results, for the terminal."""
    lines = [
        f"{'model':<14}{'pooled AUC (95% CI)':<26}{'sens@0.5':>9}{'spec@0.5':>9}"
        f"{'pos':>6}{'neg':>6}"
    ]
    for row in _pooled_rows(report):
        lines.append(
            f"{row['model']:<14}"
            f"{_ci(row['auc'], row['auc_low'], row['auc_high']):<26}"
            f"{row['sensitivity']:>9.3f}{row['specificity']:>9.3f}"
            f"{row['n_positive']:>6}{row['n_negative']:>6}"
        )
    for item in report.pooled_pairs:
        test = item["test"]
        lines.append(
            f"DeLong {item['model_a']} vs {item['model_b']}: "
            f"AUC difference {test.difference:+.3f}, p = {test.p_value:.3g}"
        )
    return "\n".join(lines)


def _table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(str(r.get(c, '')))}</td>" for c in columns)
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(path: Path | None) -> str:
    if path is None:
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _counts(r: Mapping[str, Any]) -> str:
    if r["n"] < 0:
        return "suppressed (small cell)"
    return f"{int(r['n'])} ({int(r['n-pos'])}/{int(r['n-neg'])})"


def _site_rows(report: StudyReport) -> list[dict[str, Any]]:
    return [
        {
            "site": r["site"],
            "model": r["model"],
            "n (+/-)": _counts(r),
            "AUC (95% CI)": _ci(r["auc"], r["auc-low"], r["auc-high"]),
            "sensitivity": _ci(
                r["sensitivity"], r["sensitivity-low"], r["sensitivity-high"]
            ),
            "specificity": _ci(
                r["specificity"], r["specificity-low"], r["specificity-high"]
            ),
        }
        for r in report.per_site
    ]


def _census_rows(report: StudyReport) -> list[dict[str, Any]]:
    def show(value: int) -> str:
        return "suppressed" if value < 0 else str(value)

    task = str(report.config.get("task", "bm"))
    rows = []
    for site in report.census:
        c = site["counts"]
        rows.append(
            {
                "site": site["site"],
                "role": site["role"],
                **{
                    f"{split} (+/-)": f"{show(c.get(f'n-{split}', 0))} "
                    f"({show(c.get(f'n-{split}-{task}-pos', 0))}/"
                    f"{show(c.get(f'n-{split}-{task}-neg', 0))})"
                    for split in ("train", "val", "test")
                },
            }
        )
    return rows


_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;
padding:3px 8px;font-size:13px}th{background:#f2f2f2}h2{margin-top:1.6em}
.note{color:#555;font-size:13px}img{max-width:48%;margin-right:1%}
"""


def write_study_report(report: StudyReport, out_dir: Path) -> Path:
    """Write tables (CSV), figures (PNG) and ``report.html`` into ``out_dir``.

    Returns
    -------
    Path
        The HTML report.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    pooled_rows = _pooled_rows(report)
    pair_rows = _pair_rows(report)
    _write_csv(out_dir / "per_site.csv", report.per_site)
    _write_csv(out_dir / "pooled.csv", pooled_rows)
    _write_csv(out_dir / "comparisons.csv", pair_rows)
    _write_csv(out_dir / "rounds.csv", report.rounds)
    roc_png = plot_pooled_roc(report.pooled, out_dir / "roc_pooled.png")
    auc_png = plot_rounds(
        report.rounds, "val-auc", out_dir / "rounds_val_auc.png", model="federated"
    )
    loss_png = plot_rounds(
        report.rounds,
        "train-loss",
        out_dir / "rounds_train_loss.png",
        model="federated",
    )
    summary = format_summary(report)
    (out_dir / "summary.txt").write_text(summary + "\n")
    cfg = report.config
    training = cfg.get("training", {})
    sections = [
        f"<h1>{html.escape(report.title)}</h1>",
        '<p class="note">Task <b>{}</b>; strategy <b>{}</b>, {} rounds; model {} '
        "({} norm). Every figure below was computed from aggregates: per-site "
        "metrics at the sites, pooled metrics from per-class score histograms. "
        "No patient-level score left any site.</p>".format(
            html.escape(str(cfg.get("task"))),
            html.escape(str(training.get("strategy"))),
            training.get("rounds"),
            html.escape(str(cfg.get("model", {}).get("architecture"))),
            html.escape(str(cfg.get("model", {}).get("norm"))),
        ),
        "<h2>Federation (census)</h2>",
        _table(
            _census_rows(report),
            ["site", "role", "train (+/-)", "val (+/-)", "test (+/-)"],
        ),
        "<h2>Pooled external validation</h2>",
        f"<pre>{html.escape(summary)}</pre>",
        _img(roc_png),
        "<h2>Per-site validation (computed at each site)</h2>",
        _table(
            _site_rows(report),
            ["site", "model", "n (+/-)", "AUC (95% CI)", "sensitivity", "specificity"],
        ),
        "<h2>Paired DeLong comparisons</h2>",
        _table(
            pair_rows,
            ["scope", "model_a", "model_b", "difference", "se", "z", "p-value"],
        ),
        "<h2>Training</h2>",
        _img(auc_png) + _img(loss_png),
    ]
    if report.rejected or report.site_errors:
        sections += [
            "<h2>Rejected updates and site errors</h2>",
            _table(
                list(report.rejected) + list(report.site_errors),
                ["model", "site", "action", "reason"],
            ),
        ]
    sections += [
        "<h2>Timings (s)</h2>",
        _table(
            [{k: f"{v:.1f}" for k, v in report.timings.items()}], list(report.timings)
        ),
        '<p class="note">How to read this report: the pooled AUC treats all '
        "validation scans as one cohort (threshold-free); sensitivity and "
        "specificity use the paper's operating point p >= 0.5. CIs: per-site by "
        "1,000-sample stratified bootstrap, pooled by DeLong's method. A paired "
        "DeLong p-value below 0.05 means the two models' AUCs differ on the same "
        "patients.</p>",
    ]
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>"
        f"{html.escape(report.title)}</title><style>{_STYLE}</style></head><body>"
        + "\n".join(sections)
        + "</body></html>"
    )
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
