"""A view of Flower's Grid for one part of a study.

Flower strategies sample from ``grid.get_node_ids()`` and talk through
``grid.send_and_receive``. Handing a strategy a :class:`StudyGrid` instead of
the real grid lets any Flower strategy, unchanged,

- see only the sites that take part (e.g. ``train`` sites, never
  ``validate-only`` ones, or one site for a local baseline);
- receive only model updates that passed screening: an update whose arrays do
  not match the global model's keys and shapes, are not numeric, or hold
  NaN/Inf, or whose dtypes differ from those the site was sent this round,
  or whose ``num-examples`` is not a positive whole number within the
  site's census (plus any synthetic pool it was sent), is rejected, logged
  and not aggregated (so aggregation never weighs by a non-positive or
  inflated count); an update whose change from
  the global model it was sent is far larger than the other sites' changes in
  the same round (see :data:`NORM_OUTLIER_FACTOR`), is rejected, logged and
  not aggregated;
- have every reply recorded per site (Flower's own metric aggregation keeps
  only weighted means).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from fedbone.federation.records import array_signature, record_to_arrays

__all__ = [
    "BUFFER_OUTLIER_FACTOR",
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
# Step counters grow with a site's data: only absurd jumps are refused.
BUFFER_OUTLIER_FACTOR = 1000.0
# With two updates there is no majority to say which one is the odd one out.
MIN_UPDATES_FOR_NORM_RULE = 3


@dataclass(frozen=True)
class RejectedUpdate:
    """An update that was not aggregated, and why."""

    node_id: int
    reason: str


def screen_update(
    content: RecordDict,
    expected: Signature,
    *,
    sent: Signature | None = None,
    max_examples: int | None = None,
) -> str | None:
    """Return why a train reply is unusable, or ``None`` if usable.

    Parameters
    ----------
    content
        The reply's records.
    expected
        ``key -> (shape, dtype)`` of the global model.
    sent
        Signature of the arrays this site was sent this round: each returned
        array must have the dtype it was sent with (an int64 or bool array
        where floats were sent would skip the finiteness and norm checks).
    max_examples
        Most training examples this site can have (its census, plus any
        synthetic pool it was given); ``num-examples`` must be a positive
        integer no larger, since it weighs the update in the average.
    """
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
        if sent is not None and key in sent and str(array.dtype) != sent[key][1]:
            return f"{key}: dtype {array.dtype}, but {sent[key][1]} was sent"
        if not np.isfinite(array.astype(np.float64, copy=False)).all():
            return f"{key}: holds NaN or Inf"
    return _examples_problem(content, max_examples)


def _examples_problem(content: RecordDict, max_examples: int | None) -> str | None:
    """Why ``num-examples`` cannot weigh this update, or ``None``."""
    # Flower's strategies weigh by the key wherever it is (one MetricRecord)
    found = [
        r["num-examples"]
        for r in content.metric_records.values()
        if "num-examples" in r
    ]
    value = found[0] if len(found) == 1 else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "num-examples is missing or not a number"
    if not math.isfinite(value) or value != int(value) or value < 1:
        return f"num-examples {value!r} is not a positive whole number"
    if max_examples is not None and value > max_examples:
        return (
            f"num-examples {int(value)} exceeds the {max_examples} training "
            "examples the site's census (and any pool it was sent) allows"
        )
    return None


def change_norm(
    update: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    *,
    kinds: str = "f",
) -> float:
    """L2 norm of ``update - reference`` over the arrays of dtype ``kinds``.

    Integer buffers (e.g. BatchNorm's ``num_batches_tracked``) count steps, not
    a direction in weight space, so by default they are left out; the grid
    applies the outlier rule to them separately (``kinds="biu"``).

    Parameters
    ----------
    update
        The site's returned arrays.
    reference
        The arrays it was sent.
    kinds
        Numpy dtype kinds included (``"f"``: floating point).
    """
    total = 0.0
    for key, array in update.items():
        if array.dtype.kind not in kinds or key not in reference:
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
    max_examples
        Per node, the most training examples it can report (``num-examples``
        above this, or not a positive whole number, rejects the update).
    """

    def __init__(
        self,
        grid: Grid,
        node_ids: Iterable[int],
        *,
        expected: Signature | None = None,
        on_replies: Callable[[list[Message]], None] | None = None,
        max_examples: Mapping[int, int] | None = None,
    ) -> None:
        self._grid = grid
        self._node_ids = list(node_ids)
        self._expected = expected
        self._on_replies = on_replies
        self._max_examples = dict(max_examples or {})
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
        kept = [reply for reply in replies if self._accept(reply, sent)]
        kept = self._drop_norm_outliers(kept, sent)
        if self._on_replies is not None:
            self._on_replies(kept)
        return kept

    def _accept(self, reply: Message, sent: Mapping[int, RecordDict]) -> bool:
        is_train = reply.metadata.message_type == "train"
        if reply.has_error() or not is_train or self._expected is None:
            return True
        node = reply.metadata.src_node_id
        request = sent.get(node)
        sent_signature = None
        if request is not None and len(request.array_records) == 1:
            sent_signature = array_signature(next(iter(request.array_records.values())))
        reason = screen_update(
            reply.content,
            self._expected,
            sent=sent_signature,
            max_examples=self._max_examples.get(node),
        )
        if reason is None:
            return True
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
        buffer_norms: dict[int, float] = {}
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
            buffer_norms[node] = change_norm(
                update, references[id(record)], kinds="biu"
            )
        # Integer buffers (step counters) scale with a site's data size, which
        # may differ a hundredfold between honest sites: their own, looser rule.
        outliers = norm_outliers(buffer_norms, BUFFER_OUTLIER_FACTOR) | norm_outliers(
            norms
        )
        for node, reason in outliers.items():
            self.rejected.append(RejectedUpdate(node, reason))
            logger.warning("rejected the update from node %d: %s", node, reason)
        return [r for r in replies if r.metadata.src_node_id not in outliers]
