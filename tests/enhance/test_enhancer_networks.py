"""Enhancement networks: shapes, the conditional discriminator, specs, arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedbone.models.enhancers import (
    METHODS,
    EnhancerSpec,
    RRDBNet,
    build_discriminator,
    build_enhancer,
    discriminator_arrays,
    generator_arrays,
    initial_arrays,
)
from fedbone.models.errors import ModelError

TINY = {
    "dncnn": EnhancerSpec("dncnn", width=8, blocks=4),
    "ddsrcnn": EnhancerSpec("ddsrcnn", width=8, blocks=3),
    "rrdbnet": EnhancerSpec("rrdbnet", width=8, blocks=2, growth=4),
}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "shape", [(64, 32), (256, 64), (68, 36)], ids=["patch", "cpu-canvas", "odd-4s"]
)
def test_enhancer_keeps_the_image_size(method: str, shape: tuple[int, int]) -> None:
    # Prepare
    torch.manual_seed(0)
    network = build_enhancer(TINY[method]).eval()
    images = torch.rand(2, 1, *shape)

    # Execute
    with torch.no_grad():
        enhanced = network(images)

    # Assert
    assert enhanced.shape == images.shape
    assert torch.isfinite(enhanced).all()


@pytest.mark.parametrize("method", ["ddsrcnn", "rrdbnet"])
def test_untrained_residual_enhancer_returns_its_input(method: str) -> None:
    # Prepare
    network = build_enhancer(TINY[method]).eval()
    images = torch.rand(2, 1, 64, 32)

    # Execute
    with torch.no_grad():
        enhanced = network(images)

    # Assert
    assert torch.equal(enhanced, images)


def test_rrdbnet_has_the_papers_trunk_and_subpixel_path() -> None:
    # Prepare
    spec = EnhancerSpec("rrdbnet", width=8, blocks=9, growth=4)

    # Execute
    network = build_enhancer(spec)

    # Assert
    shuffles = [m for m in network.modules() if isinstance(m, torch.nn.PixelShuffle)]
    strided = [
        m
        for m in network.modules()
        if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2)
    ]
    assert isinstance(network, RRDBNet)
    assert len(network.trunk) == 9
    assert len(shuffles) == 1 and shuffles[0].upscale_factor == 2
    assert len(strided) == 1


def test_discriminator_scores_patches_of_an_input_candidate_pair() -> None:
    # Prepare
    torch.manual_seed(0)
    discriminator = build_discriminator(width=8).eval()
    fast = torch.rand(3, 1, 64, 32)
    candidate = torch.rand(3, 1, 64, 32)

    # Execute
    with torch.no_grad():
        logits = discriminator(torch.cat([fast, candidate], dim=1))
        other_condition = discriminator(torch.cat([fast.flip(-2), candidate], dim=1))

    # Assert
    assert logits.shape == (3, 1, 16, 8)
    assert not torch.allclose(logits, other_condition)


def test_discriminator_logits_of_a_sample_do_not_depend_on_its_batch() -> None:
    # Prepare
    torch.manual_seed(0)
    discriminator = build_discriminator(width=8)
    pairs = torch.rand(4, 2, 32, 16)

    # Execute
    together = discriminator(pairs)
    alone = discriminator(pairs[:1])

    # Assert
    assert torch.allclose(together[:1], alone, atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_initial_arrays_are_seeded_and_leave_the_global_generator_alone(
    method: str,
) -> None:
    # Prepare
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)

    # Execute
    first = initial_arrays(TINY[method], seed=1)
    again = initial_arrays(TINY[method], seed=1)
    other = initial_arrays(TINY[method], seed=2)
    after = torch.rand(1)

    # Assert
    assert first.keys() == again.keys() == other.keys()
    assert all(np.array_equal(first[key], again[key]) for key in first)
    assert any(not np.array_equal(first[key], other[key]) for key in first)
    assert torch.equal(after, expected_next)


def test_gan_arrays_hold_both_networks_under_their_prefixes() -> None:
    # Prepare
    spec = TINY["rrdbnet"]

    # Execute
    arrays = initial_arrays(spec, seed=0)

    # Assert
    generator = generator_arrays(spec, arrays)
    discriminator = discriminator_arrays(arrays)
    assert set(generator) == set(build_enhancer(spec).state_dict())
    assert set(discriminator) == set(build_discriminator(spec.width).state_dict())
    assert len(arrays) == len(generator) + len(discriminator)
    assert generator_arrays(spec, generator).keys() == generator.keys()


def test_dncnn_arrays_hold_weights_only_no_running_statistics() -> None:
    # Execute
    arrays = initial_arrays(TINY["dncnn"], seed=0)

    # Assert: group norm, so nothing site-specific is averaged but weights
    assert not [key for key in arrays if "running" in key or "num_batches" in key]
    assert all(value.dtype == np.float32 for value in arrays.values())


def test_spec_round_trips_through_a_dict() -> None:
    # Prepare
    spec = EnhancerSpec("rrdbnet", width=16, blocks=9, growth=8)

    # Execute
    rebuilt = EnhancerSpec.from_dict(spec.to_dict())

    # Assert
    assert rebuilt == spec
    assert spec.to_dict() == {
        "method": "rrdbnet",
        "width": 16,
        "blocks": 9,
        "growth": 8,
    }


def test_spec_lists_every_problem_at_once() -> None:
    # Execute
    with pytest.raises(ModelError) as caught:
        EnhancerSpec("unet", width=0, blocks=0, growth=-1)

    # Assert
    assert caught.value.codes == [
        "unknown-method",
        "not-positive",
        "not-positive",
        "too-few-blocks",
    ]


def test_spec_from_dict_refuses_unknown_keys_and_a_missing_method() -> None:
    # Execute
    with pytest.raises(ModelError) as caught:
        EnhancerSpec.from_dict({"depth": 17})

    # Assert
    assert caught.value.codes == ["unknown-key", "missing-method"]
