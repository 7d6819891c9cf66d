"""Tallying the cross-audit of a federated generator's releases.

A federated generator learnt from every GAN site's scans, but each site's own
audit compares its released images only with its own scans. So every other
GAN site audits each site's released images against its own training scans
(:func:`fedbone.generative.audit.cross_audit.cross_audit_at_site`) and answers
one pass/block verdict per image. An image is kept only if every other site
passed it; if a site cannot answer, the images it should have audited are
dropped (never released unaudited).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedbone.generative.pool_assembly import ReleasedBatch

__all__ = [
    "CrossAuditOutcome",
    "CrossAuditVerdict",
    "cross_audit_assignments",
    "tally_cross_audits",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CrossAuditVerdict:
    """One auditor's answer on another site's released images.

    ``passed`` is one boolean per image, or ``None`` when the auditor could
    not answer.
    """

    auditor: str
    released_by: str
    passed: np.ndarray | None
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class CrossAuditOutcome:
    """Which released images every other site passed, and the auditors' figures.

    ``keep[site]`` is a boolean mask over that site's released images;
    ``audits[auditor][site]`` is the auditor's summary of that site's images.
    """

    keep: dict[str, np.ndarray] = field(default_factory=dict)
    audits: dict[str, dict[str, Any]] = field(default_factory=dict)


def cross_audit_assignments(
    batches: Sequence[ReleasedBatch], auditors: Sequence[str]
) -> list[tuple[str, ReleasedBatch]]:
    """Return ``(auditor, batch)`` for every other site's non-empty release."""
    return [
        (auditor, batch)
        for batch in batches
        for auditor in auditors
        if auditor != batch.site and len(batch.images)
    ]


def tally_cross_audits(
    batches: Sequence[ReleasedBatch], verdicts: Sequence[CrossAuditVerdict]
) -> CrossAuditOutcome:
    """Keep an image only if every auditor of its batch passed it.

    An auditor that did not answer, or answered for a different number of
    images, blocks the whole batch (its summary is ``{"failed": 1}``).
    """
    outcome = CrossAuditOutcome()
    for batch in batches:
        keep = np.ones(len(batch.images), dtype=bool)
        for verdict in verdicts:
            if verdict.released_by != batch.site:
                continue
            summary = verdict.summary
            passed = verdict.passed
            if passed is None or passed.shape != keep.shape:
                logger.error(
                    "%s could not cross-audit %s's images: all %d withheld",
                    verdict.auditor,
                    batch.site,
                    len(keep),
                )
                keep[:] = False
                summary = {"failed": 1}
            else:
                keep &= passed.astype(bool)
            outcome.audits.setdefault(verdict.auditor, {})[batch.site] = summary
            logger.info(
                "cross-audit: %s passed %s of %s's %d images",
                verdict.auditor,
                "none" if passed is None else int(passed.sum()),
                batch.site,
                len(keep),
            )
        outcome.keep[batch.site] = keep
    return outcome
