"""A site charges its DP-SGD releases to its ledger, before it makes them.

Every DP-SGD training a site runs -- a classifier round of any model, a GAN's
discriminator steps -- is a subsampled Gaussian mechanism on the same scans.
Rényi-DP composes such mechanisms exactly by adding their RDP curves, so the
site keeps **one** accountant stream, ``dp-sgd``, for all of them: its
history (noise multiplier, sampling rate, steps per release) is read back from
the ledger itself, which is hash-chained, so the accounting cannot silently
lose a release. ε is evaluated at the site's budget δ.

The order is what makes the budget binding:

1. :func:`plan_sgd_release` computes the ε the stream will have *after* the
   release (the spend is known before training: noise, rate and steps are) and
   refuses with :class:`~fedbone.privacy.errors.BudgetExceeded` if it would
   exceed the budget -- nothing is trained, nothing leaves;
2. the site trains;
3. :meth:`PlannedRelease.commit` appends the release to the ledger, before the
   reply (the weights) is handed to the egress guard. It holds the ledger's
   lock from reading the stream's history through the budget check to the
   append, so concurrent releases are each composed after the one before.

A site's ledger is always opened with the site's secret
(:func:`~fedbone.privacy.site_seal.open_site_secret_for`), which keys the
ledger's lines and head: see :mod:`fedbone.privacy.ledger`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fedbone.config.privacy import DpPhaseSettings
from fedbone.config.site import SiteConfig
from fedbone.errors import Problem
from fedbone.privacy.budget import PrivacyBudget
from fedbone.privacy.dp_gan import DpGanSpec
from fedbone.privacy.dp_sgd import AccountantState, DpSgdSpec
from fedbone.privacy.errors import PrivacyError
from fedbone.privacy.ledger import LedgerEntry, PrivacyLedger
from fedbone.privacy.site_seal import open_site_secret_for

__all__ = [
    "SGD_STREAM",
    "PlannedRelease",
    "open_site_ledger",
    "open_site_secret_for",
    "plan_gan_release",
    "plan_sgd_release",
    "refuse_without_dp",
    "sgd_history",
]

#: The one accountant stream of all DP-SGD releases from a site's scans.
SGD_STREAM = "dp-sgd"
_MECHANISM = "dp-sgd-rdp"


def open_site_ledger(site: SiteConfig, n_training: int) -> PrivacyLedger:
    """Open the site's ledger under its configured budget, keyed by its secret.

    Raises
    ------
    PrivacyError
        ``no-privacy-budget`` when the site config sets none: a site releases
        DP-trained weights only under a budget it chose.
    PkiError
        When the site's secret cannot be loaded (see
        :func:`open_site_secret_for`).
    LedgerTampered
        When the existing ledger does not verify.
    """
    privacy = site.privacy
    if privacy.epsilon_budget is None:
        raise PrivacyError(
            site.site_id,
            [
                Problem(
                    "no-privacy-budget",
                    "the study asks for DP training but this site has no privacy "
                    "budget; set privacy.budget.epsilon in the site config",
                    "privacy.budget",
                )
            ],
        )
    budget = PrivacyBudget.for_site(
        privacy.epsilon_budget, privacy.delta_budget, n_training
    )
    return PrivacyLedger(privacy.ledger, budget, open_site_secret_for(site))


def refuse_without_dp(site: SiteConfig, *, fix: str | None = None) -> None:
    """Refuse to release weights trained without DP at a site with a budget.

    A site that set a privacy budget has said its scans leave only under
    differential privacy; a non-private training request would void that.

    Parameters
    ----------
    site
        The site's config.
    fix
        What the study could do instead (default: set ``dp.classifier``).

    Raises
    ------
    PrivacyError
        ``dp-required``.
    """
    if site.privacy.epsilon_budget is not None:
        remedy = fix or "the study must set dp.classifier"
        raise PrivacyError(
            site.site_id,
            [
                Problem(
                    "dp-required",
                    "this site has a privacy budget and releases model weights "
                    f"only when trained with DP-SGD; {remedy} (or the site must "
                    "remove privacy.budget)",
                    "privacy.budget",
                )
            ],
        )


def sgd_history(entries: list[LedgerEntry]) -> AccountantState:
    """Rebuild the ``dp-sgd`` stream's accountant history from ledger entries.

    Raises
    ------
    PrivacyError
        ``invalid-sgd-details`` when a ``dp-sgd`` entry lacks a positive
        noise multiplier, a sampling rate in (0, 1] or a step count.
    """
    state = AccountantState(accountant="rdp")
    for entry in entries:
        if entry.stream != SGD_STREAM:
            continue
        details = entry.details
        noise = _positive_real(details.get("noise_multiplier"))
        rate = _positive_real(details.get("sample_rate"))
        steps = details.get("steps")
        if (
            noise is None
            or rate is None
            or rate > 1
            or not isinstance(steps, int)
            or isinstance(steps, bool)
        ):
            raise PrivacyError(
                SGD_STREAM,
                [
                    Problem(
                        "invalid-sgd-details",
                        f"ledger entry {entry.seq} of stream {SGD_STREAM!r} does not "
                        "give noise_multiplier, sample_rate and steps: its history "
                        "cannot be composed",
                        f"seq {entry.seq}",
                    )
                ],
            )
        state = state.extended(noise, rate, steps)
    return state


def _positive_real(value: object) -> float | None:
    """Return ``value`` as a float if it is a finite number > 0, else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0 < value < float("inf") else None


@dataclass(frozen=True)
class PlannedRelease:
    """A DP-SGD release that fits the budget, to be committed once made."""

    ledger: PrivacyLedger
    before: AccountantState
    after: AccountantState
    epsilon: float
    delta: float
    noise_multiplier: float
    sample_rate: float
    steps: int

    def commit(self, *, run: str, phase: str, kind: str) -> LedgerEntry:
        """Append the release to the ledger (call before the reply leaves).

        The stream's history is read again under the ledger's lock, which is
        held through the budget check and the append: if another release was
        committed since the plan (or is being committed now), this one is
        composed after it and charged its own increment.

        Parameters
        ----------
        run, phase
            The study run and phase making the release.
        kind
            Kebab-case release kind (``classifier-round``, ``gan-round``).

        Raises
        ------
        BudgetExceeded
            When releases committed since the plan leave no room for this one.
        """

        def stream_epsilon_of(entries: list[LedgerEntry]) -> float:
            now = sgd_history(entries)
            if now == self.before:
                return self.epsilon
            after = now.extended(self.noise_multiplier, self.sample_rate, self.steps)
            return after.epsilon(self.delta)

        details: dict[str, Any] = {
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
        }
        return self.ledger.record_composed(
            run=run,
            phase=phase,
            kind=kind,
            mechanism=_MECHANISM,
            stream=SGD_STREAM,
            stream_epsilon_of=stream_epsilon_of,
            delta=self.delta,
            details=details,
        )


def plan_sgd_release(
    ledger: PrivacyLedger, noise_multiplier: float, sample_rate: float, steps: int
) -> PlannedRelease:
    """Return the release's spend, or refuse it if the budget cannot take it.

    Parameters
    ----------
    ledger
        The site's ledger; its ``dp-sgd`` history is composed with this
        release and ε is taken at the budget's δ.
    noise_multiplier
        Gaussian noise std over the clipping norm of the release's steps.
    sample_rate
        Poisson sampling rate of each step.
    steps
        DP-SGD steps the release takes.

    Raises
    ------
    BudgetExceeded
        ``budget-exceeded``, saying spent, requested and the budget.
    """
    before = sgd_history(ledger.entries())
    after = before.extended(noise_multiplier, sample_rate, steps)
    delta = ledger.budget.delta
    epsilon = after.epsilon(delta)
    ledger.check(SGD_STREAM, epsilon, delta)
    return PlannedRelease(
        ledger, before, after, epsilon, delta, noise_multiplier, sample_rate, steps
    )


def plan_gan_release(
    ledger: PrivacyLedger,
    dp: DpPhaseSettings,
    *,
    batch_size: int,
    n_training: int,
    steps: int,
    planned_steps: int,
) -> tuple[PlannedRelease, DpGanSpec]:
    """Plan the discriminator's DP-SGD steps of one GAN call at a site.

    The discriminator samples each real scan with ``q = batch / n``; with a
    target ε the noise spends it over ``planned_steps`` (all rounds). Returns
    the checked release and the trainer's DP spec with that noise fixed.

    Parameters
    ----------
    ledger
        The site's ledger; ε is taken at its budget's δ.
    dp
        The study's DP settings of the GAN: a fixed noise multiplier or a
        target ε, and the clipping norm.
    batch_size
        Real scans per discriminator step.
    n_training
        The site's training scans for the GAN.
    steps
        Discriminator steps of this call.
    planned_steps
        Discriminator steps of the whole run (all rounds); spreads a target ε.

    Raises
    ------
    BudgetExceeded
        When the steps would take the site over its budget.
    """
    delta = ledger.budget.delta
    max_grad_norm = dp.max_grad_norm
    sample_rate = min(1.0, batch_size / max(1, n_training))
    noise_multiplier = dp.noise_multiplier
    if noise_multiplier is None:
        target = DpGanSpec(
            sgd=DpSgdSpec(
                target_epsilon=dp.target_epsilon,
                max_grad_norm=max_grad_norm,
                delta=delta,
            )
        )
        noise_multiplier = target.noise_multiplier(sample_rate, planned_steps)
    release = plan_sgd_release(ledger, noise_multiplier, sample_rate, steps)
    spec = DpGanSpec(
        sgd=DpSgdSpec(
            noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm, delta=delta
        )
    )
    return release, spec
