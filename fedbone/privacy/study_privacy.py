"""The study's privacy table: what every site spent, as its replies reported.

Each site keeps its own privacy ledger and reports its running totals with
its replies; the coordinating centre only collects them, per site, for the
report (``privacy.json``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["add_statistics_spending", "privacy_by_site"]


def privacy_by_site(
    rounds: Iterable[Mapping[str, Any]],
) -> dict[str, dict[str, float]]:
    """Return each site's cumulative DP-SGD (ε, δ) as its last reply reported.

    The site's ledger composes every DP-SGD release it made (all models, all
    rounds), so the latest ``dp-epsilon`` a site sent is its total.
    """
    spent: dict[str, dict[str, float]] = {}
    for entry in rounds:
        if "dp-epsilon" in entry:
            spent[entry["site"]] = {
                "epsilon": float(entry["dp-epsilon"]),
                "delta": float(entry.get("dp-delta", float("nan"))),
                "noise-multiplier": float(entry.get("dp-noise-multiplier", 0.0)),
            }
    return spent


def add_statistics_spending(
    privacy: dict[str, dict[str, float]],
    spent: Mapping[str, Mapping[str, float]],
) -> None:
    """Add each site's statistics ε and ledger total to ``privacy`` (in place).

    A site's statistics ε adds up over the phases that released noisy
    statistics (validation, outcomes); its ledger total is the latest.
    """
    for site, values in spent.items():
        row = privacy.setdefault(site, {})
        row["statistics-epsilon"] = (
            row.get("statistics-epsilon", 0.0) + values["statistics-epsilon"]
        )
        row["epsilon-total"] = values["epsilon-spent"]
        row["delta-total"] = values["delta-spent"]
