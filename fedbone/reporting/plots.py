"""Figures of a study report, drawn with matplotlib's non-interactive backend."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

__all__ = ["plot_pooled_roc", "plot_rounds"]


def plot_pooled_roc(curves: Mapping[str, Any], path: Path) -> Path:
    """Draw each model's pooled ROC curve (objects with ``fpr``, ``tpr``, ``auc``).

    Parameters
    ----------
    curves
        Model name -> pooled ROC.
    path
        Output PNG.
    """
    fig, ax = plt.subplots(figsize=(5.2, 5.0), dpi=110)
    ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--")
    for name, roc in curves.items():
        ax.plot(
            np.asarray(roc.fpr),
            np.asarray(roc.tpr),
            lw=1.8,
            label=f"{name} (AUC {roc.auc:.3f})",
        )
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title("Pooled external ROC (from site histograms)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_rounds(
    rounds: Sequence[Mapping[str, Any]], metric: str, path: Path, *, model: str
) -> Path | None:
    """Draw ``metric`` per round and site for one model; ``None`` if absent.

    Parameters
    ----------
    rounds
        Per-round rows with ``model``, ``site``, ``round`` and metric keys
        (``rounds.csv``).
    metric
        Metric key to plot, e.g. ``val-auc`` or ``train-loss``.
    path
        Output PNG; its folder is created if needed.
    model
        Model whose rows are drawn, e.g. ``federated``.
    """
    rows = [r for r in rounds if r["model"] == model and metric in r]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(5.6, 3.4), dpi=110)
    for site in sorted({r["site"] for r in rows}):
        points = sorted((r["round"], r[metric]) for r in rows if r["site"] == site)
        ax.plot(*zip(*points, strict=True), marker="o", ms=3, label=site)
    ax.set_xlabel("round")
    ax.set_ylabel(metric)
    ax.set_title(f"{model}: {metric} per site")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
