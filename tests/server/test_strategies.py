from collections.abc import Iterable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid
from server_messages import reply

from fedbone.config.study import StrategyName, TrainingSettings
from fedbone.federation.records import arrays_to_record, record_to_arrays
from server.strategies import FedBN, build_strategy


def state(value: float) -> dict[str, np.ndarray]:
    return {
        "conv.weight": np.full((2, 1, 3, 3), value, dtype=np.float32),
        "bn.running_mean": np.full((2,), value, dtype=np.float32),
    }


def test_fedavg_weights_updates_by_number_of_scans() -> None:
    strategy = build_strategy(TrainingSettings(strategy=StrategyName.FEDAVG), 2)
    replies = [
        reply(1, state(1.0), 100, **{"train-loss": 1.0}),
        reply(2, state(4.0), 300, **{"train-loss": 3.0}),
    ]

    arrays, metrics = strategy.aggregate_train(1, replies)

    assert arrays is not None and metrics is not None
    merged = record_to_arrays(arrays)
    np.testing.assert_allclose(merged["conv.weight"], 3.25)  # (1*100 + 4*300) / 400
    assert metrics["train-loss"] == 2.5


def test_fedmedian_ignores_one_extreme_site() -> None:
    strategy = build_strategy(TrainingSettings(strategy=StrategyName.FEDMEDIAN), 3)
    replies = [
        reply(1, state(1.0), 10),
        reply(2, state(2.0), 10),
        reply(3, state(1000.0), 10),
    ]

    arrays, _ = strategy.aggregate_train(1, replies)

    assert arrays is not None
    np.testing.assert_allclose(record_to_arrays(arrays)["conv.weight"], 2.0)


def test_every_configured_strategy_can_be_built() -> None:
    for name in StrategyName:
        strategy = build_strategy(TrainingSettings(strategy=name, min_train_sites=2), 3)

        assert strategy.min_train_nodes == 2


class _TwoNodes(Grid):
    """Just enough of a Grid for configure_train."""

    def set_run(self, run: object) -> None: ...

    @property
    def run(self) -> object:  # type: ignore[override]
        return None

    def create_message(self, *args: object, **kwargs: object) -> Message:
        raise NotImplementedError

    def get_node_ids(self) -> Iterable[int]:
        return [11, 12]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return []

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return []

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return []


def test_fedbn_asks_every_site_to_keep_its_normalisation_layers() -> None:
    strategy = FedBN(min_train_nodes=2, min_available_nodes=2)

    messages = list(
        strategy.configure_train(
            1,
            arrays_to_record(state(0.0)),
            ConfigRecord({"phase": "train"}),
            _TwoNodes(),
        )
    )

    assert sorted(m.metadata.dst_node_id for m in messages) == [11, 12]
    for message in messages:
        content: RecordDict = message.content
        assert content["config"]["fedbn"] is True
        assert isinstance(content["arrays"], ArrayRecord)
