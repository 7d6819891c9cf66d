"""Kaplan-Meier figure of the outcome section (matplotlib, Agg backend).

The curves come from the server's pooled counts (``results["outcomes"]``), so
the figure shows nothing that is not already in the report's tables.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt
from matplotlib.ticker import MaxNLocator

__all__ = ["DAYS_PER_YEAR", "km_groups", "plot_kaplan_meier"]

#: Julian year; the x axis is in years, the grid in days.
DAYS_PER_YEAR = 365.25

_GROUP_ORDER = ("positive", "negative")
_GROUP_COLOURS = {"positive": "#c0392b", "negative": "#2c6fbb"}
_CURVE_KEYS = ("survival", "lower", "upper", "at-risk")


def km_groups(km: Mapping[str, Any]) -> list[str]:
    """Return the groups of ``km`` that hold a full curve, positive first.

    Parameters
    ----------
    km
        ``{"time-days": [...], "<group>": {"survival": [...], "lower": [...],
        "upper": [...], "at-risk": [...]}}`` (one endpoint of the outcomes
        phase).

    Returns
    -------
    list of str
        ``positive``, ``negative``, then any other group, alphabetically;
        groups whose lists are missing or not as long as ``time-days`` are left
        out.
    """
    n_times = len(km.get("time-days", ()))
    found = [
        name
        for name, curve in km.items()
        if name != "time-days"
        and isinstance(curve, Mapping)
        and all(len(curve.get(key, ())) == n_times for key in _CURVE_KEYS)
    ]
    if n_times == 0:
        return []
    known = [name for name in _GROUP_ORDER if name in found]
    return known + sorted(name for name in found if name not in _GROUP_ORDER)


def _as_array(values: Sequence[Any]) -> npt.NDArray[np.float64]:
    return np.array([math.nan if v is None else float(v) for v in values])


def _at_risk_label(value: float) -> str:
    # Under DP the released counts are noisy and may even be negative.
    return "-" if math.isnan(value) else str(max(0, round(value)))


def _risk_table_times(last_years: float) -> npt.NDArray[np.float64]:
    """About six round times (years) from 0 to the last grid time."""
    if last_years <= 0:
        return np.array([0.0])
    locator = MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10])
    ticks = np.asarray(locator.tick_values(0.0, last_years), dtype=np.float64)
    return ticks[(ticks >= 0.0) & (ticks <= last_years + 1e-9)]


def plot_kaplan_meier(
    endpoint: str, km: Mapping[str, Any], path: Path, *, title: str
) -> Path:
    """Draw pooled Kaplan-Meier curves with 95% bands and a number-at-risk table.

    Parameters
    ----------
    endpoint
        Endpoint name (``death``, ``hf``), used in the y label.
    km
        One endpoint's ``"km"`` entry of the outcomes results (see
        :func:`km_groups`); times in days, drawn in years.
    path
        Output PNG.
    title
        Figure title.

    Returns
    -------
    Path
        ``path``. With no complete curve the axes say so instead of failing.
    """
    groups = km_groups(km)
    times = _as_array(km.get("time-days", ())) / DAYS_PER_YEAR
    fig, (ax, risk_ax) = plt.subplots(
        2,
        1,
        figsize=(5.6, 4.0),
        dpi=110,
        sharex=True,
        gridspec_kw={"height_ratios": [4.0, 0.28 + 0.22 * len(groups)]},
    )
    for name in groups:
        curve = km[name]
        at_risk = _as_array(curve["at-risk"])
        colour = _GROUP_COLOURS.get(name)
        n = _at_risk_label(float(at_risk[0]))
        ax.step(
            times,
            _as_array(curve["survival"]),
            where="post",
            lw=1.6,
            color=colour,
            label=f"predicted {name} (n={n})",
        )
        ax.fill_between(
            times,
            _as_array(curve["lower"]),
            _as_array(curve["upper"]),
            step="post",
            alpha=0.18,
            color=colour,
            lw=0,
        )
    if groups:
        ax.legend(loc="lower left", fontsize=8, frameon=False)
        _draw_risk_table(risk_ax, km, groups, times)
    else:
        ax.text(0.5, 0.5, "no Kaplan-Meier curve", ha="center", va="center")
    ax.set_ylim(0.0, 1.02)
    ax.set_ylabel(f"free of {endpoint}")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, lw=0.5)
    risk_ax.set_xlabel("years since scan")
    fig.tight_layout(h_pad=0.2)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _draw_risk_table(
    risk_ax: Any,
    km: Mapping[str, Any],
    groups: Sequence[str],
    times: npt.NDArray[np.float64],
) -> None:
    """Write the patients at risk at round times under the x axis."""
    ticks = _risk_table_times(float(times[-1]))
    # At-risk is "just before" a grid time: take the first grid time >= tick.
    index = np.minimum(np.searchsorted(times, ticks - 1e-9), len(times) - 1)
    risk_ax.set_yticks(range(len(groups)))
    risk_ax.set_yticklabels(groups, fontsize=7)
    risk_ax.set_ylim(len(groups) - 0.5, -0.5)
    risk_ax.set_xticks(ticks)
    risk_ax.tick_params(axis="y", length=0)
    for spine in ("top", "right", "left"):
        risk_ax.spines[spine].set_visible(False)
    for row, name in enumerate(groups):
        at_risk = _as_array(km[name]["at-risk"])
        for tick, k in zip(ticks, index, strict=True):
            risk_ax.text(
                tick,
                row,
                _at_risk_label(float(at_risk[k])),
                ha="center",
                va="center",
                fontsize=7,
                color=_GROUP_COLOURS.get(name, "0.2"),
            )
    risk_ax.set_title("at risk", fontsize=7, loc="left", pad=2)
