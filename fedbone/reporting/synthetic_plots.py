"""Figures of the generative part of a study report (matplotlib, Agg backend)."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from fedbone.generative.audit.similarity import HISTOGRAM_EDGES
from fedbone.generative.fidelity.umap_view import UmapView

__all__ = [
    "REAL_ONLY",
    "SYNTHETIC_ONLY",
    "plot_fd_curves",
    "plot_nearest_mse_histograms",
    "plot_ratio_sweep",
    "umap_view_from_record",
    "write_umap_png",
]

#: ``kind`` of a ratio-sweep row for the model trained on real scans only.
REAL_ONLY = "real-only"
#: ``kind`` of a ratio-sweep row for the model trained on synthetic images only.
SYNTHETIC_ONLY = "synthetic-only"

_FD_STEP = re.compile(r"^fd-step-(\d+)$")


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_fd_curves(sites: Mapping[str, Mapping[str, Any]], path: Path) -> Path | None:
    """Draw each site's Fréchet distance per checkpoint step; ``None`` if none.

    Parameters
    ----------
    sites
        Site -> ``{"metrics": {"fd-step-<n>": value, ...}, ...}`` (phase ``gan``).
    path
        Output PNG.
    """
    curves = {}
    for site, entry in sorted(sites.items()):
        metrics = entry.get("metrics", {})
        points = sorted(
            (int(match.group(1)), float(value))
            for key, value in metrics.items()
            if (match := _FD_STEP.match(key))
        )
        if points:
            curves[site] = points
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(5.6, 3.4), dpi=110)
    for site, points in curves.items():
        ax.plot(*zip(*points, strict=True), marker="o", ms=3, label=site)
    ax.set_xlabel("generator step")
    ax.set_ylabel("Fréchet distance (held-out real)")
    ax.set_title("GAN model selection")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_nearest_mse_histograms(
    audits: Mapping[str, Mapping[str, Any]], path: Path
) -> Path | None:
    """Bar plot of each site's nearest-MSE histogram over ``HISTOGRAM_EDGES``.

    Returns ``None`` when no site sent a histogram.
    """
    bins = len(HISTOGRAM_EDGES) - 1
    histograms = {
        site: [int(v) for v in audit["nearest-mse-histogram"]]
        for site, audit in sorted(audits.items())
        if len(audit.get("nearest-mse-histogram", [])) == bins
    }
    if not histograms:
        return None
    fig, ax = plt.subplots(figsize=(5.6, 3.4), dpi=110)
    width = 0.8 / len(histograms)
    for i, (site, counts) in enumerate(histograms.items()):
        ax.bar(np.arange(bins) + i * width, counts, width=width, label=site)
    ax.set_xticks(np.arange(bins) + 0.4 - width / 2)
    ax.set_xticklabels(
        [f"{lo:.0e}-{hi:.0e}" for lo, hi in itertools.pairwise(HISTOGRAM_EDGES)],
        rotation=30,
        fontsize=7,
    )
    ax.set_xlabel("MSE of each synthetic image to its nearest training scan")
    ax.set_ylabel("synthetic images")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _sweep_positions(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Put real-only left of the lowest ratio, synthetic-only right of the top."""
    ratios = [float(r["ratio"]) for r in rows if r["kind"] == "mixed"]
    low, high = (min(ratios), max(ratios)) if ratios else (1.0, 1.0)
    return {REAL_ONLY: low / 4, SYNTHETIC_ONLY: high * 4}


def plot_ratio_sweep(rows: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    """Draw external AUC against the real:synthetic ratio (the paper's Fig. 1b).

    One panel per training site; one thin line per validation-only site with
    its bootstrap interval, the pooled external AUC bold with its DeLong
    interval; real-only at the left, synthetic-only as a separate square.

    Parameters
    ----------
    rows
        Ratio-sweep rows (``site``, ``kind``, ``ratio``, ``scope``, ``auc``,
        ``low``, ``high``), see :func:`ratio_sweep_rows`.
    path
        Output PNG; ``None`` is returned when there are no rows.
    """
    sites = sorted({str(r["site"]) for r in rows})
    if not sites:
        return None
    fig, axes = plt.subplots(
        1, len(sites), figsize=(5.2 * len(sites), 3.8), dpi=110, squeeze=False
    )
    for ax, site in zip(axes[0], sites, strict=True):
        site_rows = [r for r in rows if r["site"] == site]
        positions = _sweep_positions(site_rows)
        for scope in sorted({str(r["scope"]) for r in site_rows}):
            _draw_scope(ax, [r for r in site_rows if r["scope"] == scope], positions)
        ticks = {positions[REAL_ONLY]: "real only"}
        ticks.update(
            {
                float(r["ratio"]): f"1:{r['ratio']:g}"
                for r in site_rows
                if r["kind"] == "mixed"
            }
        )
        if any(r["kind"] == SYNTHETIC_ONLY for r in site_rows):
            ticks[positions[SYNTHETIC_ONLY]] = "synthetic only"
        ax.set_xscale("log")
        ax.set_xticks(list(ticks), list(ticks.values()), rotation=30, fontsize=8)
        ax.minorticks_off()
        ax.set_xlabel("real : synthetic images")
        ax.set_ylabel("external AUC")
        ax.set_title(f"trained at {site}")
        ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def _draw_scope(ax: Any, rows: Sequence[Mapping[str, Any]], positions: Any) -> None:
    pooled = rows[0]["scope"] == "pooled-external"
    style = {"lw": 2.6, "color": "black"} if pooled else {"lw": 1.0, "alpha": 0.8}
    label = "pooled external (DeLong CI)" if pooled else str(rows[0]["scope"])

    def x_of(row: Mapping[str, Any]) -> float:
        return float(positions.get(row["kind"], row["ratio"]))

    line = sorted(
        (r for r in rows if r["kind"] != SYNTHETIC_ONLY and not math.isnan(r["auc"])),
        key=x_of,
    )
    drawn = None
    if line:
        drawn = ax.errorbar(
            [x_of(r) for r in line],
            [r["auc"] for r in line],
            yerr=_error_bars(line),
            marker="o",
            ms=4,
            capsize=2,
            label=label,
            **style,
        )
    for row in rows:
        if row["kind"] == SYNTHETIC_ONLY and not math.isnan(row["auc"]):
            colour = drawn[0].get_color() if drawn else style.get("color")
            ax.errorbar(
                [x_of(row)],
                [row["auc"]],
                yerr=_error_bars([row]),
                marker="s",
                ms=6,
                capsize=2,
                color=colour,
                lw=style["lw"],
            )


def _error_bars(rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Asymmetric error bars; a missing interval draws none."""
    below = [r["auc"] - r["low"] for r in rows]
    above = [r["high"] - r["auc"] for r in rows]
    return np.nan_to_num(np.array([below, above], dtype=np.float64), nan=0.0)


def umap_view_from_record(record: Mapping[str, Any]) -> UmapView:
    """Rebuild a :class:`UmapView` from its ``to_record()`` dictionary."""
    bins = int(record["bins"])
    return UmapView(
        grid_real=np.asarray(record["grid-real"], dtype=np.int64).reshape(bins, bins),
        grid_synthetic=np.asarray(record["grid-synthetic"], dtype=np.int64).reshape(
            bins, bins
        ),
        extent=(
            float(record["x-min"]),
            float(record["x-max"]),
            float(record["y-min"]),
            float(record["y-max"]),
        ),
        min_cell=int(record["min-cell"]),
        n_real=int(record["n-real"]),
        n_synthetic=int(record["n-synthetic"]),
    )


def write_umap_png(record: Mapping[str, Any], path: Path) -> Path:
    """Render a site's released UMAP grids (``UmapView.png``) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(umap_view_from_record(record).png())
    return path
