"""Replies as they reach the ServerApp, for strategy and grid tests."""

from __future__ import annotations

import time

import numpy as np
from flwr.app import Message, Metadata, MetricRecord, RecordDict

from fedbone.federation.records import arrays_to_record


def reply(
    node: int,
    arrays: dict[str, np.ndarray],
    num_examples: int,
    message_type: str = "train",
    **metrics: float,
) -> Message:
    metadata = Metadata(
        run_id=1,
        message_id=f"reply-{node}",
        src_node_id=node,
        dst_node_id=0,
        reply_to_message_id=f"request-{node}",
        group_id="1",
        created_at=time.time(),
        ttl=3600.0,
        message_type=message_type,
    )
    content = RecordDict(
        {
            "arrays": arrays_to_record(arrays),
            "metrics": MetricRecord({"num-examples": num_examples, **metrics}),
        }
    )
    return Message(content=content, metadata=metadata)
