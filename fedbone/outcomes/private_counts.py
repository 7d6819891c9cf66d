"""Survival counts under differential privacy: optional Laplace noise, ledger-charged.

A site that must not release even its exact grid counts sends them noised
instead; the server's Kaplan-Meier, log-rank and everything else computed from
them are post-processing and cost no further privacy.

Privacy of one reply
--------------------
- **Neighbouring relation.** Add or remove one patient, as for the validation
  histograms (:class:`~fedbone.validation.private.DpStatisticsSpec`)
  and the ledger's DP-SGD streams, so the ``statistics`` stream composes with
  them.
- **Sensitivity.** The outcome cohort holds one record per patient (the first
  scan only), and a record adds 1 to exactly one cell of one endpoint's table:
  an event or a censoring, in one interval, of one group. Adding or removing a
  patient changes the table by 1 in L1
  (:data:`~fedbone.privacy.noise.HISTOGRAM_SENSITIVITY`), whatever the
  validation's ``max_scans_per_patient``: that bound is on scans, and this
  cohort has already kept one scan per patient.
- **Mechanism.** Every cell gets Laplace noise of scale ``1 / epsilon``. Per
  group, the cells are read as one "leaving" sequence (interval 1's events, its
  censorings, interval 2's events, ...) and made consistent by
  :func:`~fedbone.privacy.noise.laplace_histogram`: its noisy cumulative sums,
  the patients who have left the risk set, are projected onto non-decreasing,
  non-negative sequences, rounded and differenced. The counts stay
  non-negative integers, so the numbers at risk (derived from them) never
  increase and never go negative.
- **Composition.** Every endpoint's table counts the same patients, so the
  reply's ε is split equally over the endpoints (basic composition) and
  charged to the site's ledger before the reply leaves.

Why the interleaved sequence: measured on phantom cohorts (300 patients,
100 predicted positive, planted HR 3.76 for death, 10-year grid, ε = 1, 20
cohorts x 50 draws) it is as accurate for Kaplan-Meier at one year as noising
each group's event and censoring vectors separately (mean absolute difference
0.026 vs 0.028 on a 30-day grid, 0.050 for both on a 7-day grid), biases the
log-rank statistic less (mean change -1.5 vs +2.3 on 30 days, +1.6 vs +7.7 on
7 days) and invents fewer patients (+12 vs +17 on 30 days). Rounding and
clipping each cell instead invents hundreds (+197 on 30 days, +934 on 7).

What it costs at ε = 1 on that cohort (about 31 deaths): one-year survival
moves by 0.026 on average on a 30-day grid (95th percentile 0.052) and 0.050
on a 7-day grid (0.109); the noise pulls the log-rank statistic towards 0
(median ratio to exact 0.67 on 30 days, 0.50 on 7), so a difference that is
exactly significant stays so in 72% of draws on 30 days and 61% on 7. Coarse
grids and a horizon near the longest follow-up keep the noise down: every
cell, empty or not, is noised.

The noise is drawn from the operating system's entropy, never from the study
seed (a known seed would let anyone subtract the noise).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedbone.errors import Problem
from fedbone.outcomes.survival_grid import GroupCounts, SiteSurvivalCounts
from fedbone.privacy.ledger import PrivacyLedger
from fedbone.privacy.noise import HISTOGRAM_SENSITIVITY, laplace_histogram
from fedbone.privacy.statistic_spending import plan_statistic_release
from fedbone.validation.errors import EvaluationError
from fedbone.validation.private import DpStatisticsSpec

__all__ = [
    "OUTCOME_COUNTS_KIND",
    "PrivateOutcomeRelease",
    "noisy_survival_counts",
    "release_noisy_survival_counts",
]

#: Ledger ``kind`` of a noisy survival-count release.
OUTCOME_COUNTS_KIND = "outcome-counts"


def noisy_survival_counts(
    counts: SiteSurvivalCounts,
    epsilon: float,
    *,
    rng: np.random.Generator | None = None,
) -> SiteSurvivalCounts:
    """Return ε-DP survival counts: Laplace noise on every cell, made consistent.

    Parameters
    ----------
    counts
        One endpoint's exact counts at one site, one record per patient.
    epsilon
        ε of the whole table (every group, events and censorings); > 0.
    rng
        Noise source; by default one seeded from the operating system. Pass
        one only in tests.

    Returns
    -------
    SiteSurvivalCounts
        Same grid and groups; non-negative integer counts whose numbers at
        risk are their sums, as for exact counts.

    Raises
    ------
    PrivacyError
        ``epsilon-not-positive`` for ε <= 0 or not finite.
    """
    rng = rng or np.random.default_rng(secrets.randbits(128))
    noisy = {}
    for name, group in counts.groups.items():
        # Column 0 events, column 1 censorings: raveled, interval by interval,
        # in the order patients leave the risk set, so the projection keeps
        # the cumulative departures (hence the numbers at risk) monotone.
        leaving = np.stack([group.events, group.censored], axis=1).ravel()
        released = laplace_histogram(leaving, epsilon, HISTOGRAM_SENSITIVITY, rng)
        by_interval = released.reshape(-1, 2)
        noisy[name] = GroupCounts(by_interval[:, 0], by_interval[:, 1])
    return SiteSurvivalCounts(counts.grid, noisy)


@dataclass(frozen=True)
class PrivateOutcomeRelease:
    """A site's noisy survival counts and what the site has spent.

    Attributes
    ----------
    counts
        Noisy :class:`~fedbone.outcomes.survival_grid.SiteSurvivalCounts`
        by endpoint name.
    epsilon
        ε of this release (all endpoints together).
    epsilon_per_endpoint
        ε of each endpoint's table.
    epsilon_spent, delta_spent
        The site's total (ε, δ) after it, from its ledger.
    """

    counts: dict[str, SiteSurvivalCounts]
    epsilon: float
    epsilon_per_endpoint: float
    epsilon_spent: float
    delta_spent: float


def release_noisy_survival_counts(
    counts_by_endpoint: Mapping[str, SiteSurvivalCounts],
    dp: DpStatisticsSpec,
    ledger: PrivacyLedger,
    *,
    run: str,
    phase: str,
    rng: np.random.Generator | None = None,
) -> PrivateOutcomeRelease:
    """Check the budget, noise every endpoint's counts, record the release.

    Nothing is drawn when the budget cannot take ``dp.epsilon``; the release
    is in the ledger before this returns (and so before the reply can leave
    the site). Only ``dp.epsilon`` is used: the outcome cohort already holds
    one record per patient, and the counts have no bins.

    Parameters
    ----------
    counts_by_endpoint
        Exact counts by endpoint name (``death``, ``hf``), one record per
        patient in each.
    dp
        The site's DP settings; ``dp.epsilon`` is the whole reply's ε, split
        equally over the endpoints.
    ledger
        The site's privacy ledger.
    run, phase
        Recorded with the ledger entry.
    rng
        Noise source; by default one seeded from the operating system.

    Returns
    -------
    PrivateOutcomeRelease
        Noisy counts by endpoint and the site's spending after the release.

    Raises
    ------
    EvaluationError
        ``no-endpoints`` for an empty mapping.
    BudgetExceeded
        ``budget-exceeded`` when the release would exceed the site's budget.
    LedgerTampered
        When the site's ledger does not verify.
    """
    if not counts_by_endpoint:
        EvaluationError.raise_if_any(
            "noisy survival counts",
            [
                Problem(
                    "no-endpoints",
                    "no endpoint counts to release; pass at least one endpoint",
                )
            ],
        )
    endpoints = sorted(counts_by_endpoint)
    per_endpoint = dp.epsilon / len(endpoints)
    planned = plan_statistic_release(
        ledger,
        dp.epsilon,
        details={
            "sensitivity": HISTOGRAM_SENSITIVITY,
            "endpoints": endpoints,
            "intervals": {
                name: counts_by_endpoint[name].grid.intervals for name in endpoints
            },
        },
    )
    rng = rng or np.random.default_rng(secrets.randbits(128))
    noisy = {
        name: noisy_survival_counts(counts_by_endpoint[name], per_endpoint, rng=rng)
        for name in endpoints
    }
    planned.commit(run=run, phase=phase, kind=OUTCOME_COUNTS_KIND)
    spent = ledger.spent()
    return PrivateOutcomeRelease(
        noisy, dp.epsilon, per_endpoint, spent.epsilon, spent.delta
    )
