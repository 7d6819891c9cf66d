"""FedAvg whose training rounds are secure aggregation rounds.

The centre sees only the sum of the sites' example-weighted updates
(``training.secure_aggregation``, ``docs/secure-aggregation.md``). Each round's
training is the four-stage exchange of
:func:`~server.strategies.secure_round.run_secure_round` instead of one
``train`` message; evaluation and the per-round callback (the study's
checkpoint) are FedAvg's.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Result
from flwr.serverapp.strategy.strategy_utils import sample_nodes

from fedbone.federation.secagg_messages import MaskSettings
from server.strategies.secure_round import SecureRoundReport, run_secure_round

__all__ = ["SecureFedAvg"]

logger = logging.getLogger(__name__)


class SecureFedAvg(FedAvg):
    """FedAvg over secure aggregation rounds.

    Parameters
    ----------
    clip
        Largest magnitude of one element of a site's update.
    scale_bits
        Fractional bits of the fixed-point encoding.
    max_examples
        Per node, the most examples it may weigh with (its census bound).
    **sizing
        FedAvg's sizing arguments (``min_train_nodes`` is the fewest sites a
        stage needs).

    Attributes
    ----------
    reports : list of SecureRoundReport
        One per round run: who answered each stage, timings, any failure.
    """

    def __init__(
        self,
        *,
        clip: float,
        scale_bits: int,
        max_examples: Mapping[int, int],
        **sizing: Any,
    ) -> None:
        super().__init__(**sizing)
        self.settings = MaskSettings(clip, scale_bits, 1)
        self.max_examples = dict(max_examples)
        self.reports: list[SecureRoundReport] = []

    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
    ) -> Result:
        """Run ``num_rounds`` secure training rounds, each followed by evaluation.

        Parameters
        ----------
        grid, initial_arrays, num_rounds, timeout, train_config, evaluate_config,
        evaluate_fn
            As :meth:`flwr.serverapp.strategy.Strategy.start` takes them; a
            failed round (too few sites) leaves the global model unchanged.
        """
        train_config = train_config or ConfigRecord()
        evaluate_config = evaluate_config or ConfigRecord()
        result = Result()
        if evaluate_fn is not None:
            evaluate_fn(0, initial_arrays)
        arrays = initial_arrays
        for server_round in range(1, num_rounds + 1):
            updated = self._train_round(
                server_round, arrays, train_config, grid, timeout
            )
            if updated is not None:
                arrays = result.arrays = updated
            replies = grid.send_and_receive(
                self.configure_evaluate(server_round, arrays, evaluate_config, grid),
                timeout=timeout,
            )
            metrics = self.aggregate_evaluate(server_round, replies)
            if metrics is not None:
                result.evaluate_metrics_clientapp[server_round] = metrics
            if evaluate_fn is not None:
                evaluate_fn(server_round, arrays)
        return result

    def _train_round(
        self,
        server_round: int,
        arrays: ArrayRecord,
        train_config: ConfigRecord,
        grid: Grid,
        timeout: float,
    ) -> ArrayRecord | None:
        # wait for enough sites; every connected one takes part
        _, nodes = sample_nodes(grid, self.min_available_nodes, self.min_train_nodes)
        # fresh per round: a round's secrets never serve another
        report = SecureRoundReport(
            server_round, f"r{server_round}-{secrets.token_hex(8)}"
        )
        self.reports.append(report)
        config = ConfigRecord({**dict(train_config), "server-round": server_round})
        logger.info(
            "secure round %d (%s) over %d sites",
            server_round,
            report.round_id,
            len(nodes),
        )
        return run_secure_round(
            grid,
            nodes,
            arrays,
            config,
            settings=self.settings,
            max_examples=self.max_examples,
            min_sites=self.min_train_nodes,
            timeout=timeout,
            report=report,
        )
