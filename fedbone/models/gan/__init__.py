"""Class-conditional GAN: style-based generator, projection discriminator, ADA."""

from __future__ import annotations

from fedbone.models.gan.augment import AdaptiveProbability, augment
from fedbone.models.gan.discriminator import (
    ProjectionDiscriminator,
    build_discriminator,
)
from fedbone.models.gan.generator import ConditionalGenerator, GanSpec, ModulatedConv2d

__all__ = [
    "AdaptiveProbability",
    "ConditionalGenerator",
    "GanSpec",
    "ModulatedConv2d",
    "ProjectionDiscriminator",
    "augment",
    "build_discriminator",
]
