"""The centre's four message stages of one secure aggregation round.

:func:`run_secure_round` drives a
:class:`~fedbone.federation.secure_aggregation.CentreRound` over the grid:
keys, sealed shares, masked training, unmasking. A site that does not answer
a stage, answers it with an error, or sends a reply the protocol cannot use
is left out of the later stages (a dropout); its masks are still removed as
long as at least ``threshold`` sites answer every stage. Below that the round
fails and nothing is unmasked.

What the centre can still check without seeing any single update: the size
of every reply (the sites' egress guards hold the same), and, once unmasked,
that the summed weight lies between the number of survivors and the sum of
their census bounds and that no summed element exceeds those bounds times the
clip. A round whose
sum breaks these is refused as a whole: one site sent a malformed input, and
under secure aggregation no one can say which.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedbone.errors import Problem
from fedbone.federation.kinds import (
    CONFIG_RECORD,
    QUERY_SECAGG_KEYS,
    QUERY_SECAGG_SHARES,
    QUERY_SECAGG_UNMASK,
    SECAGG_INBOX_RECORD,
    SECAGG_PEERS_RECORD,
    SECAGG_SURVIVORS_RECORD,
    TRAIN_SECAGG,
)
from fedbone.federation.records import (
    array_signature,
    arrays_to_record,
    record_to_arrays,
)
from fedbone.federation.secagg_messages import (
    MaskSettings,
    inbox_record,
    keys_from,
    masked_from,
    peers_record,
    shares_from,
    unmask_from,
    unmask_request_record,
)
from fedbone.federation.secure_aggregation import (
    CentreRound,
    SecureAggregationError,
    apply_average,
    decode_sum,
    masked_size,
)

__all__ = ["DEFAULT_MAX_WEIGHT", "SecureRoundReport", "run_secure_round"]

logger = logging.getLogger(__name__)

#: The weight bound of a site without a census figure.
DEFAULT_MAX_WEIGHT = 100_000


@dataclass
class SecureRoundReport:
    """What one secure round did: who answered each stage, time, failure.

    ``stages`` maps a stage (``keys``, ``shares``, ``masked``, ``unmask``) to
    the nodes that answered it usefully; ``problems`` lists replies left out
    (node, reason); ``seconds`` the wall time of each stage and of unmasking.
    """

    server_round: int
    round_id: str
    stages: dict[str, list[int]] = field(default_factory=dict)
    problems: list[tuple[int, str]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    threshold: int = 0
    failure: str | None = None

    @property
    def dropped(self) -> list[int]:
        """Nodes that shared their secrets but sent no usable masked input."""
        masked = set(self.stages.get("masked", []))
        return [n for n in self.stages.get("shares", []) if n not in masked]

    def to_json(self, site_of: Callable[[int], str]) -> dict[str, Any]:
        """Return the report with sites named (for ``results.json``)."""
        return {
            "round": self.server_round,
            "threshold": self.threshold,
            **{
                f"sites-{stage}": sorted(site_of(n) for n in nodes)
                for stage, nodes in self.stages.items()
            },
            "dropped": sorted(site_of(n) for n in self.dropped),
            "problems": [
                {"site": site_of(node), "reason": reason}
                for node, reason in self.problems
            ],
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
            "failure": self.failure,
        }


@dataclass(frozen=True)
class _Exchange:
    grid: Grid
    timeout: float
    report: SecureRoundReport

    def ask(
        self,
        stage: str,
        kind: str,
        nodes: Iterable[int],
        content_for: Callable[[int], RecordDict],
    ) -> list[Message]:
        """Send one stage's request to ``nodes``; return the good replies."""
        started = time.perf_counter()
        messages = [
            Message(content=content_for(node), dst_node_id=node, message_type=kind)
            for node in nodes
        ]
        replies = self.grid.send_and_receive(messages, timeout=self.timeout)
        self.report.seconds[stage] = time.perf_counter() - started
        good = []
        for reply in replies:
            if reply.has_error():
                self.drop(reply.metadata.src_node_id, f"{kind}: {reply.error.reason}")
            else:
                good.append(reply)
        return good

    def drop(self, node: int, reason: str) -> None:
        """Leave a site out of the round's later stages, saying why."""
        logger.warning(
            "secure round %s: node %d left out: %s", self.report.round_id, node, reason
        )
        self.report.problems.append((node, reason))


def _take(
    exchange: _Exchange,
    stage: str,
    replies: list[Message],
    add: Callable[[int, RecordDict], None],
) -> None:
    """Feed each reply to the round; a reply it cannot use drops its site."""
    taken = []
    for reply in replies:
        node = reply.metadata.src_node_id
        try:
            add(node, reply.content)
        except (SecureAggregationError, KeyError, ValueError) as error:
            exchange.drop(node, f"{stage}: unusable reply ({error})")
            continue
        taken.append(node)
    exchange.report.stages[stage] = sorted(taken)


def run_secure_round(
    grid: Grid,
    nodes: list[int],
    arrays: ArrayRecord,
    config: ConfigRecord,
    *,
    settings: MaskSettings,
    max_examples: Mapping[int, int],
    min_sites: int,
    timeout: float,
    report: SecureRoundReport,
) -> ArrayRecord | None:
    """Run one round's four stages; return the new global model, or ``None``.

    Parameters
    ----------
    grid
        The (study) grid.
    nodes
        The sites asked to take part.
    arrays
        The global model they train.
    config
        The round's training config (sent with every stage).
    settings
        Clip and scale of the encoding; its ``max_weight`` is replaced by the
        largest census bound of the sites that shared their secrets.
    max_examples
        Per node, the most examples it may weigh with.
    min_sites
        Fewest sites a stage needs (the threshold is at least this).
    timeout
        Seconds each stage waits for replies.
    report
        Filled in as the round goes (who answered, timings, failure).

    Returns
    -------
    ArrayRecord or None
        ``received + (sum of weighted updates) / (sum of weights)`` over the
        float arrays (integer arrays as received); ``None`` when the round
        failed (logged and in ``report.failure``).
    """
    received = record_to_arrays(arrays)
    centre = CentreRound(
        report.round_id, masked_size(array_signature(arrays)) + 1, min_sites=min_sites
    )
    exchange = _Exchange(grid, timeout, report)
    base = {**dict(config), "secagg-round": report.round_id}
    try:
        replies = exchange.ask(
            "keys", QUERY_SECAGG_KEYS, nodes, lambda _: _content(base)
        )
        _take(exchange, "keys", replies, lambda n, c: centre.add_keys(n, keys_from(c)))
        peers = centre.peer_keys()
        report.threshold = centre.threshold
        shares_content = _content(
            {**base, "secagg-threshold": centre.threshold},
            {SECAGG_PEERS_RECORD: peers_record(peers)},
        )
        replies = exchange.ask(
            "shares", QUERY_SECAGG_SHARES, peers.node_ids, lambda _: shares_content
        )
        _take(
            exchange,
            "shares",
            replies,
            lambda n, c: centre.add_shares(n, shares_from(c)),
        )
        sharers = centre.sharers
        bound = max(max_examples.get(n, DEFAULT_MAX_WEIGHT) for n in sharers)
        settings = MaskSettings(settings.clip, settings.scale_bits, bound)
        codec = settings.codec()
        codec.check_capacity(len(sharers))
        train_config = {**base, **settings.to_config()}
        replies = exchange.ask(
            "masked",
            TRAIN_SECAGG,
            sharers,
            lambda node: _content(
                train_config,
                {
                    "arrays": arrays,
                    SECAGG_INBOX_RECORD: inbox_record(centre.inbox_for(node)),
                },
            ),
        )
        _take(
            exchange,
            "masked",
            replies,
            lambda n, c: centre.add_masked(n, masked_from(c)),
        )
        request = centre.unmask_request()
        unmask_content = _content(
            base, {SECAGG_SURVIVORS_RECORD: unmask_request_record(request)}
        )
        replies = exchange.ask(
            "unmask", QUERY_SECAGG_UNMASK, request.survivors, lambda _: unmask_content
        )
        _take(
            exchange,
            "unmask",
            replies,
            lambda n, c: centre.add_unmask(n, unmask_from(c)),
        )
        started = time.perf_counter()
        summed, weight = decode_sum(centre.unmasked_sum(), codec)
        bounds = [max_examples.get(n, bound) for n in request.survivors]
        _check_sum(summed, weight, bounds, settings.clip)
        report.seconds["unmasking"] = time.perf_counter() - started
    except SecureAggregationError as error:
        report.failure = str(error)
        logger.error("secure round %s failed: %s", report.round_id, error)
        return None
    return arrays_to_record(apply_average(received, summed, weight))


def _content(
    config: Mapping[str, Any], records: Mapping[str, ArrayRecord] | None = None
) -> RecordDict:
    return RecordDict({CONFIG_RECORD: ConfigRecord(dict(config)), **(records or {})})


def _check_sum(summed: np.ndarray, weight: int, bounds: list[int], clip: float) -> None:
    """Refuse an unmasked sum no honest set of survivors could have sent."""
    problems = []
    if not len(bounds) <= weight <= sum(bounds):
        problems.append(
            f"the summed weight {weight} is outside {len(bounds)}..{sum(bounds)} "
            "(one example per survivor up to their census bounds)"
        )
    largest = float(np.abs(summed).max()) if summed.size else 0.0
    if not largest <= sum(bounds) * clip:  # an honest site sends weight x clip at most
        problems.append(
            f"a summed update element of {largest:.3g} exceeds what the survivors' "
            f"weights and the clip allow ({sum(bounds) * clip:.3g})"
        )
    if problems:
        raise SecureAggregationError(
            "unmasked sum",
            [
                Problem("malformed-sum", p + "; a site sent a malformed input")
                for p in problems
            ],
        )
