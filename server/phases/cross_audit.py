"""Cross-audit of a federated generator's releases before they are pooled.

A federated generator learnt from every GAN site's scans, but each site's own
audit compares its released images only with its own scans. So before the
centre pools or redistributes anything, every other GAN site audits each
site's released images against its training scans under its own release rule
and answers one pass/block verdict per image (``query.cross_audit``), and
nothing else: only a batch the producing site signed
(:mod:`fedbone.generative.release_signature`) is audited. The
tally (:mod:`fedbone.generative.cross_audit_verdicts`) keeps an image only if
every other site passed it; if a site cannot answer, the images it should have
audited are dropped (never released unaudited).
"""

from __future__ import annotations

import numpy as np
from flwr.app import RecordDict

from fedbone.federation.kinds import PHASE_SYNTHESIZE, SYNTHETIC_RECORD
from fedbone.federation.records import arrays_to_record
from fedbone.generative.cross_audit_verdicts import (
    CrossAuditOutcome,
    CrossAuditVerdict,
    cross_audit_assignments,
    tally_cross_audits,
)
from fedbone.generative.pool_assembly import ReleasedBatch
from server.study_run import StudyRun

__all__ = ["cross_audit"]


def _verdict(run: StudyRun, node: int, batch: ReleasedBatch) -> CrossAuditVerdict:
    """Ask ``node`` to audit ``batch``; ``None`` verdicts when it cannot answer."""
    auditor = run.site_of(node)
    content = RecordDict(
        {
            "config": run.config(
                PHASE_SYNTHESIZE,
                {
                    "released-by": batch.site,
                    "release-signature": str(
                        batch.provenance.get("release-signature", "")
                    ),
                },
            ),
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
        return CrossAuditVerdict(auditor, batch.site, None)
    reply = replies[0]
    passed = reply.content.array_records["verdicts"]["passed"].numpy()
    # Verdict bits are all that leaves an auditor: the summary is their count.
    summary = {"passed": int(passed.sum()), "n-images": int(passed.size)}
    return CrossAuditVerdict(auditor, batch.site, passed.astype(bool), summary)


def cross_audit(
    run: StudyRun, nodes: list[int], batches: list[ReleasedBatch]
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
    by_site = {run.site_of(node): node for node in nodes}
    verdicts = [
        _verdict(run, by_site[auditor], batch)
        for auditor, batch in cross_audit_assignments(batches, list(by_site))
    ]
    return tally_cross_audits(batches, verdicts)
