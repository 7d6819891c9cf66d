"""The study report: machine-readable tables plus one self-contained HTML page.

Everything here is computed from what the server already holds (aggregates);
the report adds no patient-level data. Figures are embedded as base64 PNG so
the HTML file can be mailed or archived on its own.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedbone.classifier.synthetic_mix import SyntheticSet
from fedbone.reporting.enhance_report import (
    enhance_summary_lines,
    write_enhance_sections,
)
from fedbone.reporting.gradcam_report import write_synthetic_gradcam
from fedbone.reporting.outcome_report import (
    outcome_summary_lines,
    write_outcome_sections,
)
from fedbone.reporting.plots import plot_pooled_roc, plot_rounds
from fedbone.reporting.synthetic_report import (
    ReportSection,
    ratio_sweep_rows,
    write_csv,
    write_synthetic_sections,
)

__all__ = ["StudyReport", "format_summary", "study_ratio_sweep", "write_study_report"]

#: Census role of the sites never used for training (external validation).
VALIDATE_ONLY = "validate-only"


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
    privacy: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    """Site -> its cumulative DP-SGD ``epsilon``/``delta`` (DP studies)."""
    budget_refusals: Sequence[Mapping[str, Any]] = ()
    timings: Mapping[str, float] = field(default_factory=dict)
    # The same over validation-only sites only (external validation).
    pooled_external: Mapping[str, Any] = field(default_factory=dict)
    pooled_pairs_external: Sequence[Mapping[str, Any]] = ()
    gan: Mapping[str, Any] = field(default_factory=dict)  # results["gan"]
    synthesis: Mapping[str, Any] = field(default_factory=dict)
    umap: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Model name -> (training site, synthetic images per real scan or None).
    synthetic_models: Mapping[str, tuple[str, float | None]] = field(
        default_factory=dict
    )
    outcomes: Mapping[str, Any] = field(default_factory=dict)  # results["outcomes"]
    synthetic_pool: SyntheticSet | None = None
    """The released synthetic images the centre pooled (phase ``synthesize``)."""
    enhance: Mapping[str, Any] = field(default_factory=dict)  # results["enhance"]
    enhance_examples: Path | None = None
    """Phantom triplets (fast / enhanced / standard) the centre made itself."""
    classifier: tuple[Any, dict[str, Any]] | None = None
    """The federated classifier's spec and arrays (Grad-CAM on synthetic images)."""
    fold_models: Sequence[Mapping[str, Any]] = ()
    """The cross-validated ensemble's fold models: the round each kept."""


def _ci(value: float, low: float, high: float) -> str:
    if any(math.isnan(v) for v in (value, low, high)):
        return "n/a" if math.isnan(value) else f"{value:.3f}"
    return f"{value:.3f} ({low:.3f}-{high:.3f})"


def _pooled_rows(pooled: Mapping[str, Any], scope: str) -> list[dict[str, Any]]:
    return [
        {
            "scope": scope,
            "model": name,
            "n_positive": roc.n_positive,
            "n_negative": roc.n_negative,
            "auc": roc.auc,
            "auc_low": roc.auc_ci.low,
            "auc_high": roc.auc_ci.high,
            "sensitivity": roc.sensitivity_at,
            "specificity": roc.specificity_at,
        }
        for name, roc in pooled.items()
    ]


def _scopes(report: StudyReport) -> list[tuple[str, Mapping[str, Any], Sequence[Any]]]:
    """``(scope, pooled ROCs, pooled pairs)``: all sites, then external only."""
    scopes = [("pooled", report.pooled, report.pooled_pairs)]
    if report.pooled_external:
        scopes.append(
            ("external", report.pooled_external, report.pooled_pairs_external)
        )
    return scopes


def _pair_rows(report: StudyReport) -> list[dict[str, Any]]:
    rows = [dict(row, scope=row["site"]) for row in report.site_pairs]
    for scope, _, pairs in _scopes(report):
        rows += _pooled_pair_rows(pairs, scope)
    return rows


def _pooled_pair_rows(
    pairs: Sequence[Mapping[str, Any]], scope: str
) -> list[dict[str, Any]]:
    rows = []
    for item in pairs:
        test = item["test"]
        rows.append(
            {
                "scope": scope,
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
    """Return short fixed-width tables of pooled results, for the terminal.

    All validating sites first; then, when present, the same over the
    validation-only sites ("External"), each with its paired DeLong lines;
    then one line per outcome endpoint (hazard ratios, log-rank p).
    """
    blocks = []
    for scope, pooled, pairs in _scopes(report):
        block = _summary_block(pooled, pairs)
        if scope == "external":
            block = "External (validation-only sites)\n" + block
        blocks.append(block)
    synthetic_lines = synthesis_summary_lines(report.synthesis)
    if synthetic_lines:
        blocks.append("Synthetic images\n" + "\n".join(synthetic_lines))
    outcome_lines = outcome_summary_lines(report.outcomes)
    if outcome_lines:
        blocks.append("Outcomes (site-stratified Cox)\n" + "\n".join(outcome_lines))
    if report.enhance:
        blocks.append("\n".join(enhance_summary_lines(report.enhance)))
    return "\n\n".join(blocks)


def synthesis_summary_lines(synthesis: Mapping[str, Any]) -> list[str]:
    """One line per generator site: released per class, shortfalls, flags.

    Parameters
    ----------
    synthesis
        ``results["synthesis"]``: ``audits`` maps a generator site to the
        summary it released (counts per class, audit aggregates).
    """
    lines = []
    for site, summary in sorted(dict(synthesis.get("audits", {})).items()):
        released = {
            key.rsplit("-", 1)[1]: int(value)
            for key, value in summary.items()
            if key.startswith("n-released-class-")
        }
        short = {
            key.rsplit("-", 1)[1]: int(value)
            for key, value in summary.items()
            if key.startswith("n-shortfall-class-") and value
        }
        per_class = ", ".join(f"class {c}: {n}" for c, n in sorted(released.items()))
        line = f"{site}: released {summary.get('n-released', 0)} ({per_class})"
        if short:
            line += "; short " + ", ".join(
                f"class {c}: {n}" for c, n in sorted(short.items())
            )
        if "n-unrealistic" in summary:
            line += f"; flagged unrealistic {int(summary['n-unrealistic'])}"
        auc = summary.get("curation-val-auc")
        if isinstance(auc, float) and auc == auc:
            line += f"; curation classifier val AUC {auc:.3f}"
        lines.append(line)
    return lines


def _summary_block(
    pooled: Mapping[str, Any], pairs: Sequence[Mapping[str, Any]]
) -> str:
    width = max([14, *(len(name) + 2 for name in pooled)])
    lines = [
        f"{'model':<{width}}{'pooled AUC (95% CI)':<26}{'sens@0.5':>9}"
        f"{'spec@0.5':>9}{'pos':>6}{'neg':>6}"
    ]
    for row in _pooled_rows(pooled, ""):
        lines.append(
            f"{row['model']:<{width}}"
            f"{_ci(row['auc'], row['auc_low'], row['auc_high']):<26}"
            f"{row['sensitivity']:>9.3f}{row['specificity']:>9.3f}"
            f"{row['n_positive']:>6}{row['n_negative']:>6}"
        )
    for item in pairs:
        test = item["test"]
        lines.append(
            f"DeLong {item['model_a']} vs {item['model_b']}: "
            f"AUC difference {test.difference:+.3f}, p = {test.p_value:.3g}"
        )
    return "\n".join(lines)


def _figure(spent: Mapping[str, float], key: str, form: str) -> str:
    value = spent.get(key)
    return "-" if value is None else format(value, form)


_PRIVACY_COLUMNS = [
    "site",
    "DP-SGD epsilon",
    "DP-SGD delta",
    "noise multiplier",
    "statistics epsilon",
    "ledger total epsilon",
]


def _privacy_section(report: StudyReport) -> list[str]:
    """Return the per-site privacy table: DP-SGD, noisy statistics, refusals."""
    rows = [
        {
            "site": site,
            "DP-SGD epsilon": _figure(spent, "epsilon", ".3f"),
            "DP-SGD delta": _figure(spent, "delta", ".2e"),
            "noise multiplier": _figure(spent, "noise-multiplier", ".3g"),
            "statistics epsilon": _figure(spent, "statistics-epsilon", ".3f"),
            "ledger total epsilon": _figure(spent, "epsilon-total", ".3f"),
        }
        for site, spent in sorted(report.privacy.items())
    ]
    rows += [
        {
            "site": r["site"],
            "DP-SGD epsilon": "refused: budget exhausted",
            "DP-SGD delta": r.get("model", ""),
            "noise multiplier": f"round {r['round']}" if "round" in r else "",
            "statistics epsilon": "",
            "ledger total epsilon": "",
        }
        for r in report.budget_refusals
    ]
    return [
        "<h2>Differential privacy (each site's ledger)</h2>",
        _table(rows, _PRIVACY_COLUMNS),
        '<p class="note">DP-SGD epsilon is the site\'s total over every DP-SGD '
        "release it made (all models and rounds, composed in Renyi DP by its "
        "ledger), at the site's delta. Statistics epsilon is the noisy validation "
        "histograms' (Laplace, pure epsilon); without dp.statistics validation "
        "figures are exact and outside epsilon. The ledger total adds every "
        "stream.</p>",
    ]


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


def study_ratio_sweep(report: StudyReport) -> list[dict[str, Any]]:
    """External AUC per model of the ratio sweep (see :func:`ratio_sweep_rows`).

    The external sites are those with census role ``validate-only``.
    """
    external = [s["site"] for s in report.census if s["role"] == VALIDATE_ONLY]
    return ratio_sweep_rows(
        report.synthetic_models, report.per_site, report.pooled_external, external
    )


def _render(section: ReportSection) -> str:
    parts = [f"<h2>{html.escape(section.heading)}</h2>"]
    parts += [f'<p class="note">{html.escape(note)}</p>' for note in section.notes]
    parts += [_table(rows, columns) for rows, columns in section.tables]
    parts.append("".join(_img(path) for path in section.images))
    return "\n".join(parts)


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
    pooled_rows = [
        row
        for scope, pooled, _ in _scopes(report)
        for row in _pooled_rows(pooled, scope)
    ]
    pair_rows = _pair_rows(report)
    write_csv(out_dir / "per_site.csv", report.per_site)
    write_csv(out_dir / "pooled.csv", pooled_rows)
    write_csv(out_dir / "comparisons.csv", pair_rows)
    write_csv(out_dir / "rounds.csv", report.rounds)
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
    if report.fold_models:
        sections += [
            "<h2>Cross-validated ensemble (fold models)</h2>",
            "<p>Each fold model trained on every train site's development scans "
            "but one fold, and was kept at the round whose loss on the sites' "
            "held-out folds was lowest. The ensemble (cv-ensemble above) calls by "
            "their majority vote; its ROC is of their mean probability.</p>",
            _table(
                [
                    {
                        "model": row["model"],
                        "kept round": row["kept-round"],
                        "rounds run": row["rounds-run"],
                        "held-out loss": f"{row['held-out-loss']:.4f}",
                    }
                    for row in report.fold_models
                ],
                ["model", "kept round", "rounds run", "held-out loss"],
            ),
        ]
    for section in write_synthetic_sections(
        out_dir,
        gan=report.gan,
        synthesis=report.synthesis,
        umap=report.umap,
        sweep=study_ratio_sweep(report),
        pool=report.synthetic_pool,
        task=str(cfg.get("task", "bm")),
    ):
        sections.append(_render(section))
    if report.synthetic_pool is not None and report.classifier is not None:
        gradcam = write_synthetic_gradcam(
            report.synthetic_pool,
            report.classifier[0],
            report.classifier[1],
            out_dir,
            task=str(cfg.get("task", "bm")),
        )
        if gradcam is not None:
            sections.append(_render(gradcam))
    if report.outcomes:
        sections += map(_render, write_outcome_sections(out_dir, report.outcomes))
    if report.enhance:
        sections += map(
            _render,
            write_enhance_sections(out_dir, report.enhance, report.enhance_examples),
        )
    if report.privacy or report.budget_refusals:
        sections += _privacy_section(report)
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
