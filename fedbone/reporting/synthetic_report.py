"""Tables and sections of the generative part of a study report.

GAN model selection, the site-local curation and privacy audit, the pooled
synthetic set, the site-local UMAP grids and the ratio sweep (the paper's
Fig. 1b: external AUC against the real:synthetic mix), with the per-class
fidelity table and grids of the released pool
(:mod:`fedbone.reporting.fidelity_report`). Everything here comes from
aggregates the sites released and from the released synthetic images; no
real image and no patient-level value.
:func:`write_synthetic_sections` writes the CSV/PNG files and returns
:class:`ReportSection` objects that :mod:`fedbone.reporting.study_report`
renders as HTML.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedbone.classifier.synthetic_mix import SyntheticSet
from fedbone.generative.fidelity.grids import GRID_COLUMNS
from fedbone.reporting.fidelity_report import (
    FIDELITY_NOTE,
    POOL_NOTE,
    fidelity_rows,
    write_pool_grids,
)
from fedbone.reporting.synthetic_plots import (
    REAL_ONLY,
    SYNTHETIC_ONLY,
    plot_fd_curves,
    plot_nearest_mse_histograms,
    plot_ratio_sweep,
    write_umap_png,
)

__all__ = [
    "POOLED_EXTERNAL",
    "ReportSection",
    "audit_rows",
    "compact_synthesis",
    "gan_rows",
    "pool_rows",
    "ratio_sweep_rows",
    "write_csv",
    "write_synthetic_sections",
]

#: ``scope`` of ratio-sweep rows holding the pooled external AUC.
POOLED_EXTERNAL = "pooled-external"


@dataclass(frozen=True)
class ReportSection:
    """One titled block of the HTML report (plain text, rows, figures)."""

    heading: str
    notes: tuple[str, ...] = ()
    tables: tuple[tuple[list[dict[str, Any]], tuple[str, ...]], ...] = ()
    images: tuple[Path, ...] = ()


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write ``rows`` as CSV; columns are the union of keys in first-seen order."""
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _num(value: Any) -> str:
    """Four significant digits for tables; integers as integers."""
    if value is None or value == "":
        return ""
    number = float(value)
    if math.isnan(number):
        return "n/a"
    if number.is_integer() and abs(number) < 1e9:
        return str(int(number))
    return f"{number:.4g}"


def gan_rows(gan: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per GAN site: selected checkpoint's fidelity and provenance."""
    rows = []
    for site, entry in sorted(gan.get("sites", {}).items()):
        m = entry.get("metrics", {})
        p = entry.get("provenance", {})
        rows.append(
            {
                "site": site,
                "best FD": _num(m.get("best-fd")),
                "best KID": _num(m.get("best-kid")),
                "precision": _num(m.get("best-precision")),
                "recall": _num(m.get("best-recall")),
                "best step": _num(m.get("best-step")),
                "checkpoints": _num(m.get("n-checkpoints")),
                "real / held-out": f"{_num(m.get('n-real'))} / "
                f"{_num(m.get('n-held-out'))}",
                "seconds": _num(m.get("seconds")),
                "checkpoint sha256": str(p.get("checkpoint-sha256", ""))[:12],
                "encoder": str(p.get("encoder", "")),
            }
        )
    return rows


def audit_rows(synthesis: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per generator site: the curation/audit funnel and its figures."""
    rows = []
    for site, a in sorted(synthesis.get("audits", {}).items()):
        rows.append(
            {
                "site": site,
                "generated": _num(a.get("n-generated")),
                "curated out": _num(a.get("n-curated-out")),
                "audited": _num(a.get("n-audited")),
                "blocked": _num(a.get("n-blocked")),
                "released": _num(a.get("n-released")),
                "blocked by MSE / feature / MS-SSIM": " / ".join(
                    _num(a.get(f"n-blocked-{rule}"))
                    for rule in ("mse", "feature", "ms-ssim")
                ),
                "threshold MSE": _num(a.get("threshold-mse")),
                "threshold feature": _num(a.get("threshold-feature")),
                "MS-SSIM ceiling": _num(a.get("ms-ssim-ceiling")),
                "closest pair MSE": _num(a.get("closest-pair-mse")),
                "closest pair MAE": _num(a.get("closest-pair-mae")),
                "closest pair MS-SSIM": _num(a.get("closest-pair-ms-ssim")),
                "membership AUC": _num(a.get("membership-auc")),
                "short of quota (class: n)": _shortfalls(a),
                "curation val AUC": _num(a.get("curation-val-auc")),
                "unrealistic": _num(a.get("n-unrealistic")),
                "unrealistic threshold MSE": _num(a.get("threshold-unrealistic-mse")),
                "nearest rank q05 / q50 / q95": " / ".join(
                    _num(a.get(f"nearest-rank-{q}")) for q in ("q05", "q50", "q95")
                ),
                "passed": str(a.get("passed", "")),
            }
        )
    return rows


def _shortfalls(audit: Mapping[str, Any]) -> str:
    """Classes synthesis could not fill, ``class: missing``; ``none`` if all full."""
    prefix = "n-shortfall-class-"
    shortfalls = {k[len(prefix) :]: v for k, v in audit.items() if k.startswith(prefix)}
    if not shortfalls:
        return ""
    short = [f"{c}: {_num(n)}" for c, n in sorted(shortfalls.items()) if n]
    return ", ".join(short) or "none"


def pool_rows(synthesis: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row: pool size, duplicates removed, digest and deliveries."""
    batches = synthesis.get("batches", [])
    deliveries = synthesis.get("deliveries", {})
    return [
        {
            "pool size": _num(synthesis.get("pool-size", 0)),
            "received": _num(sum(b.get("n-received", 0) for b in batches)),
            "exact duplicates removed": _num(
                sum(b.get("n-exact-duplicates", 0) for b in batches)
            ),
            "near duplicates removed": _num(
                sum(b.get("n-near-duplicates", 0) for b in batches)
            ),
            "pool sha256": str(synthesis.get("pool-sha256", ""))[:12],
            "delivered to": ", ".join(
                f"{site} ({n})" for site, n in sorted(deliveries.items())
            ),
        }
    ]


def compact_synthesis(synthesis: Mapping[str, Any]) -> dict[str, Any]:
    """``synthesis`` for ``results.json``: batches without their audit copies.

    Each batch repeats its site's audit (already under ``audits``) and the
    histogram edges are a module constant, so both are dropped.
    """
    compact = dict(synthesis)
    compact["audits"] = {
        site: {k: v for k, v in audit.items() if k != "nearest-mse-histogram-edges"}
        for site, audit in synthesis.get("audits", {}).items()
    }
    if "batches" in synthesis:
        compact["batches"] = [
            {k: v for k, v in batch.items() if k != "audit"}
            for batch in synthesis["batches"]
        ]
    return compact


def _sweep_models(
    synthetic_models: Mapping[str, tuple[str, float | None]],
) -> list[tuple[str, str, str, float | None]]:
    """``(site, model, kind, ratio)`` per model of the sweep, real-only first."""
    entries: list[tuple[str, str, str, float | None]] = []
    for site in sorted({site for site, _ in synthetic_models.values()}):
        entries.append((site, f"local-{site}", REAL_ONLY, 0.0))
        ranked = sorted(
            (name for name, (s, _) in synthetic_models.items() if s == site),
            key=lambda name: (
                synthetic_models[name][1] is None,
                synthetic_models[name][1] or 0.0,
            ),
        )
        for name in ranked:
            ratio = synthetic_models[name][1]
            kind = SYNTHETIC_ONLY if ratio is None else "mixed"
            entries.append((site, name, kind, ratio))
    return entries


def ratio_sweep_rows(
    synthetic_models: Mapping[str, tuple[str, float | None]],
    per_site: Sequence[Mapping[str, Any]],
    pooled_external: Mapping[str, Any],
    external_sites: Sequence[str],
) -> list[dict[str, Any]]:
    """External AUC of every model of the ratio sweep (the paper's Fig. 1b).

    Parameters
    ----------
    synthetic_models
        Model name -> ``(training site, ratio)``; ratio ``None`` is
        synthetic-only (``SyntheticTrainingSettings.model_names()``). The
        real-only counterpart of site ``S`` is ``local-S``.
    per_site
        Per-site validation rows (``site``, ``model``, ``n``, ``auc``,
        ``auc-low``, ``auc-high``).
    pooled_external
        Model name -> pooled ROC over the validation-only sites.
    external_sites
        Validation-only sites (never used for training).

    Returns
    -------
    list of dict
        ``site``, ``model``, ``kind`` (real-only, mixed, synthetic-only),
        ``ratio`` (synthetic images per real scan; 0 real-only, ``None``
        synthetic-only), ``scope`` (a validation-only site or
        ``pooled-external``), ``auc``, ``low``, ``high``, ``n``. Models that
        were not validated are left out.
    """
    external = set(external_sites)
    rows: list[dict[str, Any]] = []
    for site, model, kind, ratio in _sweep_models(synthetic_models):
        base = {"site": site, "model": model, "kind": kind, "ratio": ratio}
        for r in per_site:
            if r["model"] == model and r["site"] in external:
                rows.append(
                    base
                    | {
                        "scope": r["site"],
                        "auc": float(r["auc"]),
                        "low": float(r["auc-low"]),
                        "high": float(r["auc-high"]),
                        "n": int(r["n"]),
                    }
                )
        roc = pooled_external.get(model)
        if roc is not None:
            rows.append(
                base
                | {
                    "scope": POOLED_EXTERNAL,
                    "auc": float(roc.auc),
                    "low": float(roc.auc_ci.low),
                    "high": float(roc.auc_ci.high),
                    "n": int(roc.n_positive + roc.n_negative),
                }
            )
    return rows


def _sweep_table(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "site": r["site"],
            "model": r["model"],
            "real:synthetic": "real only"
            if r["kind"] == REAL_ONLY
            else "synthetic only"
            if r["kind"] == SYNTHETIC_ONLY
            else f"1:{r['ratio']:g}",
            "scope": r["scope"],
            "AUC (95% CI)": f"{_num(r['auc'])} ({_num(r['low'])}-{_num(r['high'])})",
            "n": _num(r["n"]),
        }
        for r in rows
    ]


def write_synthetic_sections(
    out_dir: Path,
    *,
    gan: Mapping[str, Any],
    synthesis: Mapping[str, Any],
    umap: Mapping[str, Mapping[str, Any]],
    sweep: Sequence[Mapping[str, Any]],
    pool: SyntheticSet | None = None,
    task: str = "bm",
) -> list[ReportSection]:
    """Write the generative tables (CSV) and figures (PNG) of the report.

    ``gan.csv``, ``fidelity.csv``, ``audit.csv`` and ``ratio_sweep.csv``, each
    when its data is present.

    Parameters
    ----------
    out_dir
        Report folder the tables and figures are written to.
    gan
        ``run.results["gan"]``: ``mode`` and per-site ``metrics`` and
        ``provenance``.
    synthesis
        ``run.results["synthesis"]``: per-site ``audits``, pool ``batches``,
        ``pool-size`` and ``deliveries``.
    umap
        Site -> its released UMAP density record.
    sweep
        Ratio-sweep rows, see :func:`ratio_sweep_rows`.
    pool
        The centre's released synthetic pool, drawn per class; ``None`` when
        the run made none.
    task
        The study task (``bm`` or ``ca``): which label makes a class positive.

    Returns
    -------
    list of ReportSection
        Only the sections whose data is present, in report order.
    """
    sections = []
    if gan.get("sites"):
        rows = gan_rows(gan)
        write_csv(out_dir / "gan.csv", rows)
        fd_png = plot_fd_curves(gan["sites"], out_dir / "gan_fd.png")
        sections.append(
            ReportSection(
                heading="Generative models",
                notes=(
                    f"Mode {gan.get('mode', 'local')}: each GAN site selected the "
                    "checkpoint with the lowest Fréchet distance to its held-out real "
                    "scans; only the figures and the checkpoint's sha256 left the "
                    "site.",
                ),
                tables=((rows, tuple(rows[0])),),
                images=(fd_png,) if fd_png else (),
            )
        )
    sections += _fidelity_sections(out_dir, gan.get("sites", {}))
    if synthesis.get("audits"):
        sections.append(_audit_section(out_dir, synthesis))
    sections += _pool_sections(out_dir, pool, task)
    if umap:
        images = tuple(
            write_umap_png(record, out_dir / f"umap_{site}.png")
            for site, record in sorted(umap.items())
        )
        sections.append(
            ReportSection(
                heading="Real vs synthetic (UMAP at the site)",
                notes=(
                    "Each site fitted the UMAP on its own embeddings and released "
                    "only coarse density grids (sparse real cells suppressed); no "
                    "embedding, point or image left the site. Sites: "
                    + ", ".join(sorted(umap))
                    + ".",
                ),
                images=images,
            )
        )
    if sweep:
        write_csv(out_dir / "ratio_sweep.csv", sweep)
        png = plot_ratio_sweep(sweep, out_dir / "ratio_sweep.png")
        table = _sweep_table(sweep)
        sections.append(
            ReportSection(
                heading="Training with synthetic images (ratio sweep)",
                notes=(
                    "External AUC (validation-only sites, never used for training) "
                    "against the number of synthetic images per real scan. Thin "
                    "lines: per site with bootstrap CIs; bold: pooled external AUC "
                    "with DeLong CI; squares: synthetic images only.",
                ),
                tables=((table, tuple(table[0])),),
                images=(png,) if png else (),
            )
        )
    return sections


def _audit_section(out_dir: Path, synthesis: Mapping[str, Any]) -> ReportSection:
    rows = audit_rows(synthesis)
    write_csv(out_dir / "audit.csv", rows)
    histogram_png = plot_nearest_mse_histograms(
        synthesis["audits"], out_dir / "audit_nearest_mse.png"
    )
    pool = pool_rows(synthesis)
    return ReportSection(
        heading="Synthetic images: curation and privacy audit",
        notes=(
            "Each generator site generated images, removed those its own "
            "classifier did not recognise (curated out), and blocked any image "
            "too close to one of its training scans (thresholds from real-vs-real "
            "distances at the site). Membership AUC: training vs held-out scans "
            "by nearness to the synthetic images; about 0.5 means no detectable "
            "membership leakage. Unrealistic: images farther from every training "
            "scan than the site's real scans are from another patient's (flagged, "
            "not blocked); nearest rank: where an image's nearest distance falls "
            "among those real-vs-real distances (0: closer than any, 1: farther).",
        ),
        tables=((rows, tuple(rows[0])), (pool, tuple(pool[0]))),
        images=(histogram_png,) if histogram_png else (),
    )


def _fidelity_sections(
    out_dir: Path, sites: Mapping[str, Mapping[str, Any]]
) -> list[ReportSection]:
    rows = fidelity_rows(sites)
    if not rows:  # runs before per-class figures, or a federated GAN
        return []
    write_csv(out_dir / "fidelity.csv", rows)
    table = [
        {k: v if isinstance(v, str) else _num(v) for k, v in row.items()}
        for row in rows
    ]
    return [
        ReportSection(
            heading="Fidelity per class: synthetic vs held-out real, next to real "
            "vs real",
            notes=(FIDELITY_NOTE,),
            tables=((table, tuple(table[0])),),
        )
    ]


def _pool_sections(
    out_dir: Path, pool: SyntheticSet | None, task: str
) -> list[ReportSection]:
    if pool is None or not len(pool):
        return []
    return [
        ReportSection(
            heading="Released synthetic images (the centre's pool)",
            notes=(POOL_NOTE.format(columns=GRID_COLUMNS),),
            images=write_pool_grids(pool, task, out_dir),
        )
    ]
