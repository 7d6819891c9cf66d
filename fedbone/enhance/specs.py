"""From the study's ``enhance`` settings to the library's network and training specs.

The centre (initial weights) and every site (local rounds) build the same
networks from the same settings through these functions, so the arrays the
centre sends and the arrays a site returns have the same keys and shapes.
"""

from __future__ import annotations

import numpy as np

from fedbone.config.enhance import EnhanceSettings
from fedbone.enhance.thinning import parse_level
from fedbone.enhance.training import EnhancerTraining
from fedbone.models.enhancers import EnhancerSpec, initial_arrays

__all__ = [
    "GAUSSIAN",
    "enhancer_spec",
    "enhancer_training",
    "gaussian_key",
    "initial_enhancer_arrays",
    "simulated_levels",
]

GAUSSIAN = "gaussian"
#: Width (pixels) the Gaussian filter starts from before the sites fit theirs.
_START_SIGMA = 1.0


def simulated_levels(settings: EnhanceSettings) -> tuple[str, ...]:
    """Return the levels the sites simulate by thinning (the study's ``levels``)."""
    return tuple(parse_level(level).name for level in settings.levels)


def gaussian_key(level: str) -> str:
    """Array key of the Gaussian filter's width fitted for ``level``."""
    return f"sigma-{level}"


def enhancer_spec(method: str, settings: EnhanceSettings) -> EnhancerSpec:
    """Return the network of a trained ``method`` at the study's size."""
    blocks = {
        "rrdbnet": settings.rrdb_blocks,
        "dncnn": settings.dncnn_depth,
        "ddsrcnn": settings.ddsrcnn_levels,
    }[method]
    return EnhancerSpec(method=method, width=settings.width, blocks=blocks)


def enhancer_training(settings: EnhanceSettings, method: str) -> EnhancerTraining:
    """Return one site's local training of ``method`` in one federated round.

    Parameters
    ----------
    settings
        The study's ``enhance`` settings.
    method
        The trained method: the GAN takes ``lr`` (Qi et al.), the
        supervised denoisers ``denoiser_lr``.
    """
    return EnhancerTraining(
        epochs=settings.local_epochs,
        steps_per_epoch=settings.steps_per_epoch,
        batch_size=settings.batch_size,
        patch=(settings.patch_height, settings.patch_width),
        lr=settings.lr if method == "rrdbnet" else settings.denoiser_lr,
        perceptual_weight=settings.perceptual_weight,
        l1_weight=settings.l1_weight,
        bce_weight=settings.bce_weight,
        gan_weight=settings.gan_weight,
    )


def initial_enhancer_arrays(
    method: str, settings: EnhanceSettings, seed: int
) -> dict[str, np.ndarray]:
    """Return the seeded global model every site starts ``method`` from.

    The Gaussian baseline's "model" is one filter width per simulated level.

    Parameters
    ----------
    method
        One of :data:`fedbone.config.enhance.ENHANCE_METHODS`.
    settings
        The study's ``enhance`` settings.
    seed
        Seed of the initial weights.
    """
    if method == GAUSSIAN:
        return {
            gaussian_key(level): np.array([_START_SIGMA], dtype=np.float32)
            for level in simulated_levels(settings)
        }
    return initial_arrays(enhancer_spec(method, settings), seed)
