"""The reading page: a small local web server over one reader set.

It serves exactly four things: the page (``/``, one HTML file with inline
script and no external resources), the presentation order (``/items``), the
set's images (``/image/<id>.png``, only ids of the set) and the ids a reader
has answered (``/answered/<reader>``, so a reader can resume); answers come
in as ``POST /answer`` (JSON, at most :data:`MAX_BODY_BYTES`). The key, the
answers and any other file are never served. It binds the loopback address
unless told otherwise, and accepts requests only for the host it was started
on, so another web page cannot reach it through a rebound DNS name.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from fedbone.errors import Problem, ProblemsError
from fedbone.reader_study.answers import AnswerStore
from fedbone.reader_study.kit import IMAGES_DIR, ReaderStudyError, load_item_ids
from fedbone.safe_names import is_safe_name

__all__ = ["MAX_BODY_BYTES", "ReaderStudyServer", "make_server"]

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 4096
"""Largest answer body accepted; an answer is well under 200 bytes."""

_TASK_NAMES = {"bm": "bone metastases", "ca": "cardiac amyloidosis"}
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; img-src 'self'; connect-src 'self'; "
        "script-src 'unsafe-inline'; style-src 'unsafe-inline'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class ReaderStudyServer(ThreadingHTTPServer):
    """A threading HTTP server holding one set's ids, page and answer store.

    Parameters
    ----------
    address
        ``(host, port)``; port 0 picks a free one (see :attr:`url`).
    set_dir
        The set folder.
    allow_remote
        Accept any ``Host`` header (the server was bound to a non-loopback
        address on purpose).
    """

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], set_dir: Path, *, allow_remote: bool
    ) -> None:
        self.set_dir = Path(set_dir)
        task, items = load_item_ids(self.set_dir)
        self.item_ids = tuple(items)
        self.known = frozenset(items)
        self.store = AnswerStore(self.set_dir)
        self.page = _page(task).encode("utf-8")
        self.allow_remote = allow_remote
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        bound = self.socket.getsockname()
        self.host: str = bound[0]
        self.port: int = bound[1]

    @property
    def url(self) -> str:
        """The page's address, with the port actually bound."""
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{shown}:{self.port}/"

    def accepts_host(self, header: str | None) -> bool:
        """Whether a request's ``Host`` header names this server."""
        if self.allow_remote:
            return True
        if not header:
            return False
        name = header.rsplit(":", 1)[0] if not header.endswith("]") else header
        name = name.strip("[]").lower()
        return name in {"localhost", self.host.lower()}


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_server(
    set_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    allow_remote: bool = False,
) -> ReaderStudyServer:
    """Return a server of the set's reading page, bound but not yet serving.

    Call ``serve_forever()`` (in a thread, for tests) and ``shutdown()``.

    Parameters
    ----------
    set_dir
        The set folder.
    host
        Address to bind; a loopback address unless ``allow_remote``.
    port
        Port; 0 picks a free one.
    allow_remote
        Allow binding a non-loopback address (readers on other machines).
        The answers still stay in the set folder.

    Raises
    ------
    ReaderStudyError
        ``not-loopback`` for a non-loopback host without ``allow_remote``;
        ``no-set`` when the folder holds no set.
    """
    if not allow_remote and not _is_loopback(host):
        raise ReaderStudyError(
            host,
            [
                Problem(
                    "not-loopback",
                    "the page binds the loopback address (127.0.0.1) only; "
                    "allow remote readers explicitly to bind another address",
                )
            ],
        )
    return ReaderStudyServer((host, port), set_dir, allow_remote=allow_remote)


class _Handler(BaseHTTPRequestHandler):
    server: ReaderStudyServer
    server_version = "fedbone-reader-study"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in _SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: HTTPStatus, payload: object) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _error(self, status: HTTPStatus, message: str) -> None:
        self._json(status, {"error": message})

    def do_GET(self) -> None:
        if not self.server.accepts_host(self.headers.get("Host")):
            self._error(HTTPStatus.MISDIRECTED_REQUEST, "unknown host")
            return
        path = self.path.split("?", 1)[0]
        if path in {"/", "/index.html"}:
            self._send(HTTPStatus.OK, self.server.page, "text/html; charset=utf-8")
        elif path == "/items":
            self._json(HTTPStatus.OK, {"items": list(self.server.item_ids)})
        elif path.startswith("/image/") and path.endswith(".png"):
            self._image(path[len("/image/") : -len(".png")])
        elif path.startswith("/answered/"):
            self._answered(path[len("/answered/") :])
        else:
            self._error(HTTPStatus.NOT_FOUND, "not found")

    def _image(self, item: str) -> None:
        # The id is looked up, never joined into a path unchecked.
        if item not in self.server.known:
            self._error(HTTPStatus.NOT_FOUND, "not found")
            return
        body = (self.server.set_dir / IMAGES_DIR / f"{item}.png").read_bytes()
        self._send(HTTPStatus.OK, body, "image/png")

    def _answered(self, reader: str) -> None:
        if not is_safe_name(reader):
            self._error(HTTPStatus.NOT_FOUND, "not found")
            return
        try:
            answered = list(self.server.store.answers(reader))
        except ProblemsError as error:
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, _messages(error))
            return
        self._json(HTTPStatus.OK, {"answered": answered})

    def do_POST(self) -> None:
        if not self.server.accepts_host(self.headers.get("Host")):
            self._error(HTTPStatus.MISDIRECTED_REQUEST, "unknown host")
            return
        if self.path != "/answer":
            self._error(HTTPStatus.NOT_FOUND, "not found")
            return
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip()
        if content_type != "application/json":
            self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send application/json")
            return
        length_header = self.headers.get("Content-Length")
        if length_header is None or not length_header.isdigit():
            self._error(HTTPStatus.LENGTH_REQUIRED, "Content-Length required")
            return
        length = int(length_header)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "answer too large")
            return
        try:
            answer = json.loads(self.rfile.read(length))
            saved = self.server.store.record(
                answer["reader"], answer["item"], answer["call"], answer["finding"]
            )
        except ProblemsError as error:
            self._error(HTTPStatus.BAD_REQUEST, _messages(error))
            return
        except (ValueError, KeyError, TypeError):
            self._error(
                HTTPStatus.BAD_REQUEST, "send {reader, item, call, finding} as JSON"
            )
            return
        self._json(HTTPStatus.OK, {"saved": answer["item"], "answered": len(saved)})


def _messages(error: ProblemsError) -> str:
    return "; ".join(problem.message for problem in error.problems)


def _page(task: str | None) -> str:
    finding = _TASK_NAMES.get(task or "", "the finding")
    return _PAGE.replace("{finding}", finding)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Reader study</title>
<style>
body{font-family:sans-serif;margin:1em;background:#fff;color:#111}
#scan{height:78vh;border:1px solid #999;image-rendering:auto}
#reading{display:none;gap:2em}
#done{display:none}
fieldset{margin:0 0 1em 0}
#message{color:#b00}
</style></head>
<body>
<h1>Reader study</h1>
<p>Site-local: images and answers stay on this machine.</p>
<div id="welcome">
<label for="reader-name">Your reader name (letters, digits, . _ -):</label>
<input id="reader-name" autocomplete="off">
<button id="start">Start</button>
</div>
<div id="reading">
<img id="scan" alt="scan">
<div>
<p id="progress"></p>
<fieldset><legend>This image is</legend>
<label><input type="radio" name="call" id="call-real" value="real"> real</label>
<label><input type="radio" name="call" id="call-synthetic" value="synthetic">
 synthetic</label>
</fieldset>
<fieldset><legend>Finding ({finding})</legend>
<label><input type="radio" name="finding" id="finding-positive" value="positive">
 positive</label>
<label><input type="radio" name="finding" id="finding-negative" value="negative">
 negative</label>
</fieldset>
<button id="next" disabled>Next</button>
</div>
</div>
<div id="done"><p>All images answered. Thank you.</p></div>
<p id="message"></p>
<script>
"use strict";
let reader = "", items = [], position = 0;
const $ = (id) => document.getElementById(id);
const choice = (name) => {
  const checked = document.querySelector('input[name="' + name + '"]:checked');
  return checked ? checked.value : null;
};
function show() {
  if (position >= items.length) {
    $("reading").style.display = "none";
    $("done").style.display = "block";
    return;
  }
  document.querySelectorAll("input[type=radio]").forEach((r) => r.checked = false);
  $("next").disabled = true;
  $("scan").src = "/image/" + items[position] + ".png";
  $("progress").textContent = (position + 1) + " of " + items.length;
}
function ready() { $("next").disabled = !(choice("call") && choice("finding")); }
document.querySelectorAll("input[type=radio]").forEach(
  (r) => r.addEventListener("change", ready));
$("start").addEventListener("click", async () => {
  reader = $("reader-name").value.trim();
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(reader)) {
    $("message").textContent = "Use letters, digits, '.', '_' or '-' for the name.";
    return;
  }
  $("message").textContent = "";
  items = (await (await fetch("/items")).json()).items;
  const answered = new Set(
    (await (await fetch("/answered/" + reader)).json()).answered);
  position = items.findIndex((item) => !answered.has(item));
  if (position < 0) position = items.length;
  $("welcome").style.display = "none";
  $("reading").style.display = "flex";
  show();
});
$("next").addEventListener("click", async () => {
  $("next").disabled = true;
  const answer = {reader: reader, item: items[position],
                  call: choice("call"), finding: choice("finding")};
  const reply = await fetch("/answer", {method: "POST",
    headers: {"Content-Type": "application/json"}, body: JSON.stringify(answer)});
  if (!reply.ok) {
    $("message").textContent = "Not saved: " + (await reply.json()).error;
    $("next").disabled = false;
    return;
  }
  $("message").textContent = "";
  position += 1;
  show();
});
</script>
</body></html>
"""
