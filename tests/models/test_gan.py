"""Conditional GAN models: shapes, conditioning, modulation, ADA, batch coupling."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from fedbone.models.errors import ModelError
from fedbone.models.gan import (
    AdaptiveProbability,
    ConditionalGenerator,
    GanSpec,
    ModulatedConv2d,
    augment,
    build_discriminator,
)

TINY = GanSpec(
    height=32,
    width=8,
    latent_dim=16,
    style_dim=16,
    base_channels=8,
    max_channels=16,
    mapping_layers=2,
    upsamplings=2,
)


@pytest.mark.parametrize(
    ("spec", "initial"),
    [
        (GanSpec(), (8, 2)),
        (GanSpec(height=1024, width=256, base_channels=4, max_channels=16), (32, 8)),
    ],
    ids=["cpu-256x64", "paper-1024x256"],
)
def test_generator_and_discriminator_run_at_both_profiles(
    spec: GanSpec, initial: tuple[int, int]
) -> None:
    # Prepare
    torch.manual_seed(0)
    generator = ConditionalGenerator(spec)
    discriminator = build_discriminator(spec)
    z = torch.randn(2, spec.latent_dim)
    labels = torch.tensor([0, 3])

    # Execute
    with torch.no_grad():
        images = generator(z, labels)
        logits = discriminator(images, labels)

    # Assert
    assert spec.initial_size == initial
    assert tuple(generator.constant.shape[1:]) == initial
    assert images.shape == (2, 1, spec.height, spec.width)
    assert float(images.min()) >= 0.0
    assert float(images.max()) <= 1.0
    assert logits.shape == (2,)
    assert torch.isfinite(logits).all()


def test_canvas_not_divisible_by_the_upsamplings_is_refused() -> None:
    # Execute
    with pytest.raises(ModelError) as caught:
        GanSpec(height=100, width=64, max_channels=8)

    # Assert
    assert set(caught.value.codes) == {"canvas-not-divisible", "channel-cap-too-small"}


def test_same_latent_with_different_labels_gives_different_images() -> None:
    # Prepare
    torch.manual_seed(1)
    generator = ConditionalGenerator(TINY).eval()
    z = torch.randn(1, TINY.latent_dim).repeat(4, 1)
    labels = torch.arange(4)

    # Execute
    with torch.no_grad():
        images = generator(z, labels, generator=torch.Generator().manual_seed(0))

    # Assert
    for a in range(4):
        for b in range(a + 1, 4):
            assert float((images[a] - images[b]).abs().mean()) > 1e-3


def test_truncation_zero_collapses_latents_to_their_class_mean_style() -> None:
    # Prepare: training-mode passes of class 1 only track that class's mean w.
    torch.manual_seed(2)
    generator = ConditionalGenerator(TINY)
    generator.train()
    with torch.no_grad():
        for _ in range(3):
            generator(torch.randn(8, TINY.latent_dim), torch.ones(8, dtype=torch.long))
    generator.eval()
    w_avg = generator.get_buffer("w_avg")
    z = torch.randn(2, TINY.latent_dim)
    labels = torch.tensor([1, 1])
    # Per-pixel noise starts switched off (zero strength), so only w differs.
    strengths = [
        p for name, p in generator.named_parameters() if name.endswith("noise_strength")
    ]
    assert strengths
    assert all(float(s.detach().abs().max()) == 0 for s in strengths)

    # Execute
    with torch.no_grad():
        free = generator(z, labels, generator=torch.Generator().manual_seed(0))
        truncated = generator(
            z, labels, truncation=0.0, generator=torch.Generator().manual_seed(0)
        )

    # Assert
    assert float(w_avg[1].abs().max()) > 0
    assert torch.equal(w_avg[0], torch.zeros_like(w_avg[0]))
    assert float((free[0] - free[1]).abs().max()) > 1e-4
    assert torch.allclose(truncated[0], truncated[1], atol=1e-6)


def test_demodulated_convolution_keeps_unit_output_std() -> None:
    # Prepare
    torch.manual_seed(3)
    conv = ModulatedConv2d(64, 64, 3, style_dim=32)
    x = torch.randn(8, 64, 32, 32)
    w = torch.randn(8, 32) * 3.0

    # Execute
    with torch.no_grad():
        out = conv(x, w)

    # Assert
    assert out.std().item() == pytest.approx(1.0, abs=0.1)


def test_augment_with_zero_probability_is_identity_and_is_differentiable() -> None:
    # Prepare
    torch.manual_seed(4)
    images = torch.rand(4, 1, 32, 8, requires_grad=True)

    # Execute
    unchanged = augment(images, 0.0)
    changed = augment(images, 1.0)
    changed.sum().backward()

    # Assert
    assert unchanged is images
    assert changed.shape == images.shape
    assert not torch.allclose(changed, images)
    assert images.grad is not None
    assert float(images.grad.abs().sum()) > 0


def test_adaptive_probability_rises_when_d_is_overconfident_on_reals() -> None:
    # Prepare
    ada = AdaptiveProbability(target=0.6, speed_images=1000, interval=1, p=0.5)
    overconfident = torch.full((100,), 5.0)

    # Execute
    ada.observe(overconfident)

    # Assert: 100 images move p by 100 / 1000.
    assert ada.p == pytest.approx(0.6)


def test_adaptive_probability_falls_when_d_is_unsure_and_stays_in_bounds() -> None:
    # Prepare
    ada = AdaptiveProbability(target=0.6, speed_images=1000, interval=2, p=0.05)
    unsure = torch.tensor([1.0, -1.0] * 50)

    # Execute
    ada.observe(unsure)
    after_one = ada.p
    ada.observe(unsure)

    # Assert: adjusted only after `interval` steps, then clamped at 0.
    assert after_one == pytest.approx(0.05)
    assert ada.p == 0.0


@pytest.mark.parametrize("dp_compatible", [True, False])
def test_discriminator_batch_coupling(dp_compatible: bool) -> None:
    # Prepare
    torch.manual_seed(5)
    discriminator = build_discriminator(TINY, dp_compatible=dp_compatible)
    batch = torch.rand(4, 1, 32, 8)
    labels = torch.tensor([0, 1, 2, 3])
    other = batch.clone()
    other[1:] = torch.rand(3, 1, 32, 8)

    # Execute
    with torch.no_grad():
        first = discriminator(batch, labels)[0]
        changed_neighbours = discriminator(other, labels)[0]

    # Assert: only the minibatch-stddev layer lets other samples change sample 0.
    norms = [m for m in discriminator.modules() if "Norm" in type(m).__name__]
    assert norms == []
    if dp_compatible:
        assert torch.equal(first, changed_neighbours)
    else:
        assert not torch.equal(first, changed_neighbours)


# Opacus's hooks warn when the input image needs no gradient; it never does here.
@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_dp_compatible_discriminator_gets_exact_per_sample_gradients() -> None:
    # Prepare
    from opacus import GradSampleModule

    torch.manual_seed(6)
    discriminator = build_discriminator(TINY, dp_compatible=True)
    batch = torch.rand(3, 1, 32, 8)
    labels = torch.tensor([2, 0, 1])
    alone = build_discriminator(TINY, dp_compatible=True)
    alone.load_state_dict(discriminator.state_dict())
    alone(batch[:1], labels[:1]).sum().backward()
    wrapped = GradSampleModule(discriminator, loss_reduction="sum")

    # Execute
    wrapped(batch, labels).sum().backward()

    # Assert: Opacus supports every layer, and sample 0's gradient is its own.
    for (name, param), own in zip(
        wrapped.named_parameters(), alone.parameters(), strict=True
    ):
        assert param.grad_sample is not None, name
        assert own.grad is not None
        assert torch.allclose(param.grad_sample[0], own.grad, atol=1e-5), name


def test_antialiased_downsampling_attenuates_fine_stripes_more_than_boxes() -> None:
    # Prepare: stripes of period 4 along the height, just under Nyquist after 2x.
    from fedbone.models.gan.discriminator import _downsample

    rows = torch.cos(torch.arange(32) * torch.pi / 2)
    stripes = rows[None, None, :, None].expand(1, 2, 32, 8).contiguous()
    flat = torch.ones(1, 2, 32, 8)

    # Execute
    boxed = _downsample(stripes, antialias=False)
    filtered = _downsample(stripes, antialias=True)
    flat_filtered = _downsample(flat, antialias=True)

    # Assert: same size; the low-pass passes half the box's amplitude; a flat
    # image stays flat away from the zero-padded border.
    assert filtered.shape == boxed.shape == (1, 2, 16, 4)
    box_amplitude = float(boxed[..., 2:-2, :].abs().max())
    filtered_amplitude = float(filtered[..., 2:-2, :].abs().max())
    assert box_amplitude == pytest.approx(0.5, abs=1e-5)
    assert filtered_amplitude == pytest.approx(0.25, abs=1e-5)
    assert torch.allclose(flat_filtered[..., 1:-1, 1:-1], torch.ones(1, 2, 14, 2))


def test_antialiased_downsampling_keeps_the_input_dtype_under_autocast() -> None:
    # Prepare
    from fedbone.models.gan.discriminator import _downsample

    images = torch.rand(2, 3, 16, 8, dtype=torch.bfloat16)

    # Execute
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = _downsample(images, antialias=True)

    # Assert
    assert out.dtype == torch.bfloat16
    assert out.shape == (2, 3, 8, 4)


@pytest.mark.parametrize("dp_compatible", [False, True])
def test_class_head_predicts_every_class_and_is_dropped_for_dp(
    dp_compatible: bool,
) -> None:
    # Prepare
    torch.manual_seed(7)
    spec = replace(TINY, class_head=True)
    discriminator = build_discriminator(spec, dp_compatible=dp_compatible)
    images = torch.rand(3, 1, 32, 8)
    labels = torch.tensor([0, 1, 3])

    # Execute
    with torch.no_grad():
        logits, classes = discriminator.classify(images, labels)
        plain = discriminator(images, labels)

    # Assert
    assert torch.equal(logits, plain)
    if dp_compatible:
        assert classes is None
        assert discriminator.class_head is None
    else:
        assert classes is not None
        assert classes.shape == (3, spec.n_classes)
