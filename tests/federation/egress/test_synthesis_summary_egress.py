"""A real synthesis summary (quotas, curation, realism) passes the egress guard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from federation_messages import config, request
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from fedbone.federation.egress.guard import EgressGuard, EgressRefused
from fedbone.federation.records import arrays_to_record
from fedbone.generative.audit.similarity import AuditThresholds
from fedbone.generative.release_register import ReleaseRegister, wire_images
from fedbone.generative.site_synthesis import wire_summary
from fedbone.generative.synthesis import SynthesisResult, SynthesisSpec, synthesize

SHAPE = (16, 8)


def _smooth(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.random((n, 4, 2))
    return np.kron(coarse, np.ones((4, 4))).astype(np.float32)


class _Generator:
    def generate(
        self, labels: np.ndarray, *, seed: int, truncation: float = 1.0
    ) -> np.ndarray:
        return _smooth(len(labels), seed=100 + seed)


@pytest.fixture(scope="module")
def result() -> SynthesisResult:
    # bm-positive classes only, and a classifier that calls every image positive
    return synthesize(
        _Generator(),
        SynthesisSpec(n_per_class=3, classes=(1, 2, 3), max_attempts=2),
        classify=lambda images: np.full(len(images), 0.9),
        training=_smooth(20, seed=0),
        training_patient_ids=[f"P{i}" for i in range(20)],
        held_out=_smooth(6, seed=1),
        thresholds=AuditThresholds(shift_px=2),
        checkpoint_sha256="ab" * 32,
        curation_val_auc=0.8,
    )


def _synthesize_reply(images: np.ndarray, audit: MetricRecord) -> RecordDict:
    return RecordDict(
        {
            "synthetic": arrays_to_record(
                {"images": images, "class-ids": np.zeros(len(images), np.int64)}
            ),
            "audit": audit,
            "provenance": ConfigRecord({"site-id": "A", "spacing-mm": "8"}),
        }
    )


def _synthesize_request() -> Message:
    return request("query.synthesize", RecordDict({"config": config("synthesize")}))


def _cross_audit_request(images: np.ndarray) -> Message:
    synthetic = arrays_to_record(
        {"images": images, "class-ids": np.zeros(len(images), np.int64)}
    )
    content = RecordDict({"config": config("synthesize"), "synthetic": synthetic})
    return request("query.cross_audit", content)


def _released(
    result: SynthesisResult, tmp_path: Path
) -> tuple[np.ndarray, EgressGuard]:
    register = ReleaseRegister(tmp_path / "register.jsonl")
    images = wire_images(result.images)
    register.record(images, run_name="r", checkpoint_sha256="ab", audit={})
    return images, EgressGuard(release_check=register.unreleased)


def test_the_new_synthesis_keys_leave_in_a_synthesize_reply(
    result: SynthesisResult, tmp_path: Path
) -> None:
    # Prepare
    images, guard = _released(result, tmp_path)
    summary = wire_summary(result.summary())

    # Execute
    _, verdict = guard.screen(
        _synthesize_request(), _synthesize_reply(images, MetricRecord(summary))
    )

    # Assert: the keys the quota and realism work added were in the reply
    assert verdict.passed
    assert {
        "n-shortfall-class-1",
        "n-generated-class-1",
        "n-over-quota",
        "curation-agreement-class-1",
        "curation-val-auc",
        "n-unrealistic",
        "fraction-unrealistic",
        "threshold-unrealistic-mse",
        "unrealistic-quantile",
        "nearest-rank-q50",
    } <= set(summary)


def test_no_audit_summary_may_ride_along_in_a_cross_audit_reply(
    result: SynthesisResult, tmp_path: Path
) -> None:
    # Prepare: distances beside the verdicts would make the audit an oracle
    images, guard = _released(result, tmp_path)
    verdicts = arrays_to_record({"passed": np.ones(len(images), dtype=np.uint8)})
    audit = MetricRecord(wire_summary(dict(result.audit.summary())))

    # Execute
    with pytest.raises(EgressRefused) as refused:
        guard.screen(
            _cross_audit_request(images),
            RecordDict({"verdicts": verdicts, "audit": audit}),
        )

    # Assert
    assert refused.value.codes == ["unexpected-record"]


def test_an_unexpected_key_beside_them_is_still_refused(
    result: SynthesisResult, tmp_path: Path
) -> None:
    # Prepare
    images, guard = _released(result, tmp_path)
    summary = wire_summary(result.summary()) | {"nearest-patient-row": 7}

    # Execute
    with pytest.raises(EgressRefused) as refused:
        guard.screen(
            _synthesize_request(), _synthesize_reply(images, MetricRecord(summary))
        )

    # Assert
    assert {problem.code for problem in refused.value.problems} == {"unexpected-key"}
