from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from fedbone.generative.audit.similarity import (
    HISTOGRAM_EDGES,
    AuditResult,
    AuditThresholds,
    SiteAuditor,
    audit_synthetic,
    combine_audits,
    pairwise_mse_mae,
    shift_robust_features,
)
from fedbone.validation.errors import EvaluationError

N_PATIENTS = 80


def smooth_bodies(n: int, seed: int, shape: tuple[int, int] = (64, 32)) -> np.ndarray:
    """Independent images of a few random Gaussian blobs, scaled to [0, 1]."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0 : shape[0], 0 : shape[1]]
    images = np.zeros((n, *shape))
    for image in images:
        for _ in range(rng.integers(4, 8)):
            centre_row, centre_column = (
                rng.uniform(0, shape[0]),
                rng.uniform(0, shape[1]),
            )
            width = rng.uniform(1.5, 5.0)
            squared = (rows - centre_row) ** 2 + (columns - centre_column) ** 2
            image += rng.uniform(0.3, 1.0) * np.exp(-squared / (2 * width**2))
    images /= images.max(axis=(1, 2), keepdims=True)
    return images.astype(np.float32)


def global_ssim(first: Tensor, second: Tensor) -> Tensor:
    """Stand-in for MS-SSIM: one SSIM over the whole image, per pair."""
    a, b = first.flatten(1).double(), second.flatten(1).double()
    mean_a, mean_b = a.mean(1), b.mean(1)
    cov = ((a - mean_a[:, None]) * (b - mean_b[:, None])).mean(1)
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mean_a * mean_b + c1) * (2 * cov + c2)) / (
        (mean_a**2 + mean_b**2 + c1)
        * (a.var(1, unbiased=False) + b.var(1, unbiased=False) + c2)
    )


@pytest.fixture(scope="module")
def cohort() -> dict[str, np.ndarray]:
    return {
        "training": smooth_bodies(N_PATIENTS, seed=11),
        "held_out": smooth_bodies(N_PATIENTS, seed=12),
        "healthy": smooth_bodies(N_PATIENTS, seed=13),
    }


def patient_ids(n: int) -> list[str]:
    return [f"patient-{index}" for index in range(n)]


PATIENTS = patient_ids(N_PATIENTS)


def shifted_copies(images: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack(
        [
            np.roll(
                image,
                (rng.integers(1, 4), rng.integers(1, 4) * rng.choice([-1, 1])),
                axis=(0, 1),
            )
            for image in images
        ]
    )


def audit(
    synthetic: np.ndarray, cohort: dict[str, np.ndarray], **kwargs: object
) -> AuditResult:
    return audit_synthetic(
        synthetic,
        cohort["training"],
        training_patient_ids=patient_ids(N_PATIENTS),
        held_out=cohort["held_out"],
        thresholds=AuditThresholds(),
        **kwargs,  # type: ignore[arg-type]
    )


def test_pairwise_mse_matches_direct_per_pair_computation() -> None:
    # Prepare
    synthetic, training = smooth_bodies(7, seed=4), smooth_bodies(11, seed=5)
    direct = np.array(
        [[np.mean((s.astype(float) - t) ** 2) for t in training] for s in synthetic]
    )

    # Execute
    distances = pairwise_mse_mae(synthetic, training, top_k=3, chunk=3)

    # Assert
    np.testing.assert_allclose(distances.mse, direct, rtol=1e-4, atol=1e-7)
    assert distances.candidates.shape == (7, 3)
    np.testing.assert_array_equal(
        distances.candidates, np.argsort(direct, axis=1)[:, :3]
    )
    direct_mae = np.array(
        [
            [np.mean(np.abs(synthetic[s].astype(float) - training[t])) for t in row]
            for s, row in enumerate(distances.candidates)
        ]
    )
    np.testing.assert_allclose(distances.mae, direct_mae, rtol=1e-6)


def test_pairwise_mse_of_nearest_candidates_is_exact_for_near_copies() -> None:
    # Prepare: a copy with tiny noise, where the matrix form cancels most
    training = smooth_bodies(3, seed=6)
    noise = np.random.default_rng(0).normal(0, 1e-3, training.shape)
    synthetic = np.clip(training + noise, 0, 1).astype(np.float32)
    direct = np.mean((synthetic.astype(float) - training) ** 2, axis=(1, 2))

    # Execute
    distances = pairwise_mse_mae(synthetic, training, top_k=1)

    # Assert
    np.testing.assert_allclose(np.diag(distances.mse), direct, rtol=1e-9)
    np.testing.assert_array_equal(distances.candidates[:, 0], [0, 1, 2])


def test_memorising_generator_with_shifted_copies_is_blocked(
    cohort: dict[str, np.ndarray],
) -> None:
    # Prepare: every synthetic image is a training scan rolled by 1-3 pixels
    synthetic = shifted_copies(cohort["training"], seed=7)

    # Execute
    result = audit(synthetic, cohort)

    # Assert
    assert result.n_blocked == N_PATIENTS
    assert not result.released.any()
    assert result.membership_auc > 0.9


def test_memorising_generator_with_added_noise_is_blocked(
    cohort: dict[str, np.ndarray],
) -> None:
    # Prepare
    noise = np.random.default_rng(8).normal(0, 0.05, cohort["training"].shape)
    synthetic = np.clip(cohort["training"] + noise, 0, 1).astype(np.float32)

    # Execute
    result = audit(synthetic, cohort)

    # Assert
    assert result.n_blocked == N_PATIENTS
    assert result.membership_auc > 0.9


def test_healthy_generator_is_released_and_leaks_no_membership(
    cohort: dict[str, np.ndarray],
) -> None:
    # Execute
    result = audit(cohort["healthy"], cohort)

    # Assert
    assert result.released.sum() >= 0.9 * N_PATIENTS
    assert abs(result.membership_auc - 0.5) < 0.15


def test_ms_ssim_rule_blocks_only_above_the_ceiling(
    cohort: dict[str, np.ndarray],
) -> None:
    # Prepare: pixel and feature rules switched off by a tiny quantile
    copies = cohort["training"][:10]
    synthetic = np.concatenate([copies, cohort["healthy"][:10]])
    thresholds = AuditThresholds(real_quantile=1e-9, feature_space=False)

    # Execute
    result = audit_synthetic(
        synthetic,
        cohort["training"],
        training_patient_ids=patient_ids(N_PATIENTS),
        held_out=None,
        thresholds=thresholds,
        ms_ssim_fn=global_ssim,
    )

    # Assert
    assert not result.released[:10].any()
    assert np.all(result.max_ms_ssim[:10] > 0.999)
    assert result.released[10:].sum() >= 8
    assert result.closest_pair["ms_ssim"] == pytest.approx(1.0)
    assert np.isnan(result.membership_auc)


def test_controls_use_different_patients_and_repeat_scans(
    cohort: dict[str, np.ndarray],
) -> None:
    # Prepare: 20 patients scanned twice (second scan slightly noisy), 40 once
    first = cohort["training"][:60]
    repeats = np.clip(
        first[:20] + np.random.default_rng(9).normal(0, 0.02, first[:20].shape), 0, 1
    ).astype(np.float32)
    training = np.concatenate([first, repeats])
    ids = patient_ids(60) + patient_ids(20)

    # Execute
    result = audit_synthetic(
        cohort["healthy"],
        training,
        training_patient_ids=ids,
        held_out=cohort["held_out"],
        thresholds=AuditThresholds(),
    )

    # Assert: a repeat scan is nearer than any other patient, yet not a threshold
    assert result.control["same-patient-mse-n"] == 40
    assert (
        result.control["same-patient-mse-q50"]
        < result.control["different-patient-mse-q01"]
    )
    assert result.threshold_mse == pytest.approx(
        np.quantile(_nearest_other_patient(training, ids), 0.01)
    )
    assert result.released.sum() >= 0.9 * len(cohort["healthy"])


def _nearest_other_patient(images: np.ndarray, ids: list[str]) -> np.ndarray:
    flat = images.reshape(len(images), -1).astype(float)
    mse = ((flat[:, None] - flat[None]) ** 2).mean(axis=2)
    same = np.asarray(ids)[:, None] == np.asarray(ids)[None, :]
    return np.where(same, np.inf, mse).min(axis=1)


def test_summary_holds_only_aggregates(cohort: dict[str, np.ndarray]) -> None:
    # Prepare
    result = audit(cohort["healthy"], cohort, ms_ssim_fn=global_ssim)

    # Execute
    summary: dict[str, Any] = result.summary()

    # Assert: JSON-ready scalars and short fixed-length lists, no index or image
    json.dumps(summary)
    assert not any("index" in key for key in summary)
    lists = {key: value for key, value in summary.items() if isinstance(value, list)}
    assert set(lists) == {"nearest-mse-histogram", "nearest-mse-histogram-edges"}
    assert sum(lists["nearest-mse-histogram"]) == N_PATIENTS
    assert lists["nearest-mse-histogram-edges"] == list(HISTOGRAM_EDGES)
    assert summary["n-released"] + summary["n-blocked"] == N_PATIENTS
    assert summary["closest-pair-mse"] == pytest.approx(result.nearest_mse.min())
    assert 0.0 < summary["closest-pair-ms-ssim"] <= 1.0


def test_noise_is_flagged_unrealistic_but_not_blocked(
    cohort: dict[str, np.ndarray],
) -> None:
    # Prepare
    noise = np.random.default_rng(14).random((10, 64, 32)).astype(np.float32)

    # Execute
    result = audit(noise, cohort)
    summary = result.summary()

    # Assert
    assert result.unrealistic.all()
    assert result.released.all()
    assert np.all(result.nearest_rank == 1.0)
    assert summary["n-unrealistic"] == 10
    assert summary["fraction-unrealistic"] == 1.0
    assert summary["nearest-rank-q05"] == 1.0
    assert summary["threshold-unrealistic-mse"] == pytest.approx(
        np.quantile(_nearest_other_patient(cohort["training"], PATIENTS), 0.99)
    )


def test_near_copies_are_blocked_and_not_unrealistic(
    cohort: dict[str, np.ndarray],
) -> None:
    # Prepare
    noise = np.random.default_rng(15).normal(0, 0.02, cohort["training"].shape)
    copies = np.clip(cohort["training"] + noise, 0, 1).astype(np.float32)

    # Execute
    result = audit(copies, cohort)

    # Assert
    assert not result.released.any()
    assert not result.unrealistic.any()
    assert result.summary()["nearest-rank-q95"] < 0.05


def test_images_at_a_realistic_distance_are_neither_blocked_nor_unrealistic(
    cohort: dict[str, np.ndarray],
) -> None:
    # Execute
    result = audit(cohort["healthy"], cohort)
    summary = result.summary()

    # Assert
    assert summary["n-unrealistic"] <= 0.05 * N_PATIENTS
    assert summary["n-released"] >= 0.9 * N_PATIENTS
    assert 0.2 < summary["nearest-rank-q50"] < 0.8


def test_batches_audited_one_by_one_match_one_audit_of_all(
    cohort: dict[str, np.ndarray],
) -> None:
    # Prepare
    synthetic = np.concatenate(
        [cohort["healthy"][:20], shifted_copies(cohort["training"][:10], seed=16)]
    )
    auditor = SiteAuditor(
        cohort["training"],
        training_patient_ids=PATIENTS,
        held_out=cohort["held_out"],
        thresholds=AuditThresholds(),
    )

    # Execute
    batches = [auditor.audit(synthetic[:12]), auditor.audit(synthetic[12:])]
    combined = combine_audits(
        batches, AuditThresholds(), membership_auc=auditor.membership_auc(synthetic)
    )
    whole = audit(synthetic, cohort)

    # Assert
    np.testing.assert_array_equal(combined.released, whole.released)
    np.testing.assert_allclose(combined.nearest_rank, whole.nearest_rank)
    assert combined.n_blocked == whole.n_blocked >= 10
    assert combined.membership_auc == pytest.approx(whole.membership_auc)
    assert combined.summary()["threshold-mse"] == whole.summary()["threshold-mse"]
    assert combined.closest_pair == pytest.approx(whole.closest_pair, nan_ok=True)


def test_shift_robust_features_barely_change_under_small_shifts() -> None:
    # Prepare
    images = smooth_bodies(2, seed=10)
    moved = np.roll(images, 2, axis=1)

    # Execute
    features, moved_features, other = (
        shift_robust_features(images),
        shift_robust_features(moved),
        shift_robust_features(images[::-1].copy()),
    )

    # Assert
    assert features.shape == (2, 16, 8)
    assert np.mean((features - moved_features) ** 2) < 0.2 * np.mean(
        (features - other) ** 2
    )


def test_bad_inputs_are_all_reported_at_once(cohort: dict[str, np.ndarray]) -> None:
    # Prepare
    too_bright = cohort["healthy"] * 2.0
    small = np.zeros((3, 32, 32), dtype=np.float32)

    # Execute
    with pytest.raises(EvaluationError) as caught:
        audit_synthetic(
            too_bright,
            cohort["training"],
            training_patient_ids=["only-one"] * 5,
            held_out=small,
            thresholds=AuditThresholds(
                real_quantile=1.5, top_k=0, unrealistic_quantile=0.2
            ),
        )

    # Assert
    assert set(caught.value.codes) == {
        "images-outside-unit-interval",
        "image-size-mismatch",
        "bad-top-k",
        "bad-real-quantile",
        "bad-unrealistic-quantile",
        "patient-ids-length-mismatch",
    }


def test_pairwise_runs_on_cuda_when_present() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no GPU on this machine")
    # Prepare
    synthetic, training = smooth_bodies(5, seed=11), smooth_bodies(9, seed=12)

    # Execute
    on_gpu = pairwise_mse_mae(synthetic, training, device="cuda")
    on_cpu = pairwise_mse_mae(synthetic, training)

    # Assert
    np.testing.assert_allclose(on_gpu.mse, on_cpu.mse, rtol=1e-4, atol=1e-7)
