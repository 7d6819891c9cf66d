"""Validation at a site under differential privacy: noisy score histograms only.

With ``dp.statistics`` in the study, a site's validation reply is one noisy
per-class score histogram per model and nothing else; every per-site figure
(AUC with its DeLong interval, sensitivity and specificity) is computed from
it by the server, which is post-processing and costs no further privacy.

Privacy of one reply
--------------------
- **Contribution bound.** A patient counts with at most
  ``max_scans_per_patient`` scans (the first ones of the split, in cache
  order); the others are left out of the histograms. Adding or removing a
  patient then changes one model's two histograms (positives and negatives
  together) by at most that many counts: L1 sensitivity
  ``max_scans_per_patient``.
- **Mechanism.** Each model's histograms get Laplace noise of scale
  ``sensitivity / epsilon_per_model`` per bin, made consistent by
  :func:`~fedbone.privacy.noise.laplace_histogram`.
- **Composition.** The reply's ε is split equally over the models (basic
  composition), so the whole reply is ``epsilon``-DP. The site charges that ε
  to its ledger before the reply leaves.
- **Coarse bins.** Noise is added to every bin, so private histograms are
  coarse (default 20 bins, at least
  :data:`~fedbone.validation.histograms.MIN_NOISY_BINS`): the AUC they give is
  that of scores rounded to the bins, and the noise is spread over few bins.

Labels and scores never leave the site; the noise is drawn from the operating
system's entropy, never from the study seed (a known seed would let anyone
subtract the noise).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedbone.classifier.local import labelled_rows
from fedbone.data.cache import SiteCache
from fedbone.errors import Problem
from fedbone.models import ClassifierSpec
from fedbone.privacy.ledger import PrivacyLedger
from fedbone.privacy.noise import laplace_histogram
from fedbone.privacy.statistic_spending import plan_statistic_release
from fedbone.validation.errors import EvaluationError
from fedbone.validation.histograms import (
    MIN_NOISY_BINS,
    ScoreHistograms,
    score_histograms,
)
from fedbone.validation.site import score_models

__all__ = [
    "DpStatisticsSpec",
    "PrivateRelease",
    "bounded_positions",
    "noisy_histograms",
    "private_histograms",
    "release_private_histograms",
]

Arrays = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class DpStatisticsSpec:
    """How a site releases its validation histograms under DP.

    Parameters
    ----------
    epsilon
        ε of the whole validation reply (all models together); > 0.
    bins
        Equal-width bins over [0, 1]; even (0.5 must be a bin edge) and at
        least :data:`~fedbone.validation.histograms.MIN_NOISY_BINS`.
    max_scans_per_patient
        Scans a patient may contribute; the L1 sensitivity of a model's
        histograms.
    """

    epsilon: float
    bins: int = 20
    max_scans_per_patient: int = 1

    def __post_init__(self) -> None:
        problems: list[Problem] = []
        if not (np.isfinite(self.epsilon) and self.epsilon > 0):
            problems.append(
                Problem(
                    "epsilon-not-positive",
                    f"epsilon must be finite and > 0, got {self.epsilon!r}",
                    "epsilon",
                )
            )
        if self.bins < MIN_NOISY_BINS or self.bins % 2:
            problems.append(
                Problem(
                    "bad-bins",
                    f"{self.bins} bins; use an even number of at least "
                    f"{MIN_NOISY_BINS} (0.5 must be a bin edge)",
                    "bins",
                )
            )
        if self.max_scans_per_patient < 1:
            problems.append(
                Problem(
                    "bad-contribution-bound",
                    "max_scans_per_patient must be at least 1",
                    "max_scans_per_patient",
                )
            )
        EvaluationError.raise_if_any("DP statistics", problems)

    def epsilon_per_model(self, n_models: int) -> float:
        """Return the ε of one model's histograms when ``n_models`` share the reply."""
        return self.epsilon / max(1, n_models)


def bounded_positions(
    patient_ids: list[str], positions: np.ndarray, max_per_patient: int
) -> np.ndarray:
    """Return a mask keeping each patient's first ``max_per_patient`` positions.

    Parameters
    ----------
    patient_ids
        Patient id of every cache row.
    positions
        Cache rows considered, in order.
    max_per_patient
        Rows a patient may keep.
    """
    seen: dict[str, int] = {}
    keep = np.zeros(len(positions), dtype=bool)
    for i, position in enumerate(positions):
        patient = patient_ids[int(position)]
        count = seen.get(patient, 0)
        if count < max_per_patient:
            keep[i] = True
        seen[patient] = count + 1
    return keep


def noisy_histograms(
    labels: np.ndarray,
    scores: np.ndarray,
    *,
    bins: int,
    epsilon: float,
    sensitivity: float,
    rng: np.random.Generator,
) -> ScoreHistograms:
    """Return ε-DP per-class histograms of one model's scores.

    Parameters
    ----------
    labels, scores
        0/1 labels and probabilities in [0, 1] of the bounded scans.
    bins
        Equal-width bins over [0, 1].
    epsilon
        ε of this model's two histograms together.
    sensitivity
        L1 sensitivity (the contribution bound).
    rng
        Noise source.
    """
    exact = score_histograms(labels, scores, bins=bins, min_bins=MIN_NOISY_BINS)
    # A patient's bounded scans change the two histograms together by at most
    # ``sensitivity`` counts in L1, so noising every bin of both at that scale
    # makes the pair epsilon-DP.
    return ScoreHistograms(
        laplace_histogram(exact.positives, epsilon, sensitivity, rng),
        laplace_histogram(exact.negatives, epsilon, sensitivity, rng),
    )


def private_histograms(
    cache: SiteCache,
    task: str,
    spec: ClassifierSpec,
    models: Mapping[str, Arrays],
    *,
    split: str,
    dp: DpStatisticsSpec,
    rng: np.random.Generator | None = None,
) -> dict[str, ScoreHistograms]:
    """Score every model on ``split`` and return its noisy histograms.

    Parameters
    ----------
    cache
        The site's prepared cache.
    task
        ``bm`` or ``ca``.
    spec
        How to build the models.
    models
        Weights by model name.
    split
        The split scored.
    dp
        The reply's ε, bins and contribution bound.
    rng
        Noise source; by default one seeded from the operating system.

    Returns
    -------
    dict
        :class:`ScoreHistograms` (``dp.bins`` bins) by model name; the whole
        mapping is ``dp.epsilon``-DP.
    """
    rng = rng or np.random.default_rng(secrets.randbits(128))
    positions, _ = labelled_rows(cache, task, split)
    labels, scores = score_models(cache, task, spec, models, split)
    patients = [record.patient_id for record in cache.index]
    keep = bounded_positions(patients, positions, dp.max_scans_per_patient)
    per_model = dp.epsilon_per_model(len(models))
    return {
        name: noisy_histograms(
            labels[keep],
            model_scores[keep],
            bins=dp.bins,
            epsilon=per_model,
            sensitivity=float(dp.max_scans_per_patient),
            rng=rng,
        )
        for name, model_scores in scores.items()
    }


@dataclass(frozen=True)
class PrivateRelease:
    """A site's noisy validation histograms and what the site has spent.

    Attributes
    ----------
    histograms
        Noisy :class:`ScoreHistograms` by model name.
    epsilon
        ε of this release.
    epsilon_spent, delta_spent
        The site's total (ε, δ) after it, from its ledger.
    """

    histograms: dict[str, ScoreHistograms]
    epsilon: float
    epsilon_spent: float
    delta_spent: float


def release_private_histograms(
    cache: SiteCache,
    task: str,
    spec: ClassifierSpec,
    models: Mapping[str, Arrays],
    *,
    split: str,
    dp: DpStatisticsSpec,
    ledger: PrivacyLedger,
    run: str,
    phase: str,
    rng: np.random.Generator | None = None,
) -> PrivateRelease:
    """Check the budget, compute the noisy histograms, record the release.

    Nothing is computed when the budget cannot take ``dp.epsilon``; the
    release is in the ledger before this returns (and so before the reply
    can leave the site).

    Parameters
    ----------
    cache
        The site's prepared cache.
    task
        ``bm`` or ``ca``.
    spec
        How to build the models.
    models
        Weights by model name.
    split
        The split scored.
    dp
        The reply's ε (split evenly over the models), bins and contribution
        bound (scans per patient).
    ledger
        The site's privacy ledger the release is charged to.
    run, phase
        The study run and phase making the release, recorded in the ledger.
    rng
        Noise source; by default one seeded from the operating system.

    Raises
    ------
    BudgetExceeded
        ``budget-exceeded`` when the release would exceed the site's budget.
    LedgerTampered
        When the site's ledger does not verify.
    """
    planned = plan_statistic_release(
        ledger,
        dp.epsilon,
        details={
            "bins": dp.bins,
            "sensitivity": dp.max_scans_per_patient,
            "models": len(models),
            "split": split,
        },
    )
    histograms = private_histograms(
        cache, task, spec, models, split=split, dp=dp, rng=rng
    )
    planned.commit(run=run, phase=phase, kind="validation-histograms")
    spent = ledger.spent()
    return PrivateRelease(histograms, dp.epsilon, spent.epsilon, spent.delta)
