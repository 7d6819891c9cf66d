"""What the study asks of a site: one typed, frozen request per kind of work.

The federation layer (:mod:`fedbone.federation.requests`) decodes a message's
``config`` record into one of these once; :class:`fedbone.site.Site` then works
from plain Python and library spec types and never sees a Flower record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedbone.classifier.local import TrainSpec
from fedbone.classifier.rounds import DpRoundSpec
from fedbone.config.enhance import EnhanceSettings
from fedbone.config.privacy import DpPhaseSettings
from fedbone.config.synthetic import GanSettings, SynthesisSettings
from fedbone.enhance.site_enhance import EnhanceEvaluation
from fedbone.models import ClassifierSpec
from fedbone.validation.histograms import ScoreHistograms
from fedbone.validation.private import DpStatisticsSpec

__all__ = [
    "Arrays",
    "ClassifierEvaluateRequest",
    "ClassifierTrainRequest",
    "CoxRequest",
    "CrossAuditRequest",
    "EnhanceComponentsRequest",
    "EnhanceEvaluateRequest",
    "EnhanceTrainRequest",
    "EnhanceValidateRequest",
    "EvaluateRequest",
    "FoldRequest",
    "GanEvaluateRequest",
    "GanRequest",
    "OutcomesRequest",
    "PairedRequest",
    "ReceiveSyntheticRequest",
    "ReceivedGenerator",
    "SynthesizeRequest",
    "TrainRequest",
    "UmapRequest",
    "ValidateRequest",
]

Arrays = Mapping[str, np.ndarray]
"""A model's (or a payload's) arrays by name."""


@dataclass(frozen=True)
class FoldRequest:
    """Train or score with one cross-validation fold held out (an ensemble's model).

    ``fold`` of ``folds`` (by patient, stratified by the task's label, seeded
    by ``seed``) becomes the validation split; the other folds train.
    """

    fold: int
    folds: int
    seed: int


@dataclass(frozen=True)
class ClassifierTrainRequest:
    """One federated classifier round (``train``, every phase but ``gan``).

    ``dp`` set: DP-SGD charged to the site's ledger; unset: plain training,
    refused at a site with a privacy budget. ``synthetic_ratio`` and
    ``synthetic_only`` mix the run's received synthetic pool into training.
    """

    task: str
    run_name: str
    phase: str
    classifier: ClassifierSpec
    training: TrainSpec
    dp: DpRoundSpec | None
    fedbn: bool
    local_state: dict[str, np.ndarray] | None
    synthetic_ratio: float
    synthetic_only: bool
    seed: int
    fold: FoldRequest | None = None


@dataclass(frozen=True)
class GanRequest:
    """Train a GAN: one federated round (``train`` in phase ``gan``) or a site's own.

    ``dp`` set: the discriminator trains under DP-SGD charged to the ledger;
    unset: refused at a site with a privacy budget.
    """

    task: str
    run_name: str
    gan: GanSettings
    classifier: ClassifierSpec
    training: TrainSpec
    seed: int
    dp: DpPhaseSettings | None


@dataclass(frozen=True)
class EnhanceTrainRequest:
    """One federated round of an enhancer (``train`` in phase ``enhance``).

    ``method`` is one of :data:`fedbone.config.enhance.ENHANCE_METHODS`
    (``gaussian``: fit the filter's width per level on the training pairs).
    """

    task: str
    run_name: str
    method: str
    enhance: EnhanceSettings
    seed: int


TrainRequest = ClassifierTrainRequest | GanRequest | EnhanceTrainRequest
"""What ``train`` asks: a classifier, a federated GAN or an enhancer round."""


@dataclass(frozen=True)
class ClassifierEvaluateRequest:
    """Score the received classifier on the validation split."""

    task: str
    classifier: ClassifierSpec
    fedbn: bool
    local_state: dict[str, np.ndarray] | None
    fold: FoldRequest | None = None


@dataclass(frozen=True)
class GanEvaluateRequest:
    """Score the received global GAN (FD, KID, precision/recall) on held-out scans."""

    gan: GanSettings
    run_name: str
    seed: int


@dataclass(frozen=True)
class EnhanceEvaluateRequest:
    """Score the received enhancer on the ``val`` split's pairs (``enhance``)."""

    run_name: str
    method: str
    enhance: EnhanceSettings
    seed: int


EvaluateRequest = (
    ClassifierEvaluateRequest | GanEvaluateRequest | EnhanceEvaluateRequest
)
"""What ``evaluate`` asks: a classifier, the federated GAN or an enhancer."""


@dataclass(frozen=True)
class ValidateRequest:
    """Score every model on a split: exact metrics, or noisy histograms under DP."""

    task: str
    run_name: str
    phase: str
    classifier: ClassifierSpec
    models: dict[str, dict[str, np.ndarray]]
    split: str
    bins: int
    n_bootstrap: int
    threshold: float
    pairs: list[tuple[str, str]]
    dp: DpStatisticsSpec | None


@dataclass(frozen=True)
class PairedRequest:
    """DeLong components of model pairs against the server's pooled histograms."""

    task: str
    classifier: ClassifierSpec
    models: dict[str, dict[str, np.ndarray]]
    pooled: dict[str, ScoreHistograms]
    split: str
    pairs: list[tuple[str, str]]


@dataclass(frozen=True)
class ReceivedGenerator:
    """The federated generator sent with ``synthesize``, checked before use."""

    gan: GanSettings
    arrays: dict[str, np.ndarray]
    sha256: str
    round_number: int


@dataclass(frozen=True)
class SynthesizeRequest:
    """Generate, curate and audit synthetic images (with the federated generator)."""

    task: str
    run_name: str
    settings: SynthesisSettings
    classifier: ClassifierSpec
    seed: int
    generator: ReceivedGenerator | None


@dataclass(frozen=True)
class ReceiveSyntheticRequest:
    """The server's synthetic pool for this run, with its announced digest."""

    run_name: str
    images: np.ndarray
    class_ids: np.ndarray
    pool_sha256: str


@dataclass(frozen=True)
class UmapRequest:
    """Coarse UMAP density grids of real vs released synthetic images."""

    run_name: str
    gan: GanSettings
    seed: int


@dataclass(frozen=True)
class CrossAuditRequest:
    """Images another site released, to audit against this site's scans.

    Audited only if ``signature`` is ``released_by``'s signature of exactly
    these images and class ids in this run
    (:mod:`fedbone.generative.release_signature`).
    """

    images: np.ndarray
    class_ids: np.ndarray
    released_by: str
    run_name: str
    signature: str


@dataclass(frozen=True)
class OutcomesRequest:
    """Score the outcome cohort with the final model; release its aggregates."""

    run_name: str
    phase: str
    classifier: ClassifierSpec
    model: dict[str, np.ndarray]
    endpoints: tuple[str, ...]
    split: str
    threshold: float
    resolution_days: float
    horizon_days: float
    ties: str
    dp: DpStatisticsSpec | None


@dataclass(frozen=True)
class CoxRequest:
    """One Newton step of the stratified Cox model at the site's stratum."""

    run_name: str
    endpoint: str
    cox_model: str
    beta: list[float]
    ties: str


EnhanceValidateRequest = EnhanceEvaluation
"""Evaluate every enhancer at every level (``enhance_evaluate``)."""


@dataclass(frozen=True)
class EnhanceComponentsRequest:
    """DeLong components of image sets vs standard scans (``enhance_components``)."""

    run_name: str
    pooled: dict[str, ScoreHistograms]
    pairs: list[tuple[str, str]]
