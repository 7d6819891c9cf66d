"""DP-SGD on the GAN discriminator: accounting, clipping, compatibility, state."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from opacus.accountants import RDPAccountant
from opacus.validators import ModuleValidator
from torch import nn

from fedbone.generative.trainer import GanTrainer, GanTrainSpec
from fedbone.models.gan import GanSpec, build_discriminator
from fedbone.privacy.dp_gan import DpGanSpec, apply_private_gradients
from fedbone.privacy.dp_sgd import DpSgdSpec
from fedbone.privacy.errors import PrivacyError

TINY = GanSpec(
    height=32,
    width=16,
    latent_dim=16,
    style_dim=16,
    n_classes=2,
    base_channels=4,
    max_channels=8,
    mapping_layers=2,
    upsamplings=2,
)
FAST = GanTrainSpec(steps=10, batch_size=8, device="cpu", seed=3)
N_IMAGES = 64
DELTA = 1e-3


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.random((N_IMAGES, TINY.height, TINY.width)).astype(np.float32)
    return images, np.arange(N_IMAGES) % 2


def _dp(noise: float = 1.0, max_grad_norm: float = 1.0) -> DpGanSpec:
    return DpGanSpec(
        DpSgdSpec(noise_multiplier=noise, max_grad_norm=max_grad_norm, delta=DELTA)
    )


def _opacus_epsilon(noise: float, sample_rate: float, steps: int) -> float:
    accountant = RDPAccountant()
    for _ in range(steps):
        accountant.step(noise_multiplier=noise, sample_rate=sample_rate)
    return float(accountant.get_epsilon(DELTA))


def test_dp_training_is_finite_and_epsilon_matches_opacus_and_grows() -> None:
    # Prepare
    trainer = GanTrainer(TINY, FAST, dp_compatible_d=True, dp=_dp(noise=1.1))
    images, labels = _data()
    sample_rate = FAST.batch_size / N_IMAGES

    # Execute
    first = trainer.train(images, labels, 3)
    eps_after_3 = trainer.epsilon()
    second = trainer.train(images, labels, 2)

    # Assert
    assert np.isfinite([first.d_loss, first.g_loss, second.d_loss, second.g_loss]).all()
    assert eps_after_3 > 0
    assert eps_after_3 == pytest.approx(_opacus_epsilon(1.1, sample_rate, 3), abs=1e-9)
    assert trainer.epsilon() == pytest.approx(
        _opacus_epsilon(1.1, sample_rate, 5), abs=1e-9
    )
    assert trainer.epsilon() > eps_after_3


def test_checkpoint_round_trip_keeps_the_privacy_history(tmp_path: Path) -> None:
    # Prepare
    trainer = GanTrainer(TINY, FAST, dp_compatible_d=True, dp=_dp())
    images, labels = _data()
    trainer.train(images, labels, 2)
    spent = trainer.epsilon()

    # Execute
    trainer.save(tmp_path / "gan.pt")
    restored = GanTrainer.load(tmp_path / "gan.pt")
    restored.train(images, labels, 1)

    # Assert
    assert restored.dp == trainer.dp
    assert restored.accountant is not None
    assert restored.accountant.steps == 3
    assert restored.epsilon() > spent


def test_dp_checkpoint_cannot_be_loaded_into_a_non_dp_trainer() -> None:
    # Prepare
    state = GanTrainer(TINY, FAST, dp_compatible_d=True, dp=_dp()).state_dict()
    plain = GanTrainer(TINY, FAST, dp_compatible_d=True)

    # Execute / Assert
    with pytest.raises(PrivacyError) as caught:
        plain.load_state_dict(state)
    assert caught.value.codes == ["dp-history-dropped"]


def test_batch_coupled_discriminator_is_refused_and_dp_one_passes_opacus() -> None:
    # Prepare
    coupled_spec = replace(TINY, minibatch_stddev=True)

    # Execute
    with pytest.raises(PrivacyError) as caught:
        GanTrainer(coupled_spec, FAST, dp_compatible_d=False, dp=_dp())
    errors = ModuleValidator.validate(
        build_discriminator(coupled_spec, dp_compatible=True), strict=False
    )

    # Assert
    assert caught.value.codes == ["batch-coupled-discriminator"]
    assert errors == []


def test_non_dp_trainer_has_no_epsilon() -> None:
    # Prepare
    trainer = GanTrainer(TINY, FAST, dp_compatible_d=True)

    # Execute / Assert
    with pytest.raises(PrivacyError):
        trainer.epsilon()


def _discriminator_grad_norm(max_grad_norm: float) -> tuple[float, int]:
    trainer = GanTrainer(
        TINY, FAST, dp_compatible_d=True, dp=_dp(max_grad_norm=max_grad_norm)
    )
    trainer.noise_multiplier = 0.0  # isolate clipping (the spec needs noise > 0)
    images, labels = _data()
    trainer.train(images, labels, 1)
    grads = [p.grad for p in trainer.discriminator.parameters() if p.grad is not None]
    norm = float(torch.stack([g.norm() for g in grads]).norm())
    return norm, trainer.images_seen


def test_clipping_bounds_the_discriminator_update_without_noise() -> None:
    # Prepare
    bound = 1e-3

    # Execute
    clipped_norm, pairs = _discriminator_grad_norm(bound)
    free_norm, _ = _discriminator_grad_norm(1e6)

    # Assert: the mean of `pairs` clipped gradients over the expected batch
    assert pairs > 0
    assert clipped_norm <= pairs * bound / FAST.batch_size * (1 + 1e-4)
    assert free_norm > 10 * pairs * bound / FAST.batch_size


def test_pairs_are_clipped_as_one_unit_and_noise_is_scaled() -> None:
    # Prepare: two pairs; pair 0 has norm 5 (real 3 + fake 4 on other axes)
    parameter = nn.Parameter(torch.zeros(2))
    parameter.grad_sample = torch.tensor(  # type: ignore[attr-defined]
        [[3.0, 0.0], [0.1, 0.0], [0.0, 4.0], [0.0, 0.1]]
    )

    # Execute
    apply_private_gradients(
        [parameter], 2, expected_batch=2.0, noise_multiplier=0.0, max_grad_norm=1.0
    )

    # Assert: pair 0 scaled to norm 1, pair 1 (norm ~0.14) kept, mean over 2
    assert parameter.grad is not None
    expected = (torch.tensor([0.6, 0.8]) + torch.tensor([0.1, 0.1])) / 2
    assert torch.allclose(parameter.grad, expected, atol=1e-5)
    assert parameter.grad_sample is None  # type: ignore[attr-defined]


def test_empty_poisson_draw_still_steps_with_noise_only() -> None:
    # Prepare
    parameter = nn.Parameter(torch.zeros(1000))
    torch.manual_seed(0)

    # Execute
    apply_private_gradients(
        [parameter], 0, expected_batch=4.0, noise_multiplier=2.0, max_grad_norm=0.5
    )

    # Assert: std = noise * clip / expected batch = 0.25
    assert parameter.grad is not None
    assert float(parameter.grad.std()) == pytest.approx(0.25, rel=0.1)


def test_bad_augment_probability_is_refused() -> None:
    # Execute / Assert
    with pytest.raises(PrivacyError):
        DpGanSpec(DpSgdSpec(noise_multiplier=1.0, delta=DELTA), augment_p=1.5)


def test_target_epsilon_is_reached_over_the_planned_steps() -> None:
    # Prepare
    dp = DpGanSpec(DpSgdSpec(target_epsilon=4.0, delta=DELTA))
    trainer = GanTrainer(TINY, FAST, dp_compatible_d=True, dp=dp)
    images, labels = _data()

    # Execute
    trainer.train(images, labels, FAST.steps)

    # Assert: Opacus' search stops within 0.01 below the target
    assert 3.98 <= trainer.epsilon() <= 4.0
