"""What a site's work produced, beyond the library's own result types."""

from __future__ import annotations

from dataclasses import dataclass

from fedbone.outcomes.release import EndpointRelease
from fedbone.outcomes.survival_grid import SiteSurvivalCounts
from fedbone.validation.histograms import ScoreHistograms

__all__ = ["OutcomesResult", "StatisticsSpend", "StoredPool", "ValidationResult"]


@dataclass(frozen=True)
class StatisticsSpend:
    """What a noisy statistics release cost, and the site's total spend after it.

    Attributes
    ----------
    epsilon
        ε of this release.
    epsilon_spent, delta_spent
        The site's total (ε, δ) after it, from its ledger.
    """

    epsilon: float
    epsilon_spent: float
    delta_spent: float


@dataclass(frozen=True)
class ValidationResult:
    """Exact metrics by record name, or (under DP) noisy histograms by model.

    Attributes
    ----------
    metrics
        Exact per-model and per-pair figures (empty under DP).
    noisy_histograms
        Noisy per-class score histograms by model name (empty without DP).
    spend
        The DP release's cost (``None`` without DP).
    """

    metrics: dict[str, dict[str, float | int | list[int]]]
    noisy_histograms: dict[str, ScoreHistograms]
    spend: StatisticsSpend | None


@dataclass(frozen=True)
class StoredPool:
    """How much of the server's synthetic pool the site received and kept."""

    n_received: int
    n_stored: int
    pool_sha256: str


@dataclass(frozen=True)
class OutcomesResult:
    """A site's outcome aggregates.

    Attributes
    ----------
    releases
        Per endpoint: survival counts, site Cox fits, PH checks, status.
    noisy_counts
        Under DP, the noisy survival counts that replace the exact ones.
    spend
        The DP release's cost (``None`` without DP).
    """

    releases: dict[str, EndpointRelease]
    noisy_counts: dict[str, SiteSurvivalCounts]
    spend: StatisticsSpend | None
