"""Local GAN training: EMA, class labels, learning, checkpoints, determinism."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fedbone.classifier.errors import TrainingError
from fedbone.generative.trainer import (
    GanTrainer,
    GanTrainSpec,
    class_labels,
    ema_update,
)
from fedbone.models.gan import GanSpec

TINY = GanSpec(
    height=32,
    width=8,
    latent_dim=16,
    style_dim=16,
    n_classes=2,
    base_channels=8,
    max_channels=16,
    mapping_layers=2,
    upsamplings=2,
)
FAST = GanTrainSpec(batch_size=16, ema_half_life_images=500, device="cpu", seed=7)


def _two_patterns(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class 0 bright on top, class 1 bright at the bottom, with a little noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = np.full((n, 32, 8), 0.1, dtype=np.float32)
    images[labels == 0, :16] = 0.8
    images[labels == 1, 16:] = 0.8
    images += rng.normal(0, 0.03, images.shape).astype(np.float32)
    return np.clip(images, 0, 1), labels


class _Scaled(nn.Module):
    def __init__(self, weight: float, mean: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((3,), weight))
        self.register_buffer("mean", torch.full((3,), mean))


def test_ema_update_follows_the_formula_and_copies_buffers() -> None:
    # Prepare
    ema, model = _Scaled(1.0, 0.0), _Scaled(3.0, 5.0)

    # Execute
    ema_update(ema, model, beta=0.75)

    # Assert
    assert torch.allclose(ema.weight, torch.full((3,), 0.75 * 1.0 + 0.25 * 3.0))
    assert torch.equal(ema.get_buffer("mean"), torch.full((3,), 5.0))
    assert torch.equal(model.weight, torch.full((3,), 3.0))


def test_class_labels_combine_bm_and_ca_and_mark_unknowns() -> None:
    # Execute
    labels = class_labels(np.array([0, 0, 1, 1, -1, 1]), np.array([0, 1, 0, 1, 0, -1]))

    # Assert
    assert labels.tolist() == [0, 1, 2, 3, -1, -1]


def test_labels_outside_the_classes_and_wrong_shapes_are_refused_together() -> None:
    # Prepare
    trainer = GanTrainer(TINY, FAST)
    images = np.zeros((3, 16, 8), np.float32)

    # Execute
    with pytest.raises(TrainingError) as caught:
        trainer.train(images, np.array([0, -1, 1]), steps=1)

    # Assert
    assert set(caught.value.codes) == {"label-out-of-range", "image-shape"}


def test_generated_class_means_move_towards_the_real_class_means() -> None:
    # Prepare
    images, labels = _two_patterns(64)
    # From mid-grey: on this toy the mean image is half of each pattern, and
    # 150 steps from it are too few (the prior is checked on its own below).
    trainer = GanTrainer(TINY, replace(FAST, image_prior=False))
    real_difference = images[labels == 1].mean(0) - images[labels == 0].mean(0)

    # Execute
    result = trainer.train(images, labels, steps=150)
    fakes = trainer.generate(np.array([0, 1] * 32), seed=0)

    # Assert: the bottom-minus-top contrast of class 1 over class 0 is learned.
    fake_difference = fakes[1::2].mean(0) - fakes[0::2].mean(0)
    correlation = np.corrcoef(real_difference.ravel(), fake_difference.ravel())[0, 1]
    assert result.steps == 150
    assert result.images_seen == 150 * 16
    assert np.isfinite([result.d_loss, result.g_loss]).all()
    assert correlation > 0.5


def test_save_and_load_give_identical_generation(tmp_path: Path) -> None:
    # Prepare
    images, labels = _two_patterns(16)
    trainer = GanTrainer(TINY, FAST)
    trainer.train(images, labels, steps=3)
    path = tmp_path / "gan.pt"

    # Execute
    digest = trainer.save(path)
    restored = GanTrainer.load(path)

    # Assert
    wanted = np.array([0, 1, 1, 0, 1])
    expected = trainer.generate(wanted, seed=11, batch_size=2)
    assert len(digest) == 64
    assert restored.steps == 3
    assert restored.images_seen == 48
    assert np.array_equal(restored.generate(wanted, seed=11, batch_size=2), expected)
    assert expected.dtype == np.float32
    assert expected.shape == (5, 32, 8)
    assert 0.0 <= expected.min() <= expected.max() <= 1.0


def test_training_is_deterministic_with_a_seed_on_cpu() -> None:
    # Prepare
    images, labels = _two_patterns(16)

    # Execute
    outputs = []
    for _ in range(2):
        trainer = GanTrainer(TINY, FAST)
        trainer.train(lambda positions: images[positions], labels, steps=3)
        outputs.append(trainer.generate(np.array([0, 1]), seed=0))

    # Assert
    assert np.array_equal(outputs[0], outputs[1])


def test_the_generator_starts_from_the_mean_training_scan() -> None:
    # Prepare
    images, labels = _two_patterns(32)
    trainer = GanTrainer(TINY, FAST)

    # Execute
    trainer.train(images, labels, steps=1)
    prior = torch.sigmoid(trainer.generator_ema.image_prior[0, 0]).numpy()

    # Assert: the prior is the mean scan (clipped away from 0 and 1), moved by
    # at most one Adam step.
    expected = np.clip(images.mean(0), 1e-3, 1 - 1e-3)
    np.testing.assert_allclose(prior, expected, atol=2e-3)


def test_without_the_option_the_generator_starts_from_mid_grey() -> None:
    # Prepare
    images, labels = _two_patterns(32)
    trainer = GanTrainer(TINY, replace(FAST, image_prior=False))

    # Execute
    trainer.train(images, labels, steps=1)

    # Assert: only one Adam step (lr 2e-3) away from zero.
    assert float(trainer.generator.image_prior.abs().max()) < 0.01


def test_a_negative_class_loss_weight_is_refused() -> None:
    # Execute
    with pytest.raises(TrainingError) as caught:
        GanTrainSpec(class_loss_weight=-1.0)

    # Assert
    assert "negative" in caught.value.codes


@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_only_a_class_loss_weight_trains_the_class_head(weight: float) -> None:
    # Prepare
    images, labels = _two_patterns(32)
    trainer = GanTrainer(
        replace(TINY, class_head=True), replace(FAST, class_loss_weight=weight)
    )
    head = trainer.discriminator.class_head
    assert head is not None
    before = head.linear.weight.detach().clone()

    # Execute
    trainer.train(images, labels, steps=3)

    # Assert
    changed = not torch.equal(before, head.linear.weight.detach())
    assert changed == (weight > 0)


def test_the_mode_seeking_term_is_large_for_a_collapsed_class() -> None:
    # Prepare
    from fedbone.generative.trainer import _mode_seeking_loss

    z = torch.randn(8, 16)
    collapsed = torch.full((8, 1, 32, 8), 0.5)
    varied = torch.rand(8, 1, 32, 8)

    # Execute
    on_collapsed = _mode_seeking_loss(collapsed, z)
    on_varied = _mode_seeking_loss(varied, z)

    # Assert
    assert float(on_collapsed) > 100 * float(on_varied)


def test_training_with_the_mode_seeking_term_runs_and_counts_images() -> None:
    # Prepare
    images, labels = _two_patterns(32)
    trainer = GanTrainer(TINY, replace(FAST, diversity_weight=1.0))

    # Execute
    result = trainer.train(images, labels, steps=3)

    # Assert
    assert result.images_seen == 3 * 16
    assert np.isfinite([result.d_loss, result.g_loss]).all()


def test_a_class_loss_without_a_class_head_is_refused() -> None:
    # Execute
    with pytest.raises(TrainingError) as caught:
        GanTrainer(TINY, replace(FAST, class_loss_weight=1.0))

    # Assert
    assert caught.value.codes == ["no-class-head"]
