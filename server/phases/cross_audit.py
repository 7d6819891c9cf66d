"""Cross-audit of a federated generator's releases before they are pooled.

A federated generator learnt from every GAN site's scans, but each site's own
audit compares its released images only with its own scans. So before the
centre pools or redistributes anything, every other GAN site audits each
site's released images against its training scans under its own release rule
and answers one pass/block verdict per image (``query.cross_audit``). An image
is kept only if every other site passed it; if a site cannot answer, the
images it should have audited are dropped (never released unaudited).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import RecordDict

from fedbone.federation.kinds import PHASE_SYNTHESIZE, SYNTHETIC_RECORD
from fedbone.federation.records import arrays_to_record
from server.study_run import StudyRun

__all__ = ["CrossAuditOutcome", "SiteBatch", "cross_audit"]

logger = logging.getLogger(__name__)


@dataclass
class SiteBatch:
    """One site's released images with their audit summary and provenance."""

    site: str
    images: np.ndarray
    class_ids: np.ndarray
    provenance: dict[str, Any]
    audit: dict[str, Any]


@dataclass
class CrossAuditOutcome:
    """Which released images every other site passed, and the auditors' figures.

    ``keep[site]`` is a boolean mask over that site's released images;
    ``audits[auditor][site]`` is the auditor's summary of that site's images.
    """

    keep: dict[str, np.ndarray] = field(default_factory=dict)
    audits: dict[str, dict[str, Any]] = field(default_factory=dict)


def _verdicts(
    run: StudyRun, node: int, batch: SiteBatch
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Ask ``node`` to audit ``batch``; ``None`` verdicts when it cannot answer."""
    content = RecordDict(
        {
            "config": run.config(PHASE_SYNTHESIZE, {"released-by": batch.site}),
            SYNTHETIC_RECORD: arrays_to_record(
                {
                    "images": batch.images.astype(np.float16),
                    "class-ids": batch.class_ids.astype(np.int64),
                }
            ),
        }
    )
    replies = run.query("cross_audit", [node], content)
    if not replies:
        return None, {}
    reply = replies[0]
    passed = reply.content.array_records["verdicts"]["passed"].numpy()
    summary = {
        key: list(value) if isinstance(value, list) else value
        for key, value in reply.content.metric_records["audit"].items()
    }
    return passed.astype(bool), summary


def cross_audit(
    run: StudyRun, nodes: list[int], batches: list[SiteBatch]
) -> CrossAuditOutcome:
    """Have every other GAN site audit each site's released images.

    Parameters
    ----------
    run
        The study run.
    nodes
        The GAN sites' nodes (every one of them trained the generator).
    batches
        What each site released.
    """
    outcome = CrossAuditOutcome()
    for batch in batches:
        keep = np.ones(len(batch.images), dtype=bool)
        for node in nodes:
            auditor = run.site_of(node)
            if auditor == batch.site or not len(batch.images):
                continue
            passed, summary = _verdicts(run, node, batch)
            if passed is None or passed.shape != keep.shape:
                logger.error(
                    "%s could not cross-audit %s's images: all %d withheld",
                    auditor,
                    batch.site,
                    len(keep),
                )
                keep[:] = False
                summary = {"failed": 1}
            else:
                keep &= passed
            outcome.audits.setdefault(auditor, {})[batch.site] = summary
            logger.info(
                "cross-audit: %s passed %s of %s's %d images",
                auditor,
                "none" if passed is None else int(passed.sum()),
                batch.site,
                len(keep),
            )
        outcome.keep[batch.site] = keep
    return outcome
