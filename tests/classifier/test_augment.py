from __future__ import annotations

import torch

from fedbone.classifier.augment import Augmenter, AugmentSpec


def batch() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(6, 1, 64, 16, generator=generator)


def test_same_seed_gives_the_same_augmented_batch() -> None:
    images = batch()

    first = Augmenter(AugmentSpec(), seed=4)(images)
    second = Augmenter(AugmentSpec(), seed=4)(images)
    other = Augmenter(AugmentSpec(), seed=5)(images)

    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_augmentation_keeps_shape_and_dtype_and_changes_pixels() -> None:
    images = batch()

    out = Augmenter(AugmentSpec(), seed=0)(images)

    assert out.shape == images.shape and out.dtype == torch.float32
    assert type(out) is torch.Tensor
    assert torch.isfinite(out).all()
    assert not torch.equal(out, images)
    assert torch.equal(images, batch())  # the input is not modified


def test_each_image_draws_its_own_parameters() -> None:
    same = batch()[:1].repeat(8, 1, 1, 1)

    out = Augmenter(AugmentSpec(), seed=0)(same)

    assert len({tuple(image.flatten()[:50].tolist()) for image in out}) > 1


def test_flip_only_mirrors_left_and_right() -> None:
    images = batch()
    spec = AugmentSpec(
        flip_prob=1.0,
        affine_prob=0.0,
        noise_prob=0.0,
        shift_prob=0.0,
        scale_prob=0.0,
        smooth_prob=0.0,
    )

    out = Augmenter(spec, seed=0)(images)

    assert torch.equal(out, images.flip(-1))


def test_disabled_spec_returns_the_batch_unchanged() -> None:
    images = batch()

    out = Augmenter(AugmentSpec(enabled=False), seed=0)(images)

    assert out is images
