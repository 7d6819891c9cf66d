"""Exactly-once work at a site: a repeated request gets the reply already made.

When the coordinating centre restarts a study after a crash, it resumes from
its last checkpoint and may send again a request a site has already answered
(the round that was in flight). Training again would repeat the site's work
and, under differential privacy, spend its budget a second time on the same
release. The :func:`replay_mod` ClientApp mod prevents both: for the kinds of
work in :data:`REPLAYED_KINDS` it keys every request by the sha256 of its whole
content (model arrays and config, which names the run, the model and the
round) and keeps the reply in the site's work folder; an identical request
within the same run is answered from there, without calling the handler.
Re-sending an identical reply reveals nothing new (post-processing), and the
egress guard still screens and logs it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common import serde
from flwr.proto.recorddict_pb2 import RecordDict as RecordDictProto

from fedbone.federation.kinds import (
    CONFIG_RECORD,
    QUERY_GAN_TRAIN,
    QUERY_OUTCOMES,
    QUERY_PAIRED,
    QUERY_VALIDATE,
    TRAIN,
)
from fedbone.safe_names import is_safe_name

__all__ = ["REPLAYED_KINDS", "ReplyStore", "replay_mod", "request_digest"]

logger = logging.getLogger(__name__)

#: Work worth remembering: expensive, or charged to the privacy budget.
REPLAYED_KINDS = frozenset(
    {TRAIN, QUERY_VALIDATE, QUERY_PAIRED, QUERY_OUTCOMES, QUERY_GAN_TRAIN}
)

Handler = Callable[[Message, Context], Message]
WorkDirFor = Callable[[Message, Context], Path]


def _content_bytes(content: RecordDict) -> bytes:
    return serde.recorddict_to_proto(content).SerializeToString(deterministic=True)


def _whole(value: object) -> int:
    return int(value) if isinstance(value, int | float) else 0


def _absolute_round(content: RecordDict) -> RecordDict:
    """Return the content with the strategy's round number made absolute.

    A resumed model's strategy counts its rounds from 1 again and says how
    many were done before (``round-offset``); the request for round k must
    hash the same before and after the restart.
    """
    config = content.config_records.get(CONFIG_RECORD)
    if config is None or "server-round" not in config:
        return content
    values = dict(config)
    offset = values.pop("round-offset", 0)
    values["server-round"] = _whole(values["server-round"]) + _whole(offset)
    normalised = RecordDict(dict(content))
    normalised[CONFIG_RECORD] = ConfigRecord(values)
    return normalised


def request_digest(message: Message) -> str:
    """sha256 of a request's message type and whole content (absolute round)."""
    digest = hashlib.sha256(message.metadata.message_type.encode())
    digest.update(_content_bytes(_absolute_round(message.content)))
    return digest.hexdigest()


class ReplyStore:
    """Replies of one run, by request digest, under ``<work>/runs/<run>/replies``.

    Parameters
    ----------
    folder
        Where the replies of this run are kept.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, digest: str) -> Path:
        return self.folder / f"{digest}.reply"

    def get(self, digest: str) -> RecordDict | None:
        """Return the stored reply content for ``digest``, if any."""
        path = self._path(digest)
        if not path.is_file():
            return None
        proto = RecordDictProto()
        proto.ParseFromString(path.read_bytes())
        return serde.recorddict_from_proto(proto)

    def note_replay(self, kind: str, digest: str) -> None:
        """Append to ``replays.jsonl`` next to the replies (for the site's audit)."""
        line = {"time": time.time(), "kind": kind, "request-sha256": digest}
        with (self.folder.parent / "replays.jsonl").open("a") as handle:
            handle.write(json.dumps(line) + "\n")

    def put(self, digest: str, content: RecordDict) -> None:
        """Store a reply atomically (a crash never leaves half a reply)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(digest)
        staging = path.with_suffix(".partial")
        with staging.open("wb") as handle:
            handle.write(_content_bytes(content))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staging, path)


def replay_mod(
    work_dir_for: WorkDirFor,
) -> Callable[[Message, Context, Handler], Message]:
    """Build the mod; ``work_dir_for`` returns the site's work folder.

    Place it after the egress guard (``mods=[egress_mod(...), replay_mod(...)]``)
    so replayed replies are screened and logged like fresh ones.
    """

    def mod(message: Message, context: Context, call_next: Handler) -> Message:
        kind = message.metadata.message_type
        if kind not in REPLAYED_KINDS or not message.has_content():
            return call_next(message, context)
        config = message.content.config_records.get(CONFIG_RECORD, ConfigRecord())
        run_name = config.get("run-name", "")
        if not is_safe_name(run_name):
            # no run (or a name that is no safe folder: the handler refuses it)
            return call_next(message, context)
        assert isinstance(run_name, str)
        store = ReplyStore(
            work_dir_for(message, context) / "runs" / run_name / "replies"
        )
        digest = request_digest(message)
        stored = store.get(digest)
        if stored is not None:
            logger.info("%s: answering a repeated request from its stored reply", kind)
            store.note_replay(kind, digest)
            return Message(stored, reply_to=message)
        reply = call_next(message, context)
        if not reply.has_error():
            store.put(digest, reply.content)
        return reply

    return mod
