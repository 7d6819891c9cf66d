"""A view of Flower's Grid for one part of a study.

Flower strategies sample from ``grid.get_node_ids()`` and talk through
``grid.send_and_receive``. Handing a strategy a :class:`StudyGrid` instead of
the real grid lets any Flower strategy, unchanged,

- see only the sites that take part (e.g. ``train`` sites, never
  ``validate-only`` ones, or one site for a local baseline);
- receive only model updates that passed screening: an update whose arrays do
  not match the global model's keys and shapes, are not numeric, or hold
  NaN/Inf is rejected, logged and not aggregated (dtypes may legitimately
  change: averaging turns integer buffers into floats);
- have every reply recorded per site (Flower's own metric aggregation keeps
  only weighted means).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from flwr.app import Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from fedbone.federation.records import record_to_arrays

__all__ = ["RejectedUpdate", "StudyGrid", "screen_update"]

logger = logging.getLogger(__name__)

Signature = Mapping[str, tuple[tuple[int, ...], str]]


@dataclass(frozen=True)
class RejectedUpdate:
    """An update that was not aggregated, and why."""

    node_id: int
    reason: str


def screen_update(content: RecordDict, expected: Signature) -> str | None:
    """Return why a train reply's arrays are unusable, or ``None`` if usable."""
    if len(content.array_records) != 1:
        return f"expected one ArrayRecord, got {len(content.array_records)}"
    arrays = record_to_arrays(next(iter(content.array_records.values())))
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    if missing or extra:
        return f"keys differ from the global model (missing {missing}, extra {extra})"
    for key, array in arrays.items():
        shape, _ = expected[key]
        if tuple(array.shape) != tuple(shape):
            return f"{key}: shape {array.shape}, expected {shape}"
        if array.dtype.kind not in "biuf":
            return f"{key}: dtype {array.dtype} is not numeric"
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            return f"{key}: holds NaN or Inf"
    return None


class StudyGrid(Grid):
    """Delegate to ``grid``, restricted to ``node_ids``, screening train replies.

    Parameters
    ----------
    grid
        Flower's grid.
    node_ids
        The nodes this part of the study may use.
    expected
        ``key -> (shape, dtype)`` of the global model; train replies that do
        not match are rejected. ``None`` disables screening.
    on_replies
        Called with every batch of replies that passed screening.
    """

    def __init__(
        self,
        grid: Grid,
        node_ids: Iterable[int],
        *,
        expected: Signature | None = None,
        on_replies: Callable[[list[Message]], None] | None = None,
    ) -> None:
        self._grid = grid
        self._node_ids = list(node_ids)
        self._expected = expected
        self._on_replies = on_replies
        self.rejected: list[RejectedUpdate] = []

    def set_run(self, run: Run) -> None:
        """Delegate to the wrapped grid."""
        self._grid.set_run(run)

    @property
    def run(self) -> Run:
        """The wrapped grid's run."""
        return self._grid.run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """Delegate to the wrapped grid."""
        return self._grid.create_message(
            content, message_type, dst_node_id, group_id, ttl
        )

    def get_node_ids(self) -> list[int]:
        """Return the allowed nodes that are connected."""
        connected = set(self._grid.get_node_ids())
        return [node for node in self._node_ids if node in connected]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Delegate to the wrapped grid."""
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Delegate to the wrapped grid."""
        return self._grid.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        """Send, wait, and return the replies that passed screening."""
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        kept = [reply for reply in replies if self._accept(reply)]
        if self._on_replies is not None:
            self._on_replies(kept)
        return kept

    def _accept(self, reply: Message) -> bool:
        is_train = reply.metadata.message_type == "train"
        if reply.has_error() or not is_train or self._expected is None:
            return True
        reason = screen_update(reply.content, self._expected)
        if reason is None:
            return True
        node = reply.metadata.src_node_id
        self.rejected.append(RejectedUpdate(node, reason))
        logger.warning("rejected the update from node %d: %s", node, reason)
        return False
