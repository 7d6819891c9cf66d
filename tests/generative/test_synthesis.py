"""Synthesis at the generator's site: curation, audit, release, summary."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_caches import build_toy_cache
from torch.nn import functional

from fedbone.classifier.errors import TrainingError
from fedbone.generative.audit.similarity import HISTOGRAM_EDGES, AuditThresholds
from fedbone.generative.fidelity.ssim import ms_ssim
from fedbone.generative.synthesis import (
    SynthesisResult,
    SynthesisSpec,
    site_audit_inputs,
    synthesize,
)

RULE = AuditThresholds(real_quantile=0.01, shift_px=2)
SHA = "ab" * 32


def _smooth(n: int, seed: int) -> np.ndarray:
    """Independent smooth random 32 x 16 images in [0, 1]."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.random((n, 1, 8, 4), dtype=np.float32))
    return functional.interpolate(coarse, size=(32, 16), mode="bilinear")[:, 0].numpy()


TRAINING = _smooth(30, seed=0)
PATIENTS = [f"P{i // 2}" for i in range(30)]  # two scans per patient
HELD_OUT = _smooth(12, seed=1)


class _Healthy:
    """A generator that draws new images from the training distribution."""

    def generate(
        self, labels: np.ndarray, *, seed: int, truncation: float = 1.0
    ) -> np.ndarray:
        return _smooth(len(labels), seed=1000 + seed)


class _Memorising:
    """A generator that returns training scans moved by 1 px, plus faint noise."""

    def generate(
        self, labels: np.ndarray, *, seed: int, truncation: float = 1.0
    ) -> np.ndarray:
        rng = np.random.default_rng(seed)
        copies = np.roll(TRAINING[np.arange(len(labels)) % len(TRAINING)], 1, axis=1)
        noisy = copies + rng.normal(0.0, 0.005, copies.shape)
        return np.clip(noisy, 0.0, 1.0).astype(np.float32)


def _agreeing(spec: SynthesisSpec) -> Callable[[np.ndarray], np.ndarray]:
    """A classifier that agrees with every conditioning label of ``spec``."""
    classes = np.repeat(np.asarray(spec.classes), spec.n_per_class)
    positive = classes // 2 if spec.curate_task == "bm" else classes % 2
    return lambda images: np.where(positive == 1, 0.9, 0.1)[: len(images)]


def _run(
    generator: _Healthy | _Memorising,
    spec: SynthesisSpec,
    classify: Callable[[np.ndarray], np.ndarray] | None = None,
    **options: object,
) -> SynthesisResult:
    return synthesize(
        generator,
        spec,
        classify=classify or _agreeing(spec),
        training=TRAINING,
        training_patient_ids=PATIENTS,
        held_out=HELD_OUT,
        thresholds=RULE,
        checkpoint_sha256=SHA,
        **options,  # type: ignore[arg-type]
    )


def _assert_counts_add_up(result: SynthesisResult) -> None:
    counts = result.counts
    assert counts["n-generated"] == counts["n-curated-out"] + counts["n-audited"]
    assert counts["n-audited"] == (
        counts["n-blocked"] + counts["n-withheld-membership"] + counts["n-released"]
    )
    per_class = [v for k, v in counts.items() if k.startswith("n-released-class-")]
    assert sum(per_class) == counts["n-released"] == len(result.images)
    assert len(result.class_ids) == len(result.images)


def _assert_releasable(summary: Mapping[str, object]) -> None:
    for key, value in summary.items():
        assert "index" not in key
        assert not isinstance(value, np.ndarray)
        if isinstance(value, list):
            assert len(value) <= len(HISTOGRAM_EDGES)


@pytest.mark.parametrize(("task", "kept_classes"), [("bm", {2, 3}), ("ca", {1, 3})])
def test_curation_keeps_images_the_classifier_calls_positive_only_for_positive_classes(
    task: str, kept_classes: set[int]
) -> None:
    # Prepare
    spec = SynthesisSpec(n_per_class=4, curate_task=task)

    # Execute
    result = _run(_Healthy(), spec, classify=lambda images: np.full(len(images), 0.9))

    # Assert
    assert result.counts["n-curated-out"] == 8
    assert result.counts["n-audited"] == 8
    assert result.audit.released.size == 8
    assert set(result.class_ids.tolist()) <= kept_classes
    _assert_counts_add_up(result)


def test_healthy_generator_passes_most_images_with_a_releasable_summary() -> None:
    # Prepare
    spec = SynthesisSpec(n_per_class=5, seed=3)

    # Execute
    result = _run(_Healthy(), spec)
    summary = result.summary()

    # Assert
    assert result.counts["n-released"] >= 16
    assert result.images.dtype == np.float32
    assert result.images.shape[1:] == (32, 16)
    assert summary["passed"] is True
    assert summary["checkpoint-sha256"] == SHA
    assert np.isfinite(summary["membership-auc"])
    _assert_counts_add_up(result)
    _assert_releasable(summary)


def test_memorising_generator_gets_everything_blocked() -> None:
    # Prepare
    spec = SynthesisSpec(n_per_class=4)
    similarity = functools.partial(ms_ssim, win_size=7)

    # Execute
    result = _run(_Memorising(), spec, ms_ssim_fn=similarity)
    summary = result.summary()

    # Assert
    assert result.counts["n-blocked"] == 16
    assert result.counts["n-released"] == 0
    assert result.images.shape == (0, 32, 16)
    assert summary["passed"] is False
    assert 0.5 < summary["closest-pair-ms-ssim"] <= 1.0  # type: ignore[operator]
    _assert_counts_add_up(result)
    _assert_releasable(summary)


def test_all_curated_out_skips_the_audit_but_still_summarises() -> None:
    # Prepare
    spec = SynthesisSpec(n_per_class=3, classes=(0, 1))

    # Execute
    result = _run(_Healthy(), spec, classify=lambda images: np.ones(len(images)))
    summary = result.summary()

    # Assert
    assert result.counts["n-curated-out"] == 6
    assert result.counts["n-released"] == 0
    assert summary["passed"] is False
    assert summary["n-synthetic"] == 0
    assert summary["nearest-mse-histogram"] == [0] * (len(HISTOGRAM_EDGES) - 1)
    _assert_counts_add_up(result)
    _assert_releasable(summary)


def test_membership_ceiling_withholds_the_whole_batch() -> None:
    # Prepare
    spec = SynthesisSpec(n_per_class=4, seed=3)

    # Execute
    result = _run(_Healthy(), spec, membership_auc_ceiling=0.0)

    # Assert
    assert result.counts["n-withheld-membership"] > 0
    assert result.counts["n-released"] == 0
    assert result.summary()["membership-passed"] is False
    _assert_counts_add_up(result)


def test_classifier_with_wrong_score_count_is_refused() -> None:
    # Prepare
    spec = SynthesisSpec(n_per_class=2)

    # Execute
    with pytest.raises(TrainingError) as raised:
        _run(_Healthy(), spec, classify=lambda images: np.ones(3))

    # Assert
    assert raised.value.codes == ["score-count"]


def test_bad_synthesis_spec_lists_every_problem() -> None:
    # Execute
    with pytest.raises(TrainingError) as raised:
        SynthesisSpec(n_per_class=0, classes=(1, 1, 5), curate_task="x", truncation=0)

    # Assert
    assert set(raised.value.codes) == {
        "not-positive",
        "bad-classes",
        "class-out-of-range",
        "unknown-task",
        "bad-truncation",
    }


def test_site_audit_inputs_split_training_from_held_out(tmp_path: Path) -> None:
    # Prepare
    cache = build_toy_cache(tmp_path, count=20)

    # Execute
    training, patients, held_out = site_audit_inputs(cache)

    # Assert
    train = cache.indices("train")
    assert training.dtype == held_out.dtype == np.float32
    assert training.shape == (len(train), 32, 16)
    assert patients == [cache.index[i].patient_id for i in train]
    assert len(held_out) == len(cache.indices("val")) + len(cache.indices("test"))
    np.testing.assert_array_equal(training[0], cache[int(train[0])])
