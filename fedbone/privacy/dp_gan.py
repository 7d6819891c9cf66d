"""DP-SGD for the GAN discriminator: spec, per-pair clipping, noise, accounting.

The discriminator is the only network that sees real scans, so DP-SGD on its
updates makes the whole GAN private: the generator learns only from the
discriminator (post-processing) and from latents and labels drawn
independently of the data. The mechanism, per discriminator step:

* **Poisson sampling**: every real image joins the step independently with
  probability ``q = batch_size / n``. The non-DP trainer's draws (with
  replacement, or class balanced) do not match the subsampled-Gaussian
  analysis Opacus' accountant assumes, so DP mode never uses them.
* **Pairs**: each sampled real image is paired with one fake of the *same*
  label. A pair's loss is ``softplus(-D(real)) + softplus(D(fake))``; its
  gradient is clipped to ``max_grad_norm`` as one unit. Removing a real image
  removes its pair, so a neighbouring dataset changes the sum of clipped
  gradients by at most ``max_grad_norm``, whatever the fake term holds; the
  fake's label (taken from the real) is covered too. Clipping the pair, not
  only the real term, keeps the real and fake pushes on the same scale, as
  in the non-DP loss.
* **Noise**: Gaussian ``N(0, (noise_multiplier * max_grad_norm)^2)`` on the
  sum, which is divided by the *expected* batch ``q * n`` (the actual batch
  size is private).

The accounting is :class:`fedbone.privacy.dp_sgd.AccountantState` (Opacus'
accountant over a plain ``[(noise, q, steps)]`` history), stored in the
trainer's checkpoint so a restarted site keeps its spending.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from opacus.grad_sample import GradSampleModule
from opacus.validators import ModuleValidator
from torch import nn

from fedbone.errors import Problem
from fedbone.privacy.dp_sgd import DpSgdSpec, noise_for_target
from fedbone.privacy.errors import PrivacyError

__all__ = [
    "DpGanSpec",
    "apply_private_gradients",
    "wrap_discriminator",
]


@dataclass(frozen=True)
class DpGanSpec:
    """Settings of DP-SGD on the discriminator.

    Parameters
    ----------
    sgd
        Noise (or target ε over the trainer's planned ``GanTrainSpec.steps``),
        clipping norm of each (real, fake) pair, δ, accountant and sampling.
        ``sgd.clipping`` is not used: pair clipping needs the per-sample
        gradients themselves, which ghost clipping never forms.
    augment_p
        Fixed augmentation probability. ADA's adaptive ``p`` is driven by the
        signs of real logits, a statistic of the private data, so DP mode
        freezes it; augmentation itself stays, drawn per image.

    Raises
    ------
    PrivacyError
        When ``augment_p`` is outside ``[0, 1]``.
    """

    sgd: DpSgdSpec
    augment_p: float = 0.2

    def __post_init__(self) -> None:
        if not 0.0 <= self.augment_p <= 1.0:
            raise PrivacyError(
                "DP GAN spec",
                [Problem("out-of-range", "must lie in [0, 1]", "augment_p")],
            )

    def noise_multiplier(self, sample_rate: float, planned_steps: int) -> float:
        """Return the noise multiplier, derived from the target ε when one is set.

        Parameters
        ----------
        sample_rate
            Poisson rate ``batch_size / n`` of the site's data.
        planned_steps
            Steps the target ε must cover.
        """
        if self.sgd.noise_multiplier is not None:
            return float(self.sgd.noise_multiplier)
        assert self.sgd.target_epsilon is not None  # DpSgdSpec checks one is set
        return noise_for_target(
            self.sgd.target_epsilon,
            self.sgd.delta,
            sample_rate,
            planned_steps,
            self.sgd.accountant,
        )


def wrap_discriminator(
    discriminator: nn.Module, *, per_sample: bool
) -> GradSampleModule:
    """Attach Opacus' per-sample gradient hooks to ``discriminator`` in place.

    The module itself keeps its parameters and ``state_dict`` keys; the
    returned wrapper only switches the hooks (``enable_hooks`` /
    ``disable_hooks``).

    Parameters
    ----------
    discriminator
        The trainer's discriminator.
    per_sample
        Whether it was built with per-sample operations only
        (``dp_compatible_d``); Opacus' validator cannot see a functional
        batch-coupling such as the minibatch-stddev feature, so it is asked.

    Raises
    ------
    PrivacyError
        Listing every reason the module cannot take DP-SGD.
    """
    problems = [
        Problem("opacus-validator", str(error), type(discriminator).__name__)
        for error in ModuleValidator.validate(discriminator, strict=False)
    ]
    if not per_sample:
        problems.append(
            Problem(
                "batch-coupled-discriminator",
                "DP-SGD needs a discriminator whose logits are per sample; build "
                "the trainer with dp_compatible_d=True (drops minibatch stddev)",
                "dp_compatible_d",
            )
        )
    PrivacyError.raise_if_any("DP discriminator", problems)
    return GradSampleModule(discriminator, batch_first=True, loss_reduction="sum")


def apply_private_gradients(
    parameters: Sequence[nn.Parameter],
    pairs: int,
    expected_batch: float,
    *,
    noise_multiplier: float,
    max_grad_norm: float,
) -> None:
    """Turn per-sample gradients into one clipped, noised ``.grad`` per parameter.

    Rows ``i`` and ``pairs + i`` of each ``grad_sample`` are the gradients of
    real image ``i`` and of its fake; their sum is clipped to
    ``max_grad_norm``. Each ``grad_sample`` is cleared.

    Parameters
    ----------
    parameters
        The discriminator's trainable parameters, after a backward pass of the
        summed pair losses (or untouched when ``pairs == 0``).
    pairs
        Real images in the step (``0`` when the Poisson draw was empty: the
        update is then noise only, as the accounting assumes).
    expected_batch
        ``q * n``, the divisor of the noisy sum.
    noise_multiplier, max_grad_norm
        Noise std is their product; the clipping bound of each pair.
    """
    pair_grads = []
    for parameter in parameters:
        sample = getattr(parameter, "grad_sample", None)
        if pairs and sample is not None:
            pair_grads.append(sample[:pairs] + sample[pairs : 2 * pairs])
        else:
            pair_grads.append(torch.zeros(0, *parameter.shape, device=parameter.device))
        parameter.grad_sample = None  # type: ignore[attr-defined]  # Opacus sets it
    if pairs:
        squared = torch.stack([g.flatten(1).square().sum(1) for g in pair_grads])
        norms = squared.sum(0).sqrt()
        factors = (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
    std = noise_multiplier * max_grad_norm
    for parameter, grads in zip(parameters, pair_grads, strict=True):
        total = torch.zeros_like(parameter)
        if pairs:
            total += torch.einsum("i,i...->...", factors, grads)
        if std > 0:
            total += torch.randn_like(parameter) * std
        parameter.grad = total / expected_batch
