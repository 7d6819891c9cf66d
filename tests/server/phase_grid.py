"""A Grid that answers each request with hand-made replies, for phase tests.

Each query kind (``query.census``, ``train``...) has an answer: a function of
the request returning the reply's content, or an :class:`Error` for a site
that refuses or fails. Every request is kept, so tests can assert on what a
phase sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
from flwr.app import (
    ConfigRecord,
    Error,
    Message,
    Metadata,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid

from fedbone.config.study import StudyConfig
from fedbone.federation.records import arrays_to_record
from server.study_run import SiteInfo, StudyRun

Answer = Callable[[Message], RecordDict | Error]


class ScriptedGrid:
    """Connected nodes answering every message kind as scripted."""

    def __init__(self, answers: Mapping[str, Answer], nodes: Iterable[int] = ()):
        self.answers = dict(answers)
        self.nodes = list(nodes)
        self.sent: list[Message] = []

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        replies = []
        for message in messages:
            self.sent.append(message)
            kind = message.metadata.message_type
            answer = self.answers[kind](message)
            metadata = Metadata(
                run_id=1,
                message_id=f"reply-{len(self.sent)}",
                src_node_id=message.metadata.dst_node_id,
                dst_node_id=0,
                reply_to_message_id=f"request-{len(self.sent)}",
                group_id="1",
                created_at=time.time(),
                ttl=60.0,
                message_type=kind,
            )
            if isinstance(answer, Error):
                replies.append(Message(error=answer, metadata=metadata))
            else:
                replies.append(Message(content=answer, metadata=metadata))
        return replies

    def kinds(self) -> list[str]:
        """The message type of every request, in the order sent."""
        return [m.metadata.message_type for m in self.sent]

    def sent_to(self, kind: str) -> list[int]:
        """The nodes that received a request of ``kind``, in order."""
        return [
            m.metadata.dst_node_id for m in self.sent if m.metadata.message_type == kind
        ]


def content(
    *,
    metrics: Mapping[str, Mapping[str, Any]] | None = None,
    configs: Mapping[str, Mapping[str, Any]] | None = None,
    arrays: Mapping[str, Mapping[str, np.ndarray]] | None = None,
) -> RecordDict:
    """A reply's content from plain values, one record per name."""
    records: dict[str, Any] = {}
    for name, values in (metrics or {}).items():
        records[name] = MetricRecord(dict(values))
    for name, values in (configs or {}).items():
        records[name] = ConfigRecord(dict(values))
    for name, values in (arrays or {}).items():
        records[name] = arrays_to_record(values)
    return RecordDict(records)


def study_run(
    tmp_path: Path,
    grid: ScriptedGrid,
    sites: Mapping[int, tuple[str, str]],
    study: StudyConfig | None = None,
    **fields: Any,
) -> StudyRun:
    """A run whose census found ``sites`` (node -> (site id, role))."""
    return StudyRun(
        study=study or StudyConfig(name="phase-test"),
        grid=cast(Grid, grid),
        run_dir=tmp_path / "run",
        sites={
            node: SiteInfo(node, site, role, {}, "spec", "", "", canvas="8x4")
            for node, (site, role) in sites.items()
        },
        **fields,
    )


def config_of(message: Message) -> ConfigRecord:
    """The request's ``config`` record."""
    return message.content.config_records["config"]
