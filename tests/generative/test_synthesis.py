"""Synthesis at the generator's site: curation, audit, release, summary."""

from __future__ import annotations

import functools
import logging
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


Reject = Callable[[np.ndarray, int], np.ndarray]


def _reject_none(labels: np.ndarray, call: int) -> np.ndarray:
    return np.zeros(len(labels), dtype=bool)


class _Recording:
    """A generator that remembers the labels and seed of its latest call."""

    def __init__(self) -> None:
        self.labels = np.zeros(0, dtype=np.int64)
        self.seeds: list[int] = []

    def generate(
        self, labels: np.ndarray, *, seed: int, truncation: float = 1.0
    ) -> np.ndarray:
        self.labels = np.asarray(labels)
        self.seeds.append(seed)
        return self.images(len(labels), seed)

    def images(self, n: int, seed: int) -> np.ndarray:
        raise NotImplementedError


class _Healthy(_Recording):
    """A generator that draws new images from the training distribution."""

    def images(self, n: int, seed: int) -> np.ndarray:
        return _smooth(n, seed=1000 + seed)


class _Memorising(_Recording):
    """A generator that returns training scans moved by 1 px, plus faint noise."""

    def images(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        copies = np.roll(TRAINING[np.arange(n) % len(TRAINING)], 1, axis=1)
        noisy = copies + rng.normal(0.0, 0.005, copies.shape)
        return np.clip(noisy, 0.0, 1.0).astype(np.float32)


def _curator(
    generator: _Recording, task: str = "bm", reject: Reject = _reject_none
) -> Callable[[np.ndarray], np.ndarray]:
    """A classifier that agrees with the labels of the generator's latest batch.

    ``reject(labels, call)`` marks the images it disagrees with, ``call``
    being the number of batches generated so far (1 for the first).
    """

    def classify(images: np.ndarray) -> np.ndarray:
        labels = generator.labels
        positive = (labels // 2 if task == "bm" else labels % 2) == 1
        agree = ~reject(labels, len(generator.seeds))
        return np.where(positive == agree, 0.9, 0.1)

    return classify


def _run(
    generator: _Recording,
    spec: SynthesisSpec,
    classify: Callable[[np.ndarray], np.ndarray] | None = None,
    **options: object,
) -> SynthesisResult:
    return synthesize(
        generator,
        spec,
        classify=classify or _curator(generator, spec.curate_task),
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
        counts["n-blocked"]
        + counts["n-over-quota"]
        + counts["n-withheld-membership"]
        + counts["n-released"]
    )
    assert counts["n-audited"] == result.audit.released.size
    per_class = [v for k, v in counts.items() if k.startswith("n-released-class-")]
    assert sum(per_class) == counts["n-released"] == len(result.images)
    generated = [v for k, v in counts.items() if k.startswith("n-generated-class-")]
    assert sum(generated) == counts["n-generated"]
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
    spec = SynthesisSpec(n_per_class=4, curate_task=task, max_attempts=1)

    # Execute
    result = _run(_Healthy(), spec, classify=lambda images: np.full(len(images), 0.9))

    # Assert
    assert result.counts["n-curated-out"] == 8
    assert result.counts["n-audited"] == 8
    assert result.audit.released.size == 8
    assert set(result.class_ids.tolist()) <= kept_classes
    assert result.curation_agreement == {
        c: 1.0 if c in kept_classes else 0.0 for c in range(4)
    }
    _assert_counts_add_up(result)


def test_healthy_generator_passes_most_images_with_a_releasable_summary() -> None:
    # Prepare
    spec = SynthesisSpec(n_per_class=5, seed=3)

    # Execute
    result = _run(_Healthy(), spec)
    summary = result.summary()

    # Assert
    assert result.counts["n-released"] == 20
    assert all(result.counts[f"n-shortfall-class-{c}"] == 0 for c in range(4))
    assert result.images.dtype == np.float32
    assert result.images.shape[1:] == (32, 16)
    assert summary["passed"] is True
    assert summary["checkpoint-sha256"] == SHA
    assert np.isfinite(summary["membership-auc"])
    _assert_counts_add_up(result)
    _assert_releasable(summary)


def test_memorising_generator_gets_everything_blocked() -> None:
    # Prepare
    spec = SynthesisSpec(n_per_class=4, max_attempts=2)
    similarity = functools.partial(ms_ssim, win_size=7)

    # Execute
    result = _run(_Memorising(), spec, ms_ssim_fn=similarity)
    summary = result.summary()

    # Assert: every batch of every class was tried and blocked
    assert result.counts["n-generated"] == result.counts["n-blocked"] == 32
    assert result.counts["n-released"] == 0
    assert all(result.counts[f"n-shortfall-class-{c}"] == 4 for c in range(4))
    assert result.images.shape == (0, 32, 16)
    assert summary["passed"] is False
    assert 0.5 < summary["closest-pair-ms-ssim"] <= 1.0  # type: ignore[operator]
    _assert_counts_add_up(result)
    _assert_releasable(summary)


def test_all_curated_out_skips_the_audit_but_still_summarises() -> None:
    # Prepare
    spec = SynthesisSpec(n_per_class=3, classes=(0, 1), max_attempts=2)

    # Execute
    result = _run(_Healthy(), spec, classify=lambda images: np.ones(len(images)))
    summary = result.summary()

    # Assert
    assert result.counts["n-curated-out"] == 12
    assert result.images.shape == (0, 32, 16)
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
        SynthesisSpec(
            n_per_class=0,
            classes=(1, 1, 5),
            curate_task="x",
            truncation=0,
            max_attempts=0,
        )

    # Assert
    assert set(raised.value.codes) == {
        "not-positive",
        "bad-classes",
        "class-out-of-range",
        "unknown-task",
        "bad-truncation",
        "bad-max-attempts",
    }


def _half_of_class_2(labels: np.ndarray, call: int) -> np.ndarray:
    return (labels == 2) & (np.arange(len(labels)) % 2 == 0)


def test_a_class_curation_often_rejects_is_filled_by_extra_batches() -> None:
    # Prepare
    generator = _Healthy()
    spec = SynthesisSpec(n_per_class=6, seed=3)
    classify = _curator(generator, reject=_half_of_class_2)

    # Execute
    result = _run(generator, spec, classify=classify)

    # Assert
    counts = result.counts
    assert [counts[f"n-released-class-{c}"] for c in range(4)] == [6, 6, 6, 6]
    assert counts["n-shortfall-class-2"] == 0
    assert counts["n-generated-class-2"] > 6 == counts["n-generated-class-0"]
    assert len(generator.seeds) > 1
    assert result.curation_agreement[2] == pytest.approx(0.5, abs=0.1)
    _assert_counts_add_up(result)


def test_a_class_curation_always_rejects_is_reported_short_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Prepare
    generator = _Healthy()
    spec = SynthesisSpec(n_per_class=4, seed=3, max_attempts=3)
    classify = _curator(generator, reject=lambda labels, call: labels == 1)

    # Execute
    with caplog.at_level(logging.WARNING, "fedbone.generative"):
        result = _run(generator, spec, classify=classify)

    # Assert
    counts = result.counts
    assert counts["n-released-class-1"] == 0
    assert counts["n-shortfall-class-1"] == 4
    assert counts["n-generated-class-1"] == 3 * 4
    assert [counts[f"n-released-class-{c}"] for c in (0, 2, 3)] == [4, 4, 4]
    assert result.summary()["curation-agreement-class-1"] == 0.0
    assert "class 1 is 4 short" in caplog.text
    _assert_counts_add_up(result)


def test_same_seed_gives_the_same_release_and_another_seed_does_not() -> None:
    # Prepare
    spec = SynthesisSpec(n_per_class=4, seed=5)
    other = SynthesisSpec(n_per_class=4, seed=6)

    def run(spec: SynthesisSpec) -> SynthesisResult:
        generator = _Healthy()
        return _run(generator, spec, _curator(generator, reject=_half_of_class_2))

    # Execute
    first, again, different = run(spec), run(spec), run(other)

    # Assert
    np.testing.assert_array_equal(first.images, again.images)
    np.testing.assert_array_equal(first.class_ids, again.class_ids)
    assert first.counts == again.counts
    assert not np.array_equal(first.images, different.images)


def test_a_batch_oversized_by_a_poor_first_yield_is_cut_to_the_quota() -> None:
    # Prepare: the first batch keeps one image of class 2, the second all
    generator = _Healthy()
    spec = SynthesisSpec(n_per_class=5, classes=(2,), seed=3)

    def first_batch_but_one(labels: np.ndarray, call: int) -> np.ndarray:
        return (np.arange(len(labels)) > 0) if call == 1 else labels < 0

    classify = _curator(generator, reject=first_batch_but_one)

    # Execute
    result = _run(generator, spec, classify=classify)

    # Assert
    assert result.counts["n-generated-class-2"] == 10
    assert result.counts["n-released"] == 5 == len(result.images)
    assert result.counts["n-over-quota"] > 0
    _assert_counts_add_up(result)


def test_progress_is_logged_per_batch_and_class(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Prepare
    generator = _Healthy()
    spec = SynthesisSpec(n_per_class=4, classes=(0, 2), seed=3)
    classify = _curator(generator, reject=_half_of_class_2)

    # Execute
    with caplog.at_level(logging.INFO, "fedbone.generative"):
        _run(generator, spec, classify=classify)

    # Assert
    assert "synthesis batch 1/8, class 0: 4 generated" in caplog.text
    assert "synthesis batch 2/8, class 2:" in caplog.text
    assert "synthesis batch 2/8, class 0" not in caplog.text


def test_summary_carries_curation_and_realism_figures() -> None:
    # Prepare
    spec = SynthesisSpec(n_per_class=3, seed=3)

    # Execute
    summary = _run(_Healthy(), spec, curation_val_auc=0.81).summary()

    # Assert
    assert summary["curation-val-auc"] == 0.81
    assert summary["curation-agreement-class-3"] == 1.0
    assert summary["n-unrealistic"] == 0
    assert summary["fraction-unrealistic"] == 0.0
    assert 0.0 <= summary["nearest-rank-q50"] <= 1.0  # type: ignore[operator]
    _assert_releasable(summary)


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
