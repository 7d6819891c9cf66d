"""Tallying the other sites' verdicts on each site's released images."""

from __future__ import annotations

import numpy as np

from fedbone.generative.cross_audit_verdicts import (
    CrossAuditVerdict,
    cross_audit_assignments,
    tally_cross_audits,
)
from fedbone.generative.pool_assembly import ReleasedBatch


def _batch(site: str, count: int) -> ReleasedBatch:
    images = np.zeros((count, 2, 2), np.float16)
    return ReleasedBatch(site, images, np.zeros(count, np.int64), {}, {})


def test_every_other_site_audits_every_non_empty_release() -> None:
    batches = [_batch("A", 2), _batch("B", 0), _batch("C", 1)]

    pairs = cross_audit_assignments(batches, ["A", "B", "C"])

    assert [(auditor, batch.site) for auditor, batch in pairs] == [
        ("B", "A"),
        ("C", "A"),
        ("A", "C"),
        ("B", "C"),
    ]


def test_an_image_is_kept_only_if_every_auditor_passed_it() -> None:
    batches = [_batch("A", 3)]
    verdicts = [
        CrossAuditVerdict("B", "A", np.array([True, False, True]), {"n": 3}),
        CrossAuditVerdict("C", "A", np.array([True, True, False]), {"n": 3}),
    ]

    outcome = tally_cross_audits(batches, verdicts)

    assert outcome.keep["A"].tolist() == [True, False, False]
    assert outcome.audits == {"B": {"A": {"n": 3}}, "C": {"A": {"n": 3}}}


def test_a_missing_or_misshapen_answer_withholds_the_batch() -> None:
    batches = [_batch("A", 2), _batch("B", 2)]
    verdicts = [
        CrossAuditVerdict("B", "A", None),
        CrossAuditVerdict("A", "B", np.array([True])),
    ]

    outcome = tally_cross_audits(batches, verdicts)

    assert not outcome.keep["A"].any() and not outcome.keep["B"].any()
    assert outcome.audits == {"B": {"A": {"failed": 1}}, "A": {"B": {"failed": 1}}}
