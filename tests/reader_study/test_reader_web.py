"""The reading page's server, over HTTP: what it serves and what it refuses."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from fedbone.reader_study.answers import AnswerStore
from fedbone.reader_study.kit import ReaderSet, ReaderStudyError
from fedbone.reader_study.web import MAX_BODY_BYTES, ReaderStudyServer, make_server

PAGE_IDS = (
    "reader-name",
    "start",
    "scan",
    "call-real",
    "call-synthetic",
    "finding-positive",
    "finding-negative",
    "next",
    "progress",
    "done",
)


def _request(
    server: ReaderStudyServer,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    # http.client sends the path exactly as given (no "../" clean-up).
    connection = http.client.HTTPConnection(server.host, server.port, timeout=5)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        reply = connection.getresponse()
        return reply.status, reply.read()
    finally:
        connection.close()


def _post(server: ReaderStudyServer, payload: object) -> tuple[int, bytes]:
    return _request(
        server,
        "POST",
        "/answer",
        json.dumps(payload).encode(),
        {"Content-Type": "application/json"},
    )


def test_the_page_is_self_contained_and_has_the_stable_ids(
    served: ReaderStudyServer,
) -> None:
    status, body = _request(served, "GET", "/")

    page = body.decode()
    assert status == 200
    for element in PAGE_IDS:
        assert f'id="{element}"' in page
    assert "http://" not in page and "https://" not in page
    assert "bone metastases" in page


def test_items_and_images_of_the_set_are_served(served: ReaderStudyServer) -> None:
    status, body = _request(served, "GET", "/items")
    items = json.loads(body)["items"]

    assert status == 200
    assert items == list(served.item_ids)
    status, png = _request(served, "GET", f"/image/{items[0]}.png")
    assert status == 200
    assert png == (served.set_dir / "images" / f"{items[0]}.png").read_bytes()


@pytest.mark.parametrize(
    "path",
    [
        "/key.json",
        "/items.json",
        "/image/key.png",
        "/image/../key.json",
        "/image/..%2fkey.json",
        "/image/%2e%2e/key.png",
        "/../key.json",
        "/answers/reader.json",
        "/answered/..",
        "/images/",
    ],
)
def test_the_key_and_other_files_are_never_served(
    served: ReaderStudyServer, path: str
) -> None:
    AnswerStore(served.set_dir).record("reader", served.item_ids[0], "real", "positive")

    status, body = _request(served, "GET", path)

    assert status == 404
    assert b"synthetic" not in body and b"origin" not in body


def test_an_answer_is_saved_and_listed_as_answered(served: ReaderStudyServer) -> None:
    item = served.item_ids[3]

    status, body = _post(
        served,
        {"reader": "ana", "item": item, "call": "synthetic", "finding": "negative"},
    )

    assert status == 200 and json.loads(body) == {"saved": item, "answered": 1}
    answers = AnswerStore(served.set_dir).answers("ana")
    assert (answers[item].call, answers[item].finding) == ("synthetic", "negative")
    status, body = _request(served, "GET", "/answered/ana")
    assert json.loads(body) == {"answered": [item]}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (
            {"reader": "../ana", "item": "<id>", "call": "real", "finding": "positive"},
            "safe name",
        ),
        ({"reader": "ana", "item": "x", "call": "real", "finding": "positive"}, "id"),
        ({"reader": "ana"}, "send {reader"),
        (["not", "an", "object"], "send {reader"),
    ],
)
def test_bad_answers_are_refused_with_a_reason(
    served: ReaderStudyServer, payload: object, message: str
) -> None:
    if isinstance(payload, dict) and payload.get("item") == "<id>":
        payload = {**payload, "item": served.item_ids[0]}

    status, body = _post(served, payload)

    assert status == 400
    assert message in json.loads(body)["error"]
    assert not (served.set_dir / "answers").exists()


def test_a_body_over_the_limit_is_refused_unread(served: ReaderStudyServer) -> None:
    status, _ = _request(
        served,
        "POST",
        "/answer",
        b"{" + b" " * MAX_BODY_BYTES + b"}",
        {"Content-Type": "application/json"},
    )

    assert status == 413


def test_only_json_for_this_host_is_taken(served: ReaderStudyServer) -> None:
    answer = {
        "reader": "ana",
        "item": served.item_ids[0],
        "call": "real",
        "finding": "positive",
    }
    form = json.dumps(answer).encode()

    as_text = _request(served, "POST", "/answer", form, {"Content-Type": "text/plain"})
    rebound = _request(served, "GET", "/items", headers={"Host": "evil.example:80"})

    assert as_text[0] == 415
    assert rebound[0] == 421
    assert not (served.set_dir / "answers").exists()


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "example.org"])
def test_a_non_loopback_address_needs_an_explicit_flag(
    tiny_set: Callable[..., ReaderSet], host: str
) -> None:
    folder: Path = tiny_set().folder

    with pytest.raises(ReaderStudyError, match="not-loopback"):
        make_server(folder, host=host)
