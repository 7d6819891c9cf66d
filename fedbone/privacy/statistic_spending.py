"""A site charges its noisy statistic releases to its ledger, before it makes them.

Statistics (the per-class score histograms of validation now, outcome counts
later) are released with the Laplace mechanism, which is pure ε-DP. They form
one accountant stream, ``statistics``, composed by basic composition: the
stream's ε is the sum of its releases' ε, its δ is 0. Across streams the
ledger adds ε and δ (so a site's total is its DP-SGD ε plus its statistics ε).

As for DP-SGD, the spend is known before anything is computed:
:func:`plan_statistic_release` refuses a release that would exceed the budget
(:class:`~fedbone.privacy.errors.BudgetExceeded`), and
:meth:`PlannedStatisticRelease.commit` records it before the reply leaves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fedbone.errors import Problem
from fedbone.privacy.errors import PrivacyError
from fedbone.privacy.ledger import LedgerEntry, PrivacyLedger

__all__ = ["STATISTICS_STREAM", "PlannedStatisticRelease", "plan_statistic_release"]

#: The accountant stream of every noisy statistic a site releases.
STATISTICS_STREAM = "statistics"
_MECHANISM = "laplace"


@dataclass(frozen=True)
class PlannedStatisticRelease:
    """A Laplace release that fits the budget, to be committed once made.

    Attributes
    ----------
    ledger
        The site's ledger.
    epsilon
        ε of this release.
    stream_epsilon
        The ``statistics`` stream's ε after it.
    details
        Mechanism parameters recorded with it (bins, sensitivity, ...).
    """

    ledger: PrivacyLedger
    epsilon: float
    stream_epsilon: float
    details: dict[str, Any] = field(default_factory=dict)

    def commit(self, *, run: str, phase: str, kind: str) -> LedgerEntry:
        """Append the release to the ledger (call before the reply leaves).

        The stream's total is read again now, so a release committed by
        another request since the plan is not overwritten; the ledger checks
        the budget once more as it appends.

        Parameters
        ----------
        run, phase
            The study run and phase making the release.
        kind
            Kebab-case release kind (e.g. ``statistic``).

        Raises
        ------
        BudgetExceeded
            When releases committed since the plan leave no room for this one.
        """
        return self.ledger.record(
            run=run,
            phase=phase,
            kind=kind,
            mechanism=_MECHANISM,
            stream=STATISTICS_STREAM,
            stream_epsilon=_stream_epsilon(self.ledger) + self.epsilon,
            delta=0.0,
            details=self.details,
        )


def _stream_epsilon(ledger: PrivacyLedger) -> float:
    """Return the ``statistics`` stream's ε so far."""
    spent = ledger.spent().per_stream.get(STATISTICS_STREAM)
    return spent.epsilon if spent is not None else 0.0


def plan_statistic_release(
    ledger: PrivacyLedger, epsilon: float, details: dict[str, Any] | None = None
) -> PlannedStatisticRelease:
    """Return the release's spend, or refuse it if the budget cannot take it.

    Parameters
    ----------
    ledger
        The site's ledger.
    epsilon
        Total ε of the release (all the noisy values it carries); > 0.
    details
        Small JSON mapping of mechanism parameters to record.

    Raises
    ------
    PrivacyError
        ``epsilon-not-positive`` for ε <= 0 or not finite.
    BudgetExceeded
        ``budget-exceeded``, saying spent, requested and the budget.
    """
    if not (epsilon > 0 and epsilon < float("inf")):
        raise PrivacyError(
            "statistic release",
            [
                Problem(
                    "epsilon-not-positive",
                    f"a noisy statistic needs a finite epsilon > 0, got {epsilon!r}",
                    "epsilon",
                )
            ],
        )
    stream_epsilon = _stream_epsilon(ledger) + epsilon
    ledger.check(STATISTICS_STREAM, stream_epsilon, 0.0)
    return PlannedStatisticRelease(ledger, epsilon, stream_epsilon, dict(details or {}))
