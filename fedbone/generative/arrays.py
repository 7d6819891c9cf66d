"""A GAN trainer's networks as named arrays, for federated averaging.

Federated GAN training (Rasouli et al. 2020, "FedGAN") averages generator and
discriminator across sites after every round of local steps. What travels is
the three networks' weights -- generator ``g.*``, discriminator ``d.*`` and the
moving-average generator ``ema.*`` -- as float32 arrays keyed by their
``state_dict`` names. Optimiser moments, the adaptive augmentation probability
and the step counters are site state and never travel.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
from torch import nn

from fedbone.classifier.errors import TrainingError
from fedbone.errors import Problem
from fedbone.generative.trainer import GanTrainer
from fedbone.models.parameters import load_arrays, state_to_arrays

__all__ = ["NETWORK_PREFIXES", "arrays_digest", "load_trainer_arrays", "trainer_arrays"]

#: Prefix of each network's keys in the exchanged arrays.
NETWORK_PREFIXES = {"g": "generator", "d": "discriminator", "ema": "generator_ema"}


def _network(trainer: GanTrainer, attribute: str) -> nn.Module:
    network: nn.Module = getattr(trainer, attribute)
    return network


def trainer_arrays(trainer: GanTrainer) -> dict[str, np.ndarray]:
    """Return the three networks' weights as ``<prefix>.<state key>`` arrays."""
    arrays: dict[str, np.ndarray] = {}
    for prefix, attribute in NETWORK_PREFIXES.items():
        for key, value in state_to_arrays(_network(trainer, attribute)).items():
            arrays[f"{prefix}.{key}"] = value
    return arrays


def load_trainer_arrays(trainer: GanTrainer, arrays: Mapping[str, np.ndarray]) -> None:
    """Copy exchanged arrays into ``trainer``'s networks, all checked first.

    Raises
    ------
    TrainingError
        ``unknown-network`` for keys of no network; the networks' own checks
        (missing keys, shapes) are listed by
        :func:`fedbone.models.parameters.load_arrays`.
    """
    split: dict[str, dict[str, np.ndarray]] = {p: {} for p in NETWORK_PREFIXES}
    unknown = []
    for name, value in arrays.items():
        prefix, _, key = name.partition(".")
        if prefix in split and key:
            split[prefix][key] = value
        else:
            unknown.append(name)
    if unknown:
        raise TrainingError(
            "GAN arrays",
            [
                Problem(
                    "unknown-network",
                    f"{len(unknown)} key(s) such as {unknown[0]!r} belong to no "
                    f"network; keys start with {', '.join(NETWORK_PREFIXES)}.",
                )
            ],
        )
    for prefix, attribute in NETWORK_PREFIXES.items():
        load_arrays(_network(trainer, attribute), split[prefix])


def arrays_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """Return a sha256 over the arrays' names, shapes, dtypes and bytes.

    The provenance of a federated generator: sites check the generator they
    are sent against it before synthesising.
    """
    digest = hashlib.sha256()
    for name in sorted(arrays):
        value = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{value.shape}|{value.dtype.str}|".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()
