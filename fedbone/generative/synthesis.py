"""Synthesis, curation and audit at the site that owns the generator.

Synthesis works in batches until every requested class has ``n_per_class``
images that passed curation and the audit, or ``max_attempts`` batches were
made (at most ``max_attempts * n_per_class`` images generated per class):

1. **Generate** the images each short class still needs; the first batch
   makes ``n_per_class`` per class, a later one as many as the class's yield
   so far says it needs (at most ``n_per_class``), from a seed derived from
   ``spec.seed`` and the batch number (the same seed gives the same result).
2. **Curate** (Haberl et al. 2025): the site's classifier for the study task
   (``bm`` or ``ca``) scores every image; an image is kept only if the
   classifier agrees with the label its class implies for that task
   (``bm = class // 2``, ``ca = class % 2``, see
   :func:`fedbone.generative.trainer.class_labels`). The other task's label is not
   checked: curation uses the one classifier the study trains.
3. **Audit** every kept image against all of the site's training scans with a
   :class:`fedbone.generative.audit.similarity.SiteAuditor` (calibrated once,
   on the first batch); released images beyond a class's quota are dropped
   (``n-over-quota``).
4. **Membership** is tested once, over every audited image of every batch;
   optionally the whole release is withheld when its AUC exceeds a ceiling.

A class still short after the last batch is reported (``n-shortfall-class-<c>``)
and logged; synthesis never returns more than ``n_per_class`` images of a
class. The batches are made in :mod:`fedbone.generative.synthesis_batches`;
this module joins them, tests membership and counts. Only released images,
their class ids and :meth:`SynthesisResult.summary` (counts and audit
aggregates, never an image or an index) may leave the site.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from fedbone.data.cache import SiteCache
from fedbone.generative.audit.similarity import (
    AuditResult,
    AuditThresholds,
    FeatureFn,
    MsSsimFn,
    SiteAuditor,
    combine_audits,
)
from fedbone.generative.synthesis_batches import (
    ClassQuota,
    ImageGenerator,
    SynthesisBatch,
    SynthesisSpec,
    fill_quotas,
    warn_shortfalls,
)

__all__ = [
    "ImageGenerator",
    "SynthesisResult",
    "SynthesisSpec",
    "site_audit_inputs",
    "synthesize",
]

logger = logging.getLogger(__name__)

_HELD_OUT_SPLITS = ("val", "test")


@dataclass(frozen=True)
class SynthesisResult:
    """Released synthetic images and the record of how they were chosen.

    Parameters
    ----------
    images
        ``(n-released, H, W)`` float32 in [0, 1]: released images only.
    class_ids
        Conditioning class of each released image.
    audit
        The audit of every curated image of every batch (site-only; empty
        when curation kept nothing and no audit ran).
    counts
        ``n-generated``, ``n-curated-out``, ``n-audited``, ``n-blocked``,
        ``n-over-quota``, ``n-withheld-membership`` and ``n-released``
        (``n-audited`` is the sum of the four after it); per class ``c``:
        ``n-generated-class-c``, ``n-released-class-c`` and
        ``n-shortfall-class-c`` (quota minus what curation and the audit
        passed, 0 when filled).
    checkpoint_sha256
        Digest of the generator checkpoint (provenance).
    membership_auc_ceiling
        The membership ceiling applied (``nan`` when off).
    curation_agreement
        Per class: the fraction of its generated images the curation
        classifier agreed with.
    curation_val_auc
        Validation AUC of the curation classifier (``nan`` when unknown).
    """

    images: np.ndarray
    class_ids: np.ndarray
    audit: AuditResult
    counts: dict[str, int]
    checkpoint_sha256: str
    membership_auc_ceiling: float = math.nan
    curation_agreement: dict[int, float] = field(default_factory=dict)
    curation_val_auc: float = math.nan

    @property
    def passed(self) -> bool:
        """True when at least one image is released (the batch may leave)."""
        return self.counts["n-released"] > 0

    def summary(self) -> dict[str, float | int | bool | str | list[float] | list[int]]:
        """Return what may leave the site: counts, audit aggregates, verdict.

        The audit's :meth:`~fedbone.generative.audit.similarity.AuditResult.summary`
        (its ``n-released`` and ``n-blocked`` replaced by the final counts), the
        counts, ``curation-agreement-class-<c>``, ``curation-val-auc``,
        ``membership-auc-ceiling``, ``membership-passed``, ``passed`` and
        ``checkpoint-sha256``. No image, no index.
        """
        summary: dict[str, float | int | bool | str | list[float] | list[int]] = {}
        summary.update(self.audit.summary())
        summary.update(self.counts)
        for c, agreement in self.curation_agreement.items():
            summary[f"curation-agreement-class-{c}"] = agreement
        summary["curation-val-auc"] = self.curation_val_auc
        summary["membership-auc-ceiling"] = self.membership_auc_ceiling
        summary["membership-passed"] = self.counts["n-withheld-membership"] == 0
        summary["passed"] = self.passed
        summary["checkpoint-sha256"] = self.checkpoint_sha256
        return summary


def synthesize(
    trainer: ImageGenerator,
    spec: SynthesisSpec,
    *,
    classify: Callable[[np.ndarray], np.ndarray],
    training: np.ndarray,
    training_patient_ids: Sequence[str],
    held_out: np.ndarray | None,
    thresholds: AuditThresholds,
    checkpoint_sha256: str,
    features: FeatureFn | None = None,
    ms_ssim_fn: MsSsimFn | None = None,
    device: str = "cpu",
    membership_auc_ceiling: float | None = None,
    curation_val_auc: float = math.nan,
) -> SynthesisResult:
    """Generate, curate and audit synthetic images until each class is filled.

    Batches are made until every class of ``spec`` has ``spec.n_per_class``
    curated and released images or ``spec.max_attempts`` batches were made;
    every curated image of every batch is kept in memory until the membership
    test (at most ``max_attempts * n_per_class`` per class).

    Parameters
    ----------
    trainer
        The selected generator (anything with ``generate(labels, seed=,
        truncation=)``, e.g. a :class:`~fedbone.generative.trainer.GanTrainer`).
    spec
        Classes, quota, curation task, truncation, seed and attempts.
    classify
        ``(N, H, W) -> (N,)`` probability that each image is positive for
        ``spec.curate_task``, from the site's classifier of that study task;
        an image is kept iff ``(p >= 0.5)`` equals its class's label.
    training, training_patient_ids
        All of the site's training scans (float32 in [0, 1]) and one patient
        id each (see :func:`site_audit_inputs`).
    held_out
        Real scans the generator never saw, for the membership test; ``None``
        or an empty stack skips it.
    thresholds
        The site's release rule.
    checkpoint_sha256
        Digest of the generator checkpoint, carried into the summary.
    features, ms_ssim_fn, device
        Passed to :class:`~fedbone.generative.audit.similarity.SiteAuditor`.
    membership_auc_ceiling
        Withhold every image when the membership AUC (over every audited
        image) exceeds this (``None``: report the AUC only). With few scans
        the AUC is noisy; 0.6 is a cautious choice for hundreds of held-out
        scans.
    curation_val_auc
        Validation AUC of the curation classifier, carried into the summary.

    Returns
    -------
    SynthesisResult
        Released images (at most ``n_per_class`` per class), their classes,
        the audit and the counts.

    Raises
    ------
    TrainingError
        When ``classify`` returns the wrong number of scores or non-finite ones.
    EvaluationError
        From the audit, for unusable training or held-out scans or thresholds.
    """
    if held_out is not None and len(held_out) == 0:
        held_out = None
    auditor = SiteAuditor(
        training,
        training_patient_ids=training_patient_ids,
        held_out=held_out,
        thresholds=thresholds,
        features=features,
        ms_ssim_fn=ms_ssim_fn,
        device=device,
    )
    quotas, batches = fill_quotas(trainer, spec, classify, auditor)
    warn_shortfalls(spec, quotas, curation_val_auc)
    ceiling = math.nan if membership_auc_ceiling is None else membership_auc_ceiling
    images, class_ids, audit, withheld = _release(batches, auditor, thresholds, ceiling)
    counts = _counts(spec, quotas, audit, withheld, class_ids)
    logger.info("synthesis: %s", counts)
    return SynthesisResult(
        images=images,
        class_ids=class_ids,
        audit=audit,
        counts=counts,
        checkpoint_sha256=checkpoint_sha256,
        membership_auc_ceiling=ceiling,
        curation_agreement={c: q.agreement() for c, q in quotas.items()},
        curation_val_auc=curation_val_auc,
    )


def _release(
    batches: Sequence[SynthesisBatch],
    auditor: SiteAuditor,
    thresholds: AuditThresholds,
    ceiling: float,
) -> tuple[np.ndarray, np.ndarray, AuditResult, int]:
    """Test membership over every audited image; return the released ones.

    Returns the released images and classes, the combined audit and how many
    taken images the membership ceiling withheld.
    """
    audits = [batch.audit for batch in batches if batch.audit is not None]
    audited = np.concatenate([batch.images for batch in batches])
    labels = np.concatenate([batch.labels for batch in batches])
    taken = np.concatenate([batch.taken for batch in batches])
    if not audits:
        logger.warning("curation kept no synthetic image; audit skipped")
    auc = auditor.membership_auc(audited) if audits else math.nan
    audit = combine_audits(audits, thresholds, membership_auc=auc)
    withheld = 0
    if auc > ceiling:
        logger.warning(
            "membership AUC %.3f exceeds %.3f: every synthetic image withheld",
            auc,
            ceiling,
        )
        withheld = int(taken.sum())
        taken[:] = False
    return audited[taken], labels[taken], audit, withheld


def _counts(
    spec: SynthesisSpec,
    quotas: Mapping[int, ClassQuota],
    audit: AuditResult,
    withheld: int,
    class_ids: np.ndarray,
) -> dict[str, int]:
    """Return the synthesis funnel, in all and per class."""
    generated = sum(q.generated for q in quotas.values())
    kept = sum(q.kept for q in quotas.values())
    passed = sum(q.passed for q in quotas.values())
    taken = sum(q.taken for q in quotas.values())
    counts = {
        "n-generated": generated,
        "n-curated-out": generated - kept,
        "n-audited": kept,
        "n-blocked": audit.n_blocked,
        "n-over-quota": passed - taken,
        "n-withheld-membership": withheld,
        "n-released": int(class_ids.size),
    }
    for c, quota in quotas.items():
        counts[f"n-generated-class-{c}"] = quota.generated
        counts[f"n-released-class-{c}"] = int((class_ids == c).sum())
        counts[f"n-shortfall-class-{c}"] = spec.n_per_class - quota.taken
    return counts


def site_audit_inputs(cache: SiteCache) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Read what the audit needs from a site's cache.

    Parameters
    ----------
    cache
        The site's prepared cache.

    Returns
    -------
    tuple
        Training scans (``train`` split, labelled or not: the audit compares
        against every scan the site trains on) as float32 ``(T, H, W)``, their
        patient ids, and the held-out scans (``val`` and ``test`` splits) as
        float32 ``(R, H, W)``, possibly empty.
    """
    train = cache.indices("train")
    held_out = np.sort(np.concatenate([cache.indices(s) for s in _HELD_OUT_SPLITS]))
    return (
        np.asarray(cache.images[train], dtype=np.float32),
        [cache.index[i].patient_id for i in train],
        np.asarray(cache.images[held_out], dtype=np.float32),
    )
