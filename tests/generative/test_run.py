"""A site's GAN run: checkpoints with digests, FD model selection, resuming."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional

from fedbone.classifier.errors import TrainingError
from fedbone.generative.audit.similarity import FeatureFn
from fedbone.generative.fidelity.distances import frechet_distance
from fedbone.generative.run import (
    CheckpointInfo,
    GanRunSpec,
    class_conditional_fd,
    select_best,
    train_site_gan,
)
from fedbone.generative.trainer import GanTrainer, GanTrainSpec
from fedbone.models.gan import GanSpec

TINY = GanSpec(
    height=32,
    width=16,
    latent_dim=8,
    style_dim=8,
    n_classes=4,
    base_channels=4,
    max_channels=8,
    mapping_layers=1,
    upsamplings=2,
)
FAST = GanTrainSpec(batch_size=8, ema_half_life_images=100, device="cpu", seed=3)
RUN = GanRunSpec(steps=6, checkpoint_every=2, fd_images_per_class=6, seed=1)


def _scans(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random images with a class-dependent bright band."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    coarse = torch.from_numpy(rng.random((n, 1, 4, 2), dtype=np.float32))
    smooth = functional.interpolate(coarse, size=(32, 16), mode="bilinear")
    images = 0.5 * smooth[:, 0].numpy()
    for c in range(4):
        images[labels == c, 8 * c : 8 * c + 8] += 0.4
    return np.clip(images, 0, 1), labels


def _pooled(images: np.ndarray) -> np.ndarray:
    """8 features per image: 8 x 8 block means."""
    tensor = torch.from_numpy(np.asarray(images, dtype=np.float32))[:, None]
    return functional.avg_pool2d(tensor, 8).flatten(1).numpy()


def _favouring_middle_checkpoint() -> tuple[list[int], FeatureFn]:
    """An embedding whose generated features are offset except at checkpoint 2.

    ``train_site_gan`` embeds the held-out scans first, then each checkpoint's
    images once, so the call count tells which checkpoint is being scored.
    """
    calls: list[int] = []

    def embed(images: np.ndarray) -> np.ndarray:
        calls.append(len(images))
        checkpoint = len(calls) - 1  # 0: the held-out scans
        offset = 0.0 if checkpoint in (0, 2) else 5.0 * checkpoint
        return _pooled(images) + offset

    return calls, embed


def test_run_saves_a_checkpoint_per_chunk_with_its_digest(tmp_path: Path) -> None:
    # Prepare
    images, labels = _scans(24, seed=0)
    held_out, held_out_labels = _scans(12, seed=1)
    trainer = GanTrainer(TINY, FAST)

    # Execute
    result = train_site_gan(
        trainer,
        images,
        labels,
        held_out=held_out,
        held_out_labels=held_out_labels,
        embed=_pooled,
        spec=GanRunSpec(steps=5, checkpoint_every=2, fd_images_per_class=6),
        checkpoint_dir=tmp_path / "gan",
    )

    # Assert
    assert [info.step for info in result.checkpoints] == [2, 4, 5]
    for info in result.checkpoints:
        digest = hashlib.sha256(Path(info.path).read_bytes()).hexdigest()
        assert digest == info.sha256
        assert np.isfinite([info.fd, info.kid, info.precision, info.recall]).all()
    assert result.best.fd == min(info.fd for info in result.checkpoints)
    assert result.images_seen == 5 * FAST.batch_size


def test_trainer_is_left_at_the_lowest_fd_checkpoint(tmp_path: Path) -> None:
    # Prepare
    images, labels = _scans(24, seed=0)
    held_out, held_out_labels = _scans(12, seed=1)
    trainer = GanTrainer(TINY, FAST)
    _, embed = _favouring_middle_checkpoint()
    probe = np.arange(8) % 4

    # Execute
    result = train_site_gan(
        trainer,
        images,
        labels,
        held_out=held_out,
        held_out_labels=held_out_labels,
        embed=embed,
        spec=RUN,
        checkpoint_dir=tmp_path,
    )

    # Assert
    assert result.best.step == 4
    assert trainer.steps == 4
    best = GanTrainer.load(result.best.path, device="cpu")
    last = GanTrainer.load(result.checkpoints[-1].path, device="cpu")
    mine = trainer.generate(probe, seed=9)
    np.testing.assert_array_equal(mine, best.generate(probe, seed=9))
    assert not np.array_equal(mine, last.generate(probe, seed=9))


def test_generated_sets_mirror_the_held_out_classes(tmp_path: Path) -> None:
    # Prepare
    images, labels = _scans(24, seed=0)
    held_out, held_out_labels = _scans(12, seed=1)
    two_classes = held_out_labels < 2
    calls, embed = _favouring_middle_checkpoint()

    # Execute
    train_site_gan(
        GanTrainer(TINY, FAST),
        images,
        labels,
        held_out=held_out[two_classes],
        held_out_labels=held_out_labels[two_classes],
        embed=embed,
        spec=GanRunSpec(steps=1, checkpoint_every=1, fd_images_per_class=5),
        checkpoint_dir=tmp_path,
    )

    # Assert
    assert calls == [int(two_classes.sum()), 2 * 5]


def test_resumed_trainer_continues_step_numbers(tmp_path: Path) -> None:
    # Prepare
    images, labels = _scans(24, seed=0)
    held_out, held_out_labels = _scans(12, seed=1)
    trainer = GanTrainer(TINY, FAST)
    trainer.train(images, labels, 3)

    # Execute
    result = train_site_gan(
        trainer,
        images,
        labels,
        held_out=held_out,
        held_out_labels=held_out_labels,
        embed=_pooled,
        spec=GanRunSpec(steps=4, checkpoint_every=2, fd_images_per_class=4),
        checkpoint_dir=tmp_path,
    )

    # Assert
    assert [info.step for info in result.checkpoints] == [5, 7]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "gan-step-5.pt",
        "gan-step-7.pt",
    ]
    assert result.images_seen == 4 * FAST.batch_size


def test_metrics_are_flat_kebab_case_scalars(tmp_path: Path) -> None:
    # Prepare
    images, labels = _scans(24, seed=0)
    held_out, held_out_labels = _scans(12, seed=1)
    _, embed = _favouring_middle_checkpoint()
    result = train_site_gan(
        GanTrainer(TINY, FAST),
        images,
        labels,
        held_out=held_out,
        held_out_labels=held_out_labels,
        embed=embed,
        spec=RUN,
        checkpoint_dir=tmp_path,
    )

    # Execute
    metrics = result.to_metrics()

    # Assert
    assert all(isinstance(value, float) for value in metrics.values())
    assert all(key == key.lower() and "_" not in key for key in metrics)
    assert metrics["best-step"] == 4.0
    assert metrics["best-fd"] == metrics["fd-step-4"] < metrics["fd-step-6"]
    assert {"fd-step-2", "kid-step-2", "precision-step-2", "recall-step-2"} <= set(
        metrics
    )
    assert metrics["n-checkpoints"] == 3.0


def test_select_best_takes_lowest_fd_and_earliest_on_ties() -> None:
    # Prepare
    def info(step: int, fd: float) -> CheckpointInfo:
        return CheckpointInfo(step, f"{step}.pt", "0" * 64, fd, 0.0, 1.0, 1.0)

    checkpoints = [info(1, 3.0), info(2, 1.0), info(3, 1.0), info(4, 2.0)]

    # Execute
    best = select_best(checkpoints)

    # Assert
    assert best.step == 2
    with pytest.raises(TrainingError, match="no-checkpoints"):
        select_best([])


def test_the_class_conditional_fd_selects_over_the_overall_fd() -> None:
    # Prepare: step 2 is worse overall but better class by class.
    def info(step: int, fd: float, intra_fd: float) -> CheckpointInfo:
        return CheckpointInfo(step, f"{step}.pt", "0" * 64, fd, 0.0, 1.0, 1.0, intra_fd)

    checkpoints = [info(1, 1.0, 5.0), info(2, 2.0, 3.0)]

    # Execute
    best = select_best(checkpoints)

    # Assert
    assert best.step == 2


def test_class_conditional_fd_sees_a_generator_that_ignores_its_label() -> None:
    # Prepare: two classes far apart in feature space; 90% of the real ones
    # are class 0, as at a site whose held-out scans are mostly negatives.
    rng = np.random.default_rng(0)
    real_labels = np.array([0] * 90 + [1] * 10)
    real = rng.normal(size=(100, 3)) + 6.0 * real_labels[:, None]
    fake_labels = np.repeat([0, 1], 32)
    faithful = rng.normal(size=(64, 3)) + 6.0 * fake_labels[:, None]
    label_blind = rng.normal(size=(64, 3))  # draws class 0 for every label

    # Execute
    faithful_fd = class_conditional_fd(real, real_labels, faithful, fake_labels)
    blind_fd = class_conditional_fd(real, real_labels, label_blind, fake_labels)
    too_few = class_conditional_fd(real[:5], real_labels[:5], faithful, fake_labels)

    # Assert
    assert faithful_fd < blind_fd
    assert frechet_distance(real, label_blind) < frechet_distance(real, faithful)
    assert np.isnan(too_few)


def test_bad_run_spec_lists_every_problem() -> None:
    # Execute
    with pytest.raises(TrainingError) as raised:
        GanRunSpec(steps=0, checkpoint_every=0, fd_images_per_class=2)

    # Assert
    assert raised.value.codes.count("not-positive") == 2
    assert "too-few-fd-images" in raised.value.codes


def test_bad_held_out_scans_are_refused_before_training(tmp_path: Path) -> None:
    # Prepare
    images, labels = _scans(24, seed=0)
    trainer = GanTrainer(TINY, FAST)

    # Execute
    with pytest.raises(TrainingError) as raised:
        train_site_gan(
            trainer,
            images,
            labels,
            held_out=np.zeros((3, 32, 8), np.float32),
            held_out_labels=np.array([0, 1, 7]),
            embed=_pooled,
            spec=RUN,
            checkpoint_dir=tmp_path,
        )

    # Assert
    assert set(raised.value.codes) == {
        "held-out-shape",
        "label-out-of-range",
        "too-few-held-out",
    }
    assert trainer.steps == 0
    assert not any(tmp_path.iterdir())
