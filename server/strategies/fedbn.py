"""FedBN (Li et al. 2021): normalisation layers stay local to each site."""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

__all__ = ["FedBN"]


class FedBN(FedAvg):
    """FedAvg whose sites keep their own normalisation layers.

    The server asks every site (``config["fedbn"] = True``) to load only the
    non-normalisation arrays of the global model and to keep its own
    normalisation parameters and running statistics from round to round.
    Sites still send their full state, so the server's model carries the
    sample-weighted mean of the sites' normalisation layers: that is what
    validation-only sites, which never train, are scored with.
    """

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Mark the round as FedBN, then configure it as FedAvg does.

        Parameters
        ----------
        server_round, arrays, config, grid
            As :meth:`flwr.serverapp.strategy.FedAvg.configure_train` takes them.
        """
        config["fedbn"] = True
        return super().configure_train(server_round, arrays, config, grid)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Evaluate each site with its own normalisation layers too.

        Parameters
        ----------
        server_round, arrays, config, grid
            As :meth:`flwr.serverapp.strategy.FedAvg.configure_evaluate` takes
            them.
        """
        config["fedbn"] = True
        return super().configure_evaluate(server_round, arrays, config, grid)
