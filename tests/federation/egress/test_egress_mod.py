from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from federation_messages import (
    RUN_ID,
    config,
    context,
    model_state,
    request,
    train_request,
)
from flwr.app import Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedbone.federation.egress.guard import (
    EgressGuard,
    EgressLog,
    EgressRefused,
    SiteTaskError,
    egress_mod,
)
from fedbone.federation.records import arrays_to_record, content_digest


def _app(log: EgressLog, reply_content: RecordDict) -> ClientApp:
    app = ClientApp(mods=[egress_mod(lambda _m, _c: (EgressGuard(), log))])

    @app.train()
    def train(message: Message, _context: Context) -> Message:
        # Consuming the request's arrays, as real handlers do to save memory
        message.content["arrays"].to_numpy_ndarrays(keep_input=False)
        return Message(reply_content, reply_to=message)

    @app.query("census")
    def census(message: Message, _context: Context) -> Message:
        return Message(reply_content, reply_to=message)

    return app


def _train_reply(state: dict[str, np.ndarray]) -> RecordDict:
    metrics = MetricRecord({"num-examples": 12, "train-loss": 0.5})
    return RecordDict({"arrays": arrays_to_record(state), "metrics": metrics})


def test_passed_reply_is_sent_and_logged_with_its_digest(tmp_path: Path) -> None:
    log = EgressLog(tmp_path / "logs" / "egress.jsonl")
    app = _app(log, _train_reply(model_state(seed=1)))

    reply = app(train_request(), context())

    [entry] = log.entries()
    assert (entry["bytes"], entry["sha256"]) == content_digest(reply.content)
    assert entry["verdict"] == "passed"
    assert entry["kind"] == "train"
    assert (entry["run-id"], entry["run-name"], entry["phase"]) == (
        RUN_ID,
        "study-1",
        "train",
    )
    assert datetime.fromisoformat(entry["time"]).utcoffset().total_seconds() == 0


def test_refused_reply_is_logged_then_raised(tmp_path: Path) -> None:
    log = EgressLog(tmp_path / "egress.jsonl")
    state = model_state(seed=1) | {"image": np.ones((256, 64), dtype=np.float32)}
    refused = _train_reply(state)
    app = _app(log, refused)

    with pytest.raises(EgressRefused, match="extra-array"):
        app(train_request(), context())

    [entry] = log.entries()
    assert entry["verdict"] == "refused"
    assert "arrays/image" in entry["reason"]
    assert (entry["bytes"], entry["sha256"]) == content_digest(refused)


def test_census_reply_goes_out_suppressed(tmp_path: Path) -> None:
    log = EgressLog(tmp_path / "egress.jsonl")
    counts = MetricRecord({"n-train": 50, "n-train-ca-pos": 2})
    app = _app(log, RecordDict({"census": counts}))
    message = request("query.census", RecordDict({"config": config("census")}))

    reply = app(message, context())

    assert reply.content["census"]["n-train-ca-pos"] == -1
    assert reply.content["suppressed"]["keys"] == ["n-train-ca-pos"]
    [entry] = log.entries()
    assert entry["sha256"] == content_digest(reply.content)[1]
    assert "suppressed" in entry["reason"]


def test_every_reply_appends_one_line(tmp_path: Path) -> None:
    log = EgressLog(tmp_path / "egress.jsonl")
    app = _app(log, _train_reply(model_state(seed=1)))

    for _ in range(3):
        app(train_request(), context())

    assert [e["verdict"] for e in log.entries()] == ["passed"] * 3
    assert len((tmp_path / "egress.jsonl").read_text().splitlines()) == 3


def test_handler_errors_and_error_replies_are_logged_and_passed_on(
    tmp_path: Path,
) -> None:
    log = EgressLog(tmp_path / "egress.jsonl")
    app = ClientApp(mods=[egress_mod(lambda _m, _c: (EgressGuard(), log))])

    @app.train()
    def train(message: Message, _context: Context) -> Message:
        raise RuntimeError("out of memory reading /archive/smith_john/scan.dcm")

    @app.evaluate()
    def evaluate(message: Message, _context: Context) -> Message:
        return Message(Error(code=3, reason="no validation split"), reply_to=message)

    with pytest.raises(SiteTaskError) as failed:
        app(train_request(), context())
    reply = app(request("evaluate", RecordDict({"config": config("train")})), context())

    assert reply.has_error()
    assert [(e["kind"], e["verdict"]) for e in log.entries()] == [
        ("train", "error"),
        ("evaluate", "error"),
    ]
    assert "smith_john" in log.entries()[0]["reason"]  # kept at the site
    assert "smith_john" not in str(failed.value)  # never sent to the server
    assert "RuntimeError" in str(failed.value)
    assert "no validation split" in log.entries()[1]["reason"]


def test_guard_resolution_failure_stops_before_the_handler(tmp_path: Path) -> None:
    calls: list[str] = []

    def unresolvable(_m: Message, _c: Context) -> tuple[EgressGuard, EgressLog]:
        raise LookupError("no site config")

    app = ClientApp(mods=[egress_mod(unresolvable)])

    @app.train()
    def train(message: Message, _context: Context) -> Message:
        calls.append("train")
        return Message(RecordDict(), reply_to=message)

    with pytest.raises(LookupError):
        app(train_request(), context())
    assert calls == []
