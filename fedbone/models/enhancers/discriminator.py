"""Conditional patch discriminator of the enhancement GAN (Qi et al. 2024).

The paper's GAN is conditional (Mirza & Osindero 2014; as in pix2pix, Isola
et al. 2017, the condition is the input image): the discriminator sees the
fast scan and a candidate side by side as two channels and judges whether the
candidate is the standard scan that goes with *this* fast scan, which ties the
adversarial term to the patient rather than to "any plausible scan".

It is fully convolutional and returns a map of logits, one per overlapping
patch (receptive field 26 pixels), so it works on training patches and
whole scans alike. Normalisation is a :class:`torch.nn.GroupNorm`: it has no
running statistics, so FedAvg averages only weights (batch-norm running means
of different hospitals would not average to anything meaningful), and a
sample's logits do not depend on the rest of its batch.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ConditionalPatchDiscriminator", "build_discriminator"]

_LEAK = 0.2
_MAX_GROUPS = 8


def _groups(channels: int) -> int:
    groups = min(_MAX_GROUPS, channels)
    while channels % groups:
        groups -= 1
    return groups


def _block(in_channels: int, out_channels: int, kernel: int) -> nn.Sequential:
    # kernel 4 with stride 2 halves the size; kernel 3 with stride 1 keeps it.
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride=kernel - 2, padding=1),
        nn.GroupNorm(_groups(out_channels), out_channels),
        nn.LeakyReLU(_LEAK),
    )


class ConditionalPatchDiscriminator(nn.Module):
    """``(B, 2, H, W) = [input, candidate] -> (B, 1, h, w)`` patch logits.

    Parameters
    ----------
    width
        Channels of the first layer; they double twice.
    """

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(2, width, 4, stride=2, padding=1),
            nn.LeakyReLU(_LEAK),
            _block(width, 2 * width, kernel=4),
            _block(2 * width, 4 * width, kernel=3),
            nn.Conv2d(4 * width, 1, 3, padding=1),
        )

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        """Return the real/fake logit of every patch.

        Parameters
        ----------
        pair
            ``(B, 2, H, W)``: channel 0 the network input (the fast scan),
            channel 1 the candidate (the standard scan or an enhanced one).
        """
        return self.layers(pair)


def build_discriminator(width: int = 32) -> ConditionalPatchDiscriminator:
    """Build a freshly initialised conditional patch discriminator.

    Parameters
    ----------
    width
        Channels of the first layer (the enhancer's ``width`` by convention).

    Returns
    -------
    ConditionalPatchDiscriminator
        Takes ``(B, 2, H, W)`` and returns ``(B, 1, H / 4, W / 4)`` logits for
        ``H`` and ``W`` multiples of 4.
    """
    return ConditionalPatchDiscriminator(width)
