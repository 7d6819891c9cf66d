"""Fast-scan enhancement networks: DnCNN, DDSRCNN and the RRDBNet GAN."""

from __future__ import annotations

from fedbone.models.enhancers.ddsrcnn import DDSRCNN
from fedbone.models.enhancers.discriminator import (
    ConditionalPatchDiscriminator,
    build_discriminator,
)
from fedbone.models.enhancers.dncnn import DnCNN
from fedbone.models.enhancers.rrdbnet import RRDBNet
from fedbone.models.enhancers.spec import (
    DISCRIMINATOR_PREFIX,
    GENERATOR_PREFIX,
    METHODS,
    EnhancerSpec,
    build_enhancer,
    discriminator_arrays,
    generator_arrays,
    initial_arrays,
)

__all__ = [
    "DDSRCNN",
    "DISCRIMINATOR_PREFIX",
    "GENERATOR_PREFIX",
    "METHODS",
    "ConditionalPatchDiscriminator",
    "DnCNN",
    "EnhancerSpec",
    "RRDBNet",
    "build_discriminator",
    "build_enhancer",
    "discriminator_arrays",
    "generator_arrays",
    "initial_arrays",
]
