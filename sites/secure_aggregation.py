"""The ClientApp's handlers of secure aggregation's four stages.

Registered on the site's ClientApp by :func:`add_secure_aggregation`, so they
run behind the same mods (egress guard first) as every other handler.
"""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedbone.federation.requests import model_arrays, train_request
from fedbone.federation.secagg_site import (
    answer_keys,
    answer_masked_round,
    answer_shares,
    answer_unmask,
)
from fedbone.federation.site_context import site_for

__all__ = ["add_secure_aggregation"]


def secagg_keys(message: Message, context: Context) -> Message:
    """Stage 1: reply with the round's fresh public keys."""
    return Message(answer_keys(message, context), reply_to=message)


def secagg_shares(message: Message, context: Context) -> Message:
    """Stage 2: reply with shares of the round's secrets, sealed per peer."""
    return Message(answer_shares(message, context), reply_to=message)


def secagg_train(message: Message, context: Context) -> Message:
    """Stage 3: train the received model as in a plain round; reply masked."""
    request = train_request(message, context)
    site = site_for(message, context)
    content = answer_masked_round(
        message,
        context,
        model_arrays(message),
        lambda arrays: site.train(request, arrays),
    )
    return Message(content, reply_to=message)


def secagg_unmask(message: Message, context: Context) -> Message:
    """Stage 4: reply with the shares that unmask the sum, once per round."""
    return Message(answer_unmask(message, context), reply_to=message)


def add_secure_aggregation(app: ClientApp) -> None:
    """Register the four stages' handlers on ``app``."""
    app.query("secagg_keys")(secagg_keys)
    app.query("secagg_shares")(secagg_shares)
    app.train("secagg")(secagg_train)
    app.query("secagg_unmask")(secagg_unmask)
