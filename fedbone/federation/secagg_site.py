"""A site's answers to the four secure aggregation stages.

Each function decodes a request, advances the site's
:class:`~fedbone.federation.secure_aggregation.SiteRound` kept in its Flower
context, and returns the reply's records; ``sites/`` wraps them in handlers.
The update never leaves unmasked: training and masking happen in
:func:`answer_masked_round`, between the inbox check (before any work) and the
reply.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from flwr.app import Context, Message, RecordDict

from fedbone.classifier.rounds import RoundResult
from fedbone.errors import Problem
from fedbone.federation.kinds import (
    CONFIG_RECORD,
    SECAGG_KEYS_RECORD,
    SECAGG_MASKED_RECORD,
    SECAGG_SHARES_RECORD,
    SECAGG_UNMASK_RECORD,
)
from fedbone.federation.secagg_messages import (
    inbox_from,
    keys_record,
    mask_settings_from,
    masked_record,
    peers_from,
    round_id_from,
    shares_record,
    site_round_from,
    site_round_to,
    unmask_record,
    unmask_request_from,
)
from fedbone.federation.secure_aggregation import (
    SecureAggregationError,
    SiteRound,
    encode_input,
    weighted_update,
)
from fedbone.federation.study_messages import config_int, metric_record

__all__ = ["answer_keys", "answer_masked_round", "answer_shares", "answer_unmask"]

#: Trains the received model and returns the site's round.
Trainer = Callable[[Mapping[str, np.ndarray]], RoundResult]


def _current(context: Context) -> SiteRound:
    state = site_round_from(context)
    if state is None:
        raise SecureAggregationError(
            "secure aggregation request",
            [
                Problem(
                    "no-round",
                    "this site has no secure aggregation round in progress; the "
                    "centre must start one with query.secagg_keys",
                )
            ],
        )
    return state


def answer_keys(message: Message, context: Context) -> RecordDict:
    """Stage 1: start a round with fresh keys (any earlier round is dropped)."""
    state, keys = SiteRound.start(round_id_from(message), message.metadata.dst_node_id)
    site_round_to(context, state)
    return RecordDict({SECAGG_KEYS_RECORD: keys_record(keys)})


def answer_shares(message: Message, context: Context) -> RecordDict:
    """Stage 2: seal shares of this round's secrets for every peer."""
    threshold = config_int(
        message.content.config_records[CONFIG_RECORD], "secagg-threshold"
    )
    state, sealed = _current(context).share(
        round_id_from(message), peers_from(message), threshold
    )
    site_round_to(context, state)
    return RecordDict({SECAGG_SHARES_RECORD: shares_record(sealed)})


def answer_masked_round(
    message: Message,
    context: Context,
    received: Mapping[str, np.ndarray],
    train: Trainer,
) -> RecordDict:
    """Stage 3: open the inbox, train, and reply with the masked update.

    Parameters
    ----------
    message
        The ``train.secagg`` request.
    context
        The site's Flower context (holds the round).
    received
        The global model the request carries.
    train
        Trains ``received`` at the site (the plain round's training).

    Returns
    -------
    RecordDict
        ``secagg-masked`` and the round's metrics, less ``num-examples``
        (the weight travels masked).
    """
    round_id = round_id_from(message)
    state = _current(context).open_inbox(round_id, inbox_from(message))
    settings = mask_settings_from(message)
    codec = settings.codec()
    codec.check_capacity(len(state.held))
    result = train(received)
    weight = int(result.metrics["num-examples"])
    if not 1 <= weight <= settings.max_weight:
        raise SecureAggregationError(
            "secure aggregation request",
            [
                Problem(
                    "weight-out-of-bound",
                    f"this site's num-examples is outside 1..{settings.max_weight} "
                    "(secagg-max-weight): its input would not decode",
                )
            ],
        )
    update = weighted_update(result.arrays, received, weight, settings.clip)
    state, masked = state.mask(round_id, encode_input(update, weight, codec))
    site_round_to(context, state)
    metrics = {k: v for k, v in result.metrics.items() if k != "num-examples"}
    return RecordDict(
        {SECAGG_MASKED_RECORD: masked_record(masked), "metrics": metric_record(metrics)}
    )


def answer_unmask(message: Message, context: Context) -> RecordDict:
    """Stage 4: the shares that unmask the sum; the round's secrets go.

    The state is discarded before the request is checked, so whatever the
    answer, no second unmask request of the round finds anything to reveal.
    """
    state = _current(context)
    site_round_to(context, None)
    shares = state.reveal(round_id_from(message), unmask_request_from(message))
    return RecordDict({SECAGG_UNMASK_RECORD: unmask_record(shares)})
