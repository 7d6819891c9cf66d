"""Build the study's federated strategy from its config (Flower's own classes).

Every strategy aggregates with ``num-examples`` weights (distinct training scans
per site) and samples among the nodes its :class:`~server.study_grid.StudyGrid`
exposes, so ``min_train_nodes`` is simply how many sites must take part.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypedDict

from flwr.serverapp.strategy import (
    FedAdam,
    FedAvg,
    FedMedian,
    FedProx,
    FedYogi,
    Krum,
    Strategy,
)

from fedbone.config.study import StrategyName, TrainingSettings
from server.strategies.fedbn import FedBN
from server.strategies.secure_fedavg import SecureFedAvg

__all__ = ["FedBN", "SecureFedAvg", "build_strategy"]


class _Sizing(TypedDict):
    """The keyword arguments every Flower strategy takes to size its rounds."""

    fraction_train: float
    fraction_evaluate: float
    min_train_nodes: int
    min_evaluate_nodes: int
    min_available_nodes: int


def build_strategy(
    settings: TrainingSettings,
    n_sites: int,
    *,
    max_examples: Mapping[int, int] | None = None,
) -> Strategy:
    """Return the Flower strategy ``settings`` names, sized for ``n_sites``.

    With ``training.secure_aggregation`` (fedavg only, the config checks),
    several sites train under :class:`SecureFedAvg`; a model of one site is
    that site's model, with nothing to hide it among, and trains as usual.

    Parameters
    ----------
    settings
        The study's training settings.
    n_sites
        How many sites take part (all of them are asked every round).
    max_examples
        Per node, the most examples it may weigh with (secure aggregation
        bounds its fixed-point sum by it).
    """
    sizing: _Sizing = {
        "fraction_train": 1.0,
        "fraction_evaluate": 1.0,
        "min_train_nodes": min(settings.min_train_sites, n_sites),
        "min_evaluate_nodes": min(settings.min_train_sites, n_sites),
        "min_available_nodes": min(settings.min_train_sites, n_sites),
    }
    name = settings.strategy
    if settings.secure_aggregation and n_sites > 1:
        return SecureFedAvg(
            clip=settings.secure_aggregation_clip,
            scale_bits=settings.secure_aggregation_scale_bits,
            max_examples=max_examples or {},
            **sizing,
        )
    if name is StrategyName.FEDAVG:
        return FedAvg(**sizing)
    if name is StrategyName.FEDPROX:
        return FedProx(**sizing, proximal_mu=settings.proximal_mu)
    if name is StrategyName.FEDADAM:
        return FedAdam(**sizing, eta=settings.server_lr, eta_l=settings.lr)
    if name is StrategyName.FEDYOGI:
        return FedYogi(**sizing, eta=settings.server_lr, eta_l=settings.lr)
    if name is StrategyName.FEDMEDIAN:
        return FedMedian(**sizing)
    if name is StrategyName.KRUM:
        return Krum(**sizing, num_malicious_nodes=settings.krum_byzantine)
    if name is StrategyName.FEDBN:
        return FedBN(**sizing)
    raise ValueError(f"no strategy {name!r}")  # unreachable: config validates
