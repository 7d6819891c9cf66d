"""The egress guard on the generative exchange: only audited images leave."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from federation_messages import config, request
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from fedbone.federation.egress.guard import EgressGuard, EgressRefused
from fedbone.federation.records import arrays_to_record
from fedbone.generative.release_register import ReleaseRegister, wire_images


def _images(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return wire_images(rng.random((n, 16, 8)))


def _synthesize_request() -> Message:
    return request("query.synthesize", RecordDict({"config": config("synthesize")}))


def _audit(**extra: float | int | list[int]) -> MetricRecord:
    values = {
        "n-generated": 40,
        "n-curated-out": 10,
        "n-blocked": 2,
        "n-released": 3,
        "n-released-class-2": 1,
        "threshold-mse": 0.002,
        "nearest-mse-q01": 0.004,
        "nearest-mse-histogram": [0, 0, 1, 2, 0, 0],
        "closest-pair-ms-ssim": 0.71,
        "different-patient-q01": 0.003,
        "membership-auc": 0.52,
        "passed": 1,
        **extra,
    }
    return MetricRecord(values)


def _reply(images: np.ndarray, audit: MetricRecord | None = None) -> RecordDict:
    class_ids = np.arange(len(images), dtype=np.int64) % 4
    return RecordDict(
        {
            "synthetic": arrays_to_record({"images": images, "class-ids": class_ids}),
            "audit": audit if audit is not None else _audit(),
            "provenance": ConfigRecord(
                {"site-id": "A", "checkpoint-sha256": "ab" * 32, "spacing-mm": "8"}
            ),
        }
    )


def _guard(register: ReleaseRegister) -> EgressGuard:
    return EgressGuard(release_check=register.unreleased)


def _codes(error: EgressRefused) -> set[str]:
    return {problem.code for problem in error.problems}


def test_images_the_audit_released_leave(tmp_path: Path) -> None:
    # Prepare
    register = ReleaseRegister(tmp_path / "register.jsonl")
    released = _images(3)
    register.record(released, run_name="r", checkpoint_sha256="ab", audit={"n": 3})

    # Execute
    _, verdict = _guard(register).screen(_synthesize_request(), _reply(released))

    # Assert
    assert verdict.passed


def test_an_image_not_in_the_release_register_is_refused(tmp_path: Path) -> None:
    # Prepare: two released, one slipped in (a real scan, say)
    register = ReleaseRegister(tmp_path / "register.jsonl")
    released = _images(2)
    register.record(released, run_name="r", checkpoint_sha256="ab", audit={})
    smuggled = np.concatenate([released, _images(1, seed=9)])

    # Execute
    with pytest.raises(EgressRefused) as caught:
        _guard(register).screen(_synthesize_request(), _reply(smuggled))

    # Assert
    assert "not-released-by-audit" in _codes(caught.value)


def test_a_released_image_changed_after_the_audit_is_refused(tmp_path: Path) -> None:
    # Prepare
    register = ReleaseRegister(tmp_path / "register.jsonl")
    released = _images(2)
    register.record(released, run_name="r", checkpoint_sha256="ab", audit={})
    edited = released.copy()
    edited[0, 0, 0] = np.float16(0.123)

    # Execute / Assert
    with pytest.raises(EgressRefused) as caught:
        _guard(register).screen(_synthesize_request(), _reply(edited))
    assert "not-released-by-audit" in _codes(caught.value)


def test_images_never_leave_a_site_without_a_release_register() -> None:
    # Execute
    with pytest.raises(EgressRefused) as caught:
        EgressGuard().screen(_synthesize_request(), _reply(_images(1)))

    # Assert
    assert "no-release-register" in _codes(caught.value)


def test_float32_images_and_extra_arrays_are_refused(tmp_path: Path) -> None:
    # Prepare
    register = ReleaseRegister(tmp_path / "register.jsonl")
    content = _reply(_images(2))
    content["synthetic"] = arrays_to_record(
        {
            "images": np.zeros((2, 16, 8), np.float32),
            "class-ids": np.zeros(2, np.int64),
            "patient-ids": np.zeros(2, np.int64),
        }
    )

    # Execute
    with pytest.raises(EgressRefused) as caught:
        _guard(register).screen(_synthesize_request(), content)

    # Assert
    assert {"not-images", "unexpected-array"} <= _codes(caught.value)


def test_audit_summary_may_not_carry_per_image_values(tmp_path: Path) -> None:
    # Prepare
    register = ReleaseRegister(tmp_path / "register.jsonl")
    released = _images(2)
    register.record(released, run_name="r", checkpoint_sha256="ab", audit={})
    too_long = _audit(**{"nearest-mse-histogram": list(range(100))})
    per_image = _audit(**{"nearest-mse-values": [1, 2]})

    # Execute / Assert
    for audit, code in (
        (too_long, "not-a-summary-histogram"),
        (per_image, "list-not-allowed"),
    ):
        with pytest.raises(EgressRefused) as caught:
            _guard(register).screen(_synthesize_request(), _reply(released, audit))
        assert code in _codes(caught.value)


def test_umap_grids_with_small_cells_are_refused() -> None:
    # Prepare
    message = request("query.umap", RecordDict({"config": config("synthesize")}))
    good = MetricRecord(
        {"grid-real": [0, 5, 9, 0], "grid-synthetic": [3, 0, 1, 2], "bins": 2}
    )
    small = MetricRecord({"grid-real": [0, 2, 9, 0], "bins": 2})

    # Execute
    _, verdict = EgressGuard().screen(message, RecordDict({"umap": good}))
    with pytest.raises(EgressRefused) as caught:
        EgressGuard().screen(message, RecordDict({"umap": small}))

    # Assert
    assert verdict.passed
    assert "small-cell" in _codes(caught.value)


def test_gan_training_reply_carries_only_figures_and_hashes() -> None:
    # Prepare
    message = request("query.gan_train", RecordDict({"config": config("gan")}))
    metrics = MetricRecord({"best-fd": 1.2, "fd-step-200": 1.5, "n-real": 600})
    provenance = ConfigRecord({"site-id": "A", "checkpoint-sha256": "cd" * 32})
    weights = arrays_to_record({"generator.w": np.zeros((4, 4), np.float32)})

    # Execute
    _, verdict = EgressGuard().screen(
        message, RecordDict({"metrics": metrics, "provenance": provenance})
    )
    with pytest.raises(EgressRefused) as caught:
        EgressGuard().screen(
            message,
            RecordDict({"metrics": metrics, "provenance": provenance, "g": weights}),
        )

    # Assert
    assert verdict.passed
    assert "unexpected-arrays" in _codes(caught.value)


def test_receiving_a_pool_is_acknowledged_with_counts_and_its_digest() -> None:
    # Prepare
    message = request(
        "query.receive_synthetic", RecordDict({"config": config("synthesize")})
    )
    reply = RecordDict(
        {
            "stored": MetricRecord({"n-received": 10, "n-stored": 10}),
            "pool": ConfigRecord({"pool-sha256": "ef" * 32}),
        }
    )

    # Execute
    _, verdict = EgressGuard().screen(message, reply)

    # Assert
    assert verdict.passed


def _cross_audit_request(n: int) -> Message:
    content = RecordDict(
        {
            "config": config("synthesize"),
            "synthetic": arrays_to_record(
                {
                    "images": _images(n),
                    "class-ids": np.zeros(n, dtype=np.int64),
                }
            ),
        }
    )
    return request("query.cross_audit", content)


def _verdicts(passed: np.ndarray) -> RecordDict:
    return RecordDict({"verdicts": arrays_to_record({"passed": passed})})


def test_one_verdict_per_received_image_leaves(tmp_path: Path) -> None:
    guard = _guard(ReleaseRegister(tmp_path / "register.jsonl"))

    _, verdict = guard.screen(
        _cross_audit_request(3), _verdicts(np.array([1, 0, 1], dtype=np.uint8))
    )

    assert verdict.passed


@pytest.mark.parametrize(
    "passed",
    [
        np.array([1, 0], dtype=np.uint8),  # fewer verdicts than images
        np.array([1, 2, 1], dtype=np.uint8),  # not 0/1
        np.array([0.1, 0.9, 0.4], dtype=np.float32),  # distances, not verdicts
    ],
)
def test_verdicts_that_say_more_than_pass_or_block_are_refused(
    tmp_path: Path, passed: np.ndarray
) -> None:
    guard = _guard(ReleaseRegister(tmp_path / "register.jsonl"))

    with pytest.raises(EgressRefused) as refused:
        guard.screen(_cross_audit_request(3), _verdicts(passed))

    assert "not-verdicts" in _codes(refused.value)


def test_a_real_image_in_a_cross_audit_reply_is_refused(tmp_path: Path) -> None:
    guard = _guard(ReleaseRegister(tmp_path / "register.jsonl"))
    content = _verdicts(np.ones(3, dtype=np.uint8))
    content["verdicts"] = arrays_to_record(
        {"passed": np.ones(3, dtype=np.uint8), "nearest": _images(3)}
    )

    with pytest.raises(EgressRefused) as refused:
        guard.screen(_cross_audit_request(3), content)

    assert "unexpected-array" in _codes(refused.value)
