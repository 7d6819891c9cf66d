"""Build Flower messages and contexts the way the runtime hands them to a ClientApp."""

from __future__ import annotations

import time

import numpy as np
from flwr.app import ConfigRecord, Context, Message, Metadata, RecordDict

from fedbone.federation.records import arrays_to_record

RUN_ID = 7


def model_state(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "conv.weight": rng.normal(size=(4, 1, 3, 3)).astype(np.float32),
        "conv.bias": rng.normal(size=(4,)).astype(np.float32),
        "bn.num_batches_tracked": np.array(3, dtype=np.int64),
    }


def config(phase: str, **extra: object) -> ConfigRecord:
    return ConfigRecord({"phase": phase, "task": "bm", "run-name": "study-1", **extra})


def request(message_type: str, content: RecordDict) -> Message:
    """An incoming message as the SuperNode delivers it (no TaskIdentity needed)."""
    metadata = Metadata(
        run_id=RUN_ID,
        message_id="m-1",
        src_node_id=1,
        dst_node_id=42,
        reply_to_message_id="",
        group_id="1",
        created_at=time.time(),
        ttl=3600.0,
        message_type=message_type,
    )
    return Message(content=content, metadata=metadata)


def train_request(seed: int = 0) -> Message:
    content = RecordDict(
        {"arrays": arrays_to_record(model_state(seed)), "config": config("train")}
    )
    return request("train", content)


def context(**node_config: int | str) -> Context:
    return Context(
        run_id=RUN_ID,
        node_id=42,
        node_config=dict(node_config),
        state=RecordDict(),
        run_config={},
    )
