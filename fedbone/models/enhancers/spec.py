"""Which enhancer to train, how to build it, and its initial federated arrays.

Three trainable methods share one shape contract, ``(B, 1, H, W) -> (B, 1, H,
W)`` for any ``H`` and ``W`` that are multiples of 4:

``dncnn``
    DnCNN (Zhang et al. 2017), ``blocks`` convolutions deep.
``ddsrcnn``
    The encoder-decoder with symmetric skips of Ito et al., ``blocks`` levels.
``rrdbnet``
    The RRDBNet generator of Qi et al. (2024), ``blocks`` RRDBs, trained as a
    conditional GAN with :func:`build_discriminator`.

The federated model of ``rrdbnet`` is both networks: its arrays are keyed
``generator.<name>`` and ``discriminator.<name>`` and averaged together, so
every site's discriminator keeps up with the shared generator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from fedbone.errors import Problem
from fedbone.models.enhancers.ddsrcnn import DDSRCNN
from fedbone.models.enhancers.discriminator import build_discriminator
from fedbone.models.enhancers.dncnn import DnCNN
from fedbone.models.enhancers.rrdbnet import RRDBNet
from fedbone.models.errors import ModelError
from fedbone.models.parameters import state_to_arrays

__all__ = [
    "DISCRIMINATOR_PREFIX",
    "GENERATOR_PREFIX",
    "METHODS",
    "EnhancerSpec",
    "build_enhancer",
    "discriminator_arrays",
    "generator_arrays",
    "initial_arrays",
]

#: Trainable enhancement methods ("gaussian" is the classical baseline).
METHODS = ("dncnn", "ddsrcnn", "rrdbnet")
#: Key prefixes of the two networks in a GAN method's arrays.
GENERATOR_PREFIX = "generator."
DISCRIMINATOR_PREFIX = "discriminator."
_ADVERSARIAL = ("rrdbnet",)
_MIN_BLOCKS = {"dncnn": 2, "ddsrcnn": 1, "rrdbnet": 1}


@dataclass(frozen=True)
class EnhancerSpec:
    """An enhancement network's method and size.

    Parameters
    ----------
    method
        One of :data:`METHODS`.
    width
        Feature maps of the network (the first level's, for ``ddsrcnn``).
    blocks
        RRDBs for ``rrdbnet`` (the paper: 9), convolutions for ``dncnn`` (the
        paper: 17, at least 2), encoder levels for ``ddsrcnn``.
    growth
        Growth channels of the dense blocks (``rrdbnet`` only).

    Raises
    ------
    ModelError
        Listing an unknown method and every size that is not a positive
        integer (or too small for the method).
    """

    method: str
    width: int = 32
    blocks: int = 3
    growth: int = 16

    def __post_init__(self) -> None:
        problems = []
        if self.method not in METHODS:
            problems.append(
                Problem(
                    "unknown-method",
                    f"{self.method!r}; use one of {', '.join(METHODS)}",
                    "method",
                )
            )
        for name in ("width", "growth"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                problems.append(
                    Problem(
                        "not-positive", f"got {value!r}, need an integer >= 1", name
                    )
                )
        least = _MIN_BLOCKS.get(self.method, 1)
        if not isinstance(self.blocks, int) or self.blocks < least:
            problems.append(
                Problem(
                    "too-few-blocks",
                    f"got {self.blocks!r}, {self.method} needs an integer >= {least}",
                    "blocks",
                )
            )
        ModelError.raise_if_any("enhancer spec", problems)

    @property
    def adversarial(self) -> bool:
        """Whether the method trains a discriminator beside the enhancer."""
        return self.method in _ADVERSARIAL

    def to_dict(self) -> dict[str, Any]:
        """Return ``{"method", "width", "blocks", "growth"}`` (JSON-ready)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EnhancerSpec:
        """Rebuild a spec written by :meth:`to_dict` (absent sizes: defaults).

        Raises
        ------
        ModelError
            ``missing-method`` or unknown keys, and whatever the spec refuses.
        """
        known = {"method", "width", "blocks", "growth"}
        problems = [
            Problem("unknown-key", f"use only {', '.join(sorted(known))}", str(key))
            for key in data
            if key not in known
        ]
        if "method" not in data:
            problems.append(Problem("missing-method", "the spec names no method"))
        ModelError.raise_if_any("enhancer spec", problems)
        return cls(**{key: data[key] for key in known if key in data})


def build_enhancer(spec: EnhancerSpec) -> nn.Module:
    """Build the freshly initialised enhancement network of ``spec``.

    Returns
    -------
    torch.nn.Module
        ``(B, 1, H, W) -> (B, 1, H, W)``.
    """
    if spec.method == "dncnn":
        return DnCNN(spec.width, spec.blocks)
    if spec.method == "ddsrcnn":
        return DDSRCNN(spec.width, spec.blocks)
    return RRDBNet(spec.width, spec.blocks, spec.growth)


def initial_arrays(spec: EnhancerSpec, seed: int) -> dict[str, np.ndarray]:
    """Return the initial state arrays of the federated model of ``spec``.

    The global torch generator is left as it was.

    Parameters
    ----------
    spec
        The method and size.
    seed
        Seed of the initialisation; the same seed gives the same arrays.

    Returns
    -------
    dict
        The enhancer's state dict (parameters and buffers; float32, and int64
        for batch-norm counters); for ``rrdbnet`` keyed
        ``generator.<name>`` and ``discriminator.<name>``.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        enhancer = build_enhancer(spec)
        discriminator = build_discriminator(spec.width) if spec.adversarial else None
    arrays = state_to_arrays(enhancer)
    if discriminator is None:
        return arrays
    return {
        **{GENERATOR_PREFIX + key: value for key, value in arrays.items()},
        **{
            DISCRIMINATOR_PREFIX + key: value
            for key, value in state_to_arrays(discriminator).items()
        },
    }


def _strip(arrays: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {
        key[len(prefix) :]: value
        for key, value in arrays.items()
        if key.startswith(prefix)
    }


def generator_arrays(
    spec: EnhancerSpec, arrays: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Return the enhancer's own arrays out of a federated model's arrays.

    For an adversarial method whose arrays carry the ``generator.`` prefix
    the prefix is removed and the discriminator dropped; arrays already
    without it (a saved enhancer) are returned as they are.
    """
    if spec.adversarial and any(key.startswith(GENERATOR_PREFIX) for key in arrays):
        return _strip(arrays, GENERATOR_PREFIX)
    return dict(arrays)


def discriminator_arrays(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Return the discriminator's arrays (prefix removed) of a GAN's arrays."""
    return _strip(arrays, DISCRIMINATOR_PREFIX)
