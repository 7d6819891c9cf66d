"""Perceptual features of the site encoder and the LPIPS-like distance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedbone.enhance.perceptual import PerceptualFeatures, perceptual_distance
from fedbone.generative.fidelity.encoders import (
    EncoderSpec,
    SiteEncoder,
    train_site_encoder,
)
from fedbone.validation.errors import EvaluationError

HEIGHT, WIDTH = 32, 16


def blob_images(count: int, seed: int) -> np.ndarray:
    """Dim noisy canvases with a bright square, in [0, 1]."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 0.2, size=(count, HEIGHT, WIDTH))
    for image in images:
        row, col = rng.integers(2, HEIGHT - 10), rng.integers(2, WIDTH - 8)
        image[row : row + 8, col : col + 6] += 0.7
    return images.clip(0.0, 1.0).astype(np.float32)


@pytest.fixture(scope="module")
def encoder() -> SiteEncoder:
    images = blob_images(16, seed=0)
    labels = np.repeat([0, 1], 8)
    spec = EncoderSpec(feature_dim=8, epochs=1, batch_size=8, device="cpu")
    return train_site_encoder(images, labels, spec)


def _grad_copy(parameter: torch.Tensor) -> torch.Tensor | None:
    return None if parameter.grad is None else parameter.grad.clone()


def unit_channels(features: np.ndarray) -> np.ndarray:
    return features / np.linalg.norm(features, axis=1, keepdims=True)


def test_features_are_the_outputs_of_the_four_encoder_blocks(
    encoder: SiteEncoder,
) -> None:
    batch = torch.from_numpy(blob_images(3, seed=1)).unsqueeze(1)

    maps = PerceptualFeatures(encoder)(batch)

    with torch.no_grad():
        expected = []
        x = batch
        for block in encoder.network.blocks:
            x = block(x)
            expected.append(x)
    assert [tuple(m.shape) for m in maps] == [
        (3, 16, 16, 8),
        (3, 32, 8, 4),
        (3, 64, 4, 2),
        (3, 128, 2, 1),
    ]
    for found, wanted in zip(maps, expected, strict=True):
        torch.testing.assert_close(found, wanted)


def test_features_pass_gradients_to_the_input_only(encoder: SiteEncoder) -> None:
    features = PerceptualFeatures(encoder)
    batch = torch.from_numpy(blob_images(2, seed=2)).unsqueeze(1).requires_grad_()
    # Training leaves the last step's gradients on the encoder's parameters.
    before = [_grad_copy(p) for p in encoder.network.parameters()]

    loss = sum(m.square().mean() for m in features(batch))
    assert isinstance(loss, torch.Tensor)
    loss.backward()

    assert batch.grad is not None
    assert batch.grad.abs().sum() > 0
    assert all(p.grad is None for p in features.blocks.parameters())
    # The caller's encoder is neither frozen nor touched.
    assert all(p.requires_grad for p in encoder.network.parameters())
    after = [_grad_copy(p) for p in encoder.network.parameters()]
    assert all(
        (old is None and new is None)
        or (old is not None and new is not None and torch.equal(old, new))
        for old, new in zip(before, after, strict=True)
    )


def test_distance_matches_unweighted_lpips_from_the_definition(
    encoder: SiteEncoder,
) -> None:
    first = blob_images(4, seed=3)
    rng = np.random.default_rng(4)
    second = np.clip(first + rng.normal(0, 0.1, first.shape), 0, 1).astype(np.float32)

    distances = perceptual_distance(PerceptualFeatures(encoder), first, second)

    with torch.no_grad():
        a, b = (torch.from_numpy(x).unsqueeze(1) for x in (first, second))
        per_block = []
        for block in encoder.network.blocks:
            a, b = block(a), block(b)
            squared = (unit_channels(a.numpy()) - unit_channels(b.numpy())) ** 2
            per_block.append(squared.sum(axis=1).mean(axis=(1, 2)))
    expected = np.mean(per_block, axis=0)
    assert distances.shape == (4,)
    assert distances.dtype == np.float64
    np.testing.assert_allclose(distances, expected, rtol=1e-4, atol=1e-7)


def test_distance_is_zero_for_identical_images_symmetric_and_grows_with_noise(
    encoder: SiteEncoder,
) -> None:
    features = PerceptualFeatures(encoder)
    clean = blob_images(6, seed=5)
    rng = np.random.default_rng(6)
    noise = rng.normal(0, 1, clean.shape).astype(np.float32)
    light = np.clip(clean + 0.02 * noise, 0, 1)
    heavy = np.clip(clean + 0.2 * noise, 0, 1)

    same = perceptual_distance(features, clean, clean)
    forward = perceptual_distance(features, clean, heavy)
    backward = perceptual_distance(features, heavy, clean)
    small = perceptual_distance(features, clean, light)

    np.testing.assert_allclose(same, 0.0, atol=1e-12)
    np.testing.assert_allclose(forward, backward, rtol=1e-6)
    assert (small < forward).all()
    assert ((forward >= 0) & (forward <= 4)).all()


def test_inputs_are_checked_with_every_problem_listed(encoder: SiteEncoder) -> None:
    features = PerceptualFeatures(encoder)
    images = blob_images(2, seed=7)

    with pytest.raises(EvaluationError) as caught:
        perceptual_distance(features, images[0], images[:, :16])
    assert set(caught.value.codes) == {"not-image-batch", "shape-mismatch"}

    with pytest.raises(EvaluationError) as caught:
        features(torch.zeros(2, 3, 8, 8, dtype=torch.int64))
    assert set(caught.value.codes) == {"not-image-batch", "not-floating-point"}
