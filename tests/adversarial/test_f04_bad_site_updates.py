"""Finding 4: one bad site could take over the global model.

int64/bool weight arrays skipped the NaN check and the norm rule, the declared
dtype was never compared with the one sent, and ``num-examples`` was believed:
1e9 replaced the model, -299.9 amplified the aggregate ~7000x and -300 crashed
aggregation with ZeroDivisionError. The real grid screens each reply before
Flower's FedAvg aggregates it; a rejected update is logged and left out, so
the aggregate equals that of the honest sites.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pytest
from flwr.app import Message, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.task_identity import TaskIdentity
from server_messages import reply

from fedbone.federation.records import (
    array_signature,
    arrays_to_record,
    record_to_arrays,
)
from server.study_grid import StudyGrid

GLOBAL = {
    "w": np.zeros((3, 2), np.float32),
    "steps": np.zeros((), np.int64),
}
EXPECTED = array_signature(arrays_to_record(GLOBAL))
HONEST = {1: 30, 2: 50, 3: 40}


@pytest.fixture(autouse=True)
def server_task_identity() -> Iterator[None]:
    """The ServerApp's task identity, which Flower needs to make messages."""
    names = ("_run_id", "_node_id", "_task_id")
    previous = [getattr(TaskIdentity, name) for name in names]
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    try:
        yield
    finally:
        for name, value in zip(names, previous, strict=True):
            setattr(TaskIdentity, name, value)


class _Replying(Grid):
    """The sites' replies, as Flower's grid would hand them over."""

    def __init__(self, replies: list[Message]) -> None:
        self.replies = replies

    def set_run(self, run: object) -> None: ...

    @property
    def run(self) -> object:  # type: ignore[override]
        return None

    def create_message(self, *args: object, **kwargs: object) -> Message:
        raise NotImplementedError

    def get_node_ids(self) -> Iterable[int]:
        return [1, 2, 3, 4]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return []

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return []

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self.replies


def _update(by: float) -> dict[str, np.ndarray]:
    return {"w": np.full((3, 2), by, np.float32), "steps": np.array(10, np.int64)}


def _requests(nodes: list[int]) -> list[Message]:
    content = RecordDict({"arrays": arrays_to_record(GLOBAL)})
    return [Message(content, dst_node_id=n, message_type="train") for n in nodes]


def _aggregate(replies: list[Message]) -> np.ndarray:
    arrays, _ = FedAvg().aggregate_train(1, replies)
    assert arrays is not None
    return record_to_arrays(arrays)["w"]


def _round(bad: Message) -> tuple[list[Message], StudyGrid]:
    honest = [reply(node, _update(0.1 * node), n) for node, n in HONEST.items()]
    grid = StudyGrid(
        _Replying([*honest, bad]),
        [1, 2, 3, 4],
        expected=EXPECTED,
        max_examples={1: 60, 2: 60, 3: 60, 4: 60},
    )
    return grid.send_and_receive(_requests([1, 2, 3, 4])), grid


HONEST_AGGREGATE = _aggregate(
    [reply(node, _update(0.1 * node), n) for node, n in HONEST.items()]
)

ATTACKS: dict[str, tuple[dict[str, np.ndarray], Any, str]] = {
    "int64 weights": (
        {"w": np.full((3, 2), 10**12, np.int64), "steps": np.array(10, np.int64)},
        40,
        "dtype int64, but float32 was sent",
    ),
    "bool weights": (
        {"w": np.ones((3, 2), bool), "steps": np.array(10, np.int64)},
        40,
        "dtype bool",
    ),
    "num-examples 1e9": (_update(5.0), 10**9, "exceeds the 60"),
    "num-examples -299.9": (_update(5.0), -299.9, "not a positive whole number"),
    "num-examples -300": (_update(5.0), -300, "not a positive whole number"),
    "num-examples 0": (_update(5.0), 0, "not a positive whole number"),
    "num-examples NaN": (_update(5.0), float("nan"), "not a positive whole number"),
    "a step counter of 10**15": (
        {"w": np.full((3, 2), 0.2, np.float32), "steps": np.array(10**15, np.int64)},
        40,
        "median",
    ),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_bad_update_is_rejected_logged_and_left_out(
    attack: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare
    arrays, num_examples, reason = ATTACKS[attack]
    bad = reply(4, arrays, 1)
    bad.content.metric_records["metrics"]["num-examples"] = num_examples

    # Execute
    with caplog.at_level(logging.WARNING, logger="server.study_grid"):
        kept, grid = _round(bad)

    # Assert: rejected with its reason, logged, and the aggregate is the
    # honest sites' alone
    assert [r.node_id for r in grid.rejected] == [4]
    assert reason in grid.rejected[0].reason
    assert "rejected the update from node 4" in caplog.text
    assert [r.metadata.src_node_id for r in kept] == [1, 2, 3]
    np.testing.assert_allclose(_aggregate(kept), HONEST_AGGREGATE)
