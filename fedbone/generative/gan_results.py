"""What the GAN phase produced: each site's selected generator, as reported.

``local`` mode: each site selected its own checkpoint and reports the
selection figures and the checkpoint's sha256. ``federated`` mode: every
round's global generator was scored by every site on its own held-out scans;
:func:`select_generator_round` picks the round with the lowest mean *relative*
FD (each site's FD divided by its mean over the rounds, so sites whose
feature spaces differ in scale weigh alike), and
:func:`federated_gan_results` describes that choice per site.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedbone.errors import FedboneError

__all__ = [
    "GanResults",
    "GanSelectionError",
    "SiteGanResult",
    "fd_by_site",
    "federated_gan_results",
    "select_generator_round",
]


class GanSelectionError(FedboneError):
    """No round of a federated GAN can be selected (no usable FD)."""


@dataclass
class SiteGanResult:
    """One site's generator: selection figures and checkpoint provenance."""

    metrics: dict[str, float]
    provenance: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        """Return the site's entry of ``gan.json``."""
        return {"metrics": self.metrics, "provenance": self.provenance}


@dataclass
class GanResults:
    """The GAN phase's results (``gan.json``).

    The federated fields (``rounds`` onwards) are set in ``federated`` mode
    only.
    """

    mode: str
    sites: dict[str, SiteGanResult] = field(default_factory=dict)
    rounds: int | None = None
    selected_round: int | None = None
    relative_fd_by_round: dict[int, float] = field(default_factory=dict)
    generator_sha256: str = ""
    generator_file: str = ""

    def to_json(self) -> dict[str, Any]:
        """Return the plain layout written to ``gan.json`` and read by the report."""
        sites = {site: result.to_json() for site, result in self.sites.items()}
        if self.mode != "federated":
            return {"mode": self.mode, "sites": sites}
        return {
            "mode": self.mode,
            "rounds": self.rounds,
            "selected-round": self.selected_round,
            "relative-fd-by-round": {
                str(r): v for r, v in sorted(self.relative_fd_by_round.items())
            },
            "generator-sha256": self.generator_sha256,
            "generator-file": self.generator_file,
            "sites": sites,
        }


def select_generator_round(
    per_site_fd: Mapping[str, Mapping[int, float]],
) -> tuple[int, dict[int, float]]:
    """Return the round with the lowest mean relative FD, and every round's score.

    Each site's FD is divided by its own mean over the rounds, so sites whose
    feature encoders differ in scale count alike; a site missing a round (it
    failed that evaluation) is left out of that round's mean.

    Raises
    ------
    GanSelectionError
        When no site reported a finite FD in any round.
    """
    scores: dict[int, list[float]] = {}
    for by_round in per_site_fd.values():
        finite = [v for v in by_round.values() if np.isfinite(v)]
        if not finite or np.mean(finite) <= 0:
            continue
        scale = float(np.mean(finite))
        for number, value in by_round.items():
            if np.isfinite(value):
                scores.setdefault(number, []).append(value / scale)
    if not scores:
        raise GanSelectionError(
            "federated GAN: no site reported a finite FD in any round; check the "
            "sites' evaluation errors (site-errors) and their held-out scans"
        )
    means = {number: float(np.mean(values)) for number, values in scores.items()}
    best = min(sorted(means), key=lambda number: means[number])
    return best, means


def fd_by_site(
    rounds: Iterable[Mapping[str, Any]], model: str
) -> dict[str, dict[int, float]]:
    """Return each site's FD per round from the round table's evaluate entries.

    Parameters
    ----------
    rounds
        The study's round table (``rounds.json`` entries).
    model
        The federated GAN's model name in that table.
    """
    per_site: dict[str, dict[int, float]] = {}
    for entry in rounds:
        if entry["model"] == model and entry["kind"] == "evaluate":
            fd = float(entry.get("fd", float("nan")))
            per_site.setdefault(entry["site"], {})[int(entry["round"])] = fd
    return per_site


def federated_gan_results(
    sites: Sequence[str],
    per_site_fd: Mapping[str, Mapping[int, float]],
    selection: tuple[int, Mapping[int, float]],
    *,
    rounds: int,
    steps: int,
    generator: tuple[str, str],
) -> GanResults:
    """Describe the selected federated generator per site.

    Parameters
    ----------
    sites
        The GAN sites, in the order to report them.
    per_site_fd
        Each site's FD per round (:func:`fd_by_site`).
    selection
        The selected round and every round's score
        (:func:`select_generator_round`).
    rounds, steps
        The GAN's rounds and total local steps (a round is ``steps // rounds``
        local steps, at least one).
    generator
        The selected generator's sha256 and the file it is kept in.
    """
    best, scores = selection
    digest, path = generator
    provenance = {"checkpoint-sha256": digest, "round": str(best)}
    per_round = max(1, steps // rounds)
    results = GanResults(
        mode="federated",
        rounds=rounds,
        selected_round=best,
        relative_fd_by_round=dict(scores),
        generator_sha256=digest,
        generator_file=path,
    )
    for site in sites:
        fd = per_site_fd.get(site, {})
        results.sites[site] = SiteGanResult(
            metrics={
                "best-fd": fd.get(best, float("nan")),
                "best-step": float(best * per_round),
                **{f"fd-step-{r * per_round}": v for r, v in sorted(fd.items())},
            },
            provenance=dict(provenance),
        )
    return results
