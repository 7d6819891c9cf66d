"""Local enhancer rounds and whole-scan inference on tiny toy scans."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional

from fedbone.enhance.errors import EnhanceError
from fedbone.enhance.inference import enhance
from fedbone.enhance.training import EnhancerTraining, train_enhancer
from fedbone.models.enhancers import EnhancerSpec, generator_arrays, initial_arrays

GAN = EnhancerSpec("rrdbnet", width=8, blocks=2, growth=4)
THREE_STEPS = EnhancerTraining(steps_per_epoch=3, batch_size=4, patch=(32, 16))


def toy_scans(
    count: int, seed: int, shape: tuple[int, int] = (64, 32)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(inputs, targets, truth)``: 2x-thinned blobs, standard, noise-free.

    All three are divided by the same per-scan level (the 99.5th percentile of
    the input), as the intensity convention does.
    """
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    expected = np.full((count, *shape), 2.0)
    for image in expected:
        for _ in range(3):
            row, col = rng.uniform(8, shape[0] - 8), rng.uniform(6, shape[1] - 6)
            width = rng.uniform(2.5, 5.0)
            peak = 40.0 * rng.uniform(0.5, 1.0)
            image += peak * np.exp(-((rows - row) ** 2 + (cols - col) ** 2) / width**2)
    standard = rng.poisson(expected)
    fast = rng.binomial(standard, 0.5)
    level = np.percentile(2.0 * fast, 99.5, axis=(1, 2), keepdims=True)
    return (
        (2.0 * fast / level).astype(np.float32),
        (standard / level).astype(np.float32),
        (expected / level).astype(np.float32),
    )


def tiny_perceptual() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU()).requires_grad_(False)


@pytest.mark.parametrize(
    "spec",
    [
        EnhancerSpec("dncnn", width=16, blocks=5),
        EnhancerSpec("ddsrcnn", width=16, blocks=2),
    ],
    ids=lambda spec: spec.method,
)
def test_training_on_thinned_scans_removes_noise(spec: EnhancerSpec) -> None:
    # Prepare
    inputs, targets, _ = toy_scans(32, seed=0)
    held_out, _, truth = toy_scans(16, seed=1)
    training = EnhancerTraining(
        steps_per_epoch=100, batch_size=8, patch=(32, 32), lr=1e-3
    )

    # Execute
    trained = train_enhancer(
        spec,
        initial_arrays(spec, seed=0),
        inputs,
        targets,
        training=training,
        perceptual=None,
        seed=0,
    )
    enhanced = enhance(spec, trained.arrays, held_out)

    # Assert
    noisy_error = np.mean((held_out - truth) ** 2)
    assert np.mean((enhanced - truth) ** 2) < 0.75 * noisy_error
    assert trained.metrics["steps"] == 100
    assert trained.metrics["seconds"] > 0
    assert np.isfinite(trained.metrics["train-loss"])


def test_gan_round_updates_both_networks_and_reports_their_losses() -> None:
    # Prepare
    inputs, targets, _ = toy_scans(8, seed=0)
    arrays = initial_arrays(GAN, seed=0)
    features = tiny_perceptual()

    def perceptual(images: torch.Tensor) -> list[torch.Tensor]:
        first = features(images)
        return [first, functional.avg_pool2d(first, 2)]

    # Execute
    trained = train_enhancer(
        GAN,
        arrays,
        inputs,
        targets,
        training=THREE_STEPS,
        perceptual=perceptual,
        seed=0,
    )

    # Assert
    assert trained.arrays.keys() == arrays.keys()
    assert all(
        trained.arrays[key].shape == value.shape
        and trained.arrays[key].dtype == value.dtype
        for key, value in arrays.items()
    )
    changed = {
        key.split(".")[0]
        for key, value in arrays.items()
        if not np.array_equal(trained.arrays[key], value)
    }
    assert changed == {"generator", "discriminator"}
    assert set(trained.metrics) == {
        "train-loss",
        "d-loss",
        "g-loss",
        "steps",
        "seconds",
    }
    assert all(np.isfinite(value) for value in trained.metrics.values())
    assert trained.metrics["steps"] == 3


def test_gan_round_without_perceptual_features_says_it_drops_the_term(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Prepare
    inputs, targets, _ = toy_scans(8, seed=0)
    caplog.set_level(logging.INFO, logger="fedbone.enhance.training")

    # Execute
    trained = train_enhancer(
        GAN,
        initial_arrays(GAN, seed=0),
        inputs,
        targets,
        training=THREE_STEPS,
        perceptual=None,
        seed=0,
    )

    # Assert
    assert "perceptual term is dropped" in caplog.text
    assert np.isfinite(trained.metrics["train-loss"])


def test_the_same_seed_gives_the_same_round() -> None:
    # Prepare
    spec = EnhancerSpec("dncnn", width=8, blocks=4)
    inputs, targets, _ = toy_scans(8, seed=0)
    arrays = initial_arrays(spec, seed=0)

    def round_with(seed: int) -> dict[str, np.ndarray]:
        return train_enhancer(
            spec,
            arrays,
            inputs,
            targets,
            training=THREE_STEPS,
            perceptual=None,
            seed=seed,
        ).arrays

    # Execute
    first, again, other = round_with(5), round_with(5), round_with(6)

    # Assert
    assert all(np.array_equal(first[key], again[key]) for key in first)
    assert any(not np.array_equal(first[key], other[key]) for key in first)


def test_bad_pairs_are_refused_with_every_problem_before_training() -> None:
    # Prepare
    spec = EnhancerSpec("dncnn", width=8, blocks=3)
    inputs = np.zeros((4, 16, 8), dtype=np.float32)
    targets = np.zeros((3, 16, 8), dtype=np.float32)

    # Execute
    with pytest.raises(EnhanceError) as caught:
        train_enhancer(
            spec,
            initial_arrays(spec, seed=0),
            inputs,
            targets,
            training=EnhancerTraining(patch=(64, 32)),
            perceptual=None,
            seed=0,
        )

    # Assert
    assert caught.value.codes == ["shape-mismatch", "patch-too-large"]


def test_arrays_of_another_network_are_refused() -> None:
    # Prepare
    inputs, targets, _ = toy_scans(2, seed=0)
    wrong = initial_arrays(EnhancerSpec("ddsrcnn", width=8, blocks=1), seed=0)

    # Execute
    with pytest.raises(EnhanceError) as caught:
        train_enhancer(
            EnhancerSpec("dncnn", width=8, blocks=3),
            wrong,
            inputs,
            targets,
            training=THREE_STEPS,
            perceptual=None,
            seed=0,
        )

    # Assert
    assert {"unknown-key", "missing-key"} <= set(caught.value.codes)


def test_training_settings_list_every_problem() -> None:
    # Execute
    with pytest.raises(EnhanceError) as caught:
        EnhancerTraining(epochs=0, patch=(0, 32), lr=0.0, gan_weight=-1.0)

    # Assert
    assert caught.value.codes == [
        "not-positive",
        "bad-patch",
        "not-positive",
        "negative-weight",
    ]


def test_batched_inference_matches_one_scan_at_a_time_and_ignores_the_critic() -> None:
    # Prepare
    inputs, _, _ = toy_scans(5, seed=3)
    arrays = initial_arrays(GAN, seed=0)
    tail = arrays["generator.tail.weight"]
    arrays["generator.tail.weight"] = np.full_like(tail, 0.01)

    # Execute
    batched = enhance(GAN, arrays, inputs, batch_size=2)
    single = np.concatenate(
        [
            enhance(GAN, generator_arrays(GAN, arrays), inputs[i : i + 1])
            for i in range(5)
        ]
    )

    # Assert
    assert batched.shape == inputs.shape and batched.dtype == np.float32
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_inference_refuses_sizes_that_are_not_multiples_of_four() -> None:
    # Prepare
    spec = EnhancerSpec("dncnn", width=8, blocks=3)

    # Execute
    with pytest.raises(EnhanceError) as caught:
        enhance(spec, initial_arrays(spec, seed=0), np.zeros((1, 30, 16), np.float32))

    # Assert
    assert caught.value.codes == ["size-not-multiple-of-4"]
