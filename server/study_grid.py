"""A view of Flower's Grid for one part of a study.

Flower strategies sample from ``grid.get_node_ids()`` and talk through
``grid.send_and_receive``. Handing a strategy a :class:`StudyGrid` instead of
the real grid lets any Flower strategy, unchanged,

- see only the sites that take part (e.g. ``train`` sites, never
  ``validate-only`` ones, or one site for a local baseline);
- receive only model updates that passed screening: an update whose arrays do
  not match the global model's keys and shapes, are not numeric, or hold
  NaN/Inf is rejected, logged and not aggregated (dtypes may legitimately
  change: averaging turns integer buffers into floats), or whose change from
  the global model it was sent is far larger than the other sites' changes in
  the same round (see :data:`NORM_OUTLIER_FACTOR`), is rejected, logged and
  not aggregated;
- have every reply recorded per site (Flower's own metric aggregation keeps
  only weighted means).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from fedbone.federation.records import record_to_arrays

__all__ = [
    "MIN_UPDATES_FOR_NORM_RULE",
    "NORM_OUTLIER_FACTOR",
    "RejectedUpdate",
    "StudyGrid",
    "change_norm",
    "norm_outliers",
    "screen_update",
]

logger = logging.getLogger(__name__)

Signature = Mapping[str, tuple[tuple[int, ...], str]]

# Honest sites move the model by similar amounts in a round: their data sizes,
# step counts and learning rates differ by small factors, so their change norms
# stay within a few-fold of each other. A diverged site or a scaled ("model
# replacement") update is orders of magnitude larger. Ten times the median of
# the *other* sites leaves room for a big site or a noisy DP round while still
# catching those; the median keeps one outlier from raising its own bar.
NORM_OUTLIER_FACTOR = 10.0
# With two updates there is no majority to say which one is the odd one out.
MIN_UPDATES_FOR_NORM_RULE = 3


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


def change_norm(
    update: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]
) -> float:
    """L2 norm of ``update - reference`` over the floating-point arrays.

    Integer buffers (e.g. BatchNorm's ``num_batches_tracked``) count steps, not
    a direction in weight space, so they are left out.
    """
    total = 0.0
    for key, array in update.items():
        if array.dtype.kind != "f" or key not in reference:
            continue
        change = array.astype(np.float64) - reference[key].astype(np.float64)
        total += float(np.dot(change.ravel(), change.ravel()))
    return float(np.sqrt(total))


def norm_outliers(
    norms: Mapping[int, float], factor: float = NORM_OUTLIER_FACTOR
) -> dict[int, str]:
    """Return ``node -> reason`` for each change norm far above the others'.

    A norm is an outlier when it exceeds ``factor`` times the median of the
    other nodes' norms. Needs :data:`MIN_UPDATES_FOR_NORM_RULE` norms; a zero
    median gives no scale to compare with, so it rejects nothing.
    """
    if len(norms) < MIN_UPDATES_FOR_NORM_RULE:
        return {}
    outliers = {}
    for node, norm in norms.items():
        median = float(np.median([n for other, n in norms.items() if other != node]))
        if median > 0 and norm > factor * median:
            outliers[node] = (
                f"update changes the model by {norm:.3g} (L2), "
                f"{norm / median:.0f}x the median {median:.3g} of the other sites "
                f"(limit {factor:g}x)"
            )
    return outliers


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
        not match, or whose change from the arrays their request carried is
        a norm outlier (:func:`norm_outliers`), are rejected. ``None``
        disables screening.
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
        """Delegate to the wrapped grid.

        Parameters
        ----------
        content, message_type, dst_node_id, group_id, ttl
            As :meth:`flwr.serverapp.Grid.create_message` takes them.
        """
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
        messages = list(messages)
        sent = {
            message.metadata.dst_node_id: message.content
            for message in messages
            if message.metadata.message_type == "train"
        }
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        kept = [reply for reply in replies if self._accept(reply)]
        kept = self._drop_norm_outliers(kept, sent)
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

    def _drop_norm_outliers(
        self, replies: list[Message], sent: Mapping[int, RecordDict]
    ) -> list[Message]:
        if self._expected is None:
            return replies
        # Strategies send every node the same record: unpack it once.
        references: dict[int, dict[str, np.ndarray]] = {}
        norms: dict[int, float] = {}
        for reply in replies:
            node = reply.metadata.src_node_id
            request = sent.get(node)
            if reply.has_error() or request is None:
                continue
            if len(request.array_records) != 1:
                continue
            record: ArrayRecord = next(iter(request.array_records.values()))
            if id(record) not in references:
                references[id(record)] = record_to_arrays(record)
            update = record_to_arrays(next(iter(reply.content.array_records.values())))
            norms[node] = change_norm(update, references[id(record)])
        outliers = norm_outliers(norms)
        for node, reason in outliers.items():
            self.rejected.append(RejectedUpdate(node, reason))
            logger.warning("rejected the update from node %d: %s", node, reason)
        return [r for r in replies if r.metadata.src_node_id not in outliers]
