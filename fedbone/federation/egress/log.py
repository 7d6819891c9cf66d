"""The site's egress log: one line per reply a site sends (passed, refused, error).

What a data-protection officer needs to know
--------------------------------------------
Each line is one JSON object: ``time`` (UTC ISO 8601), ``run-id``,
``run-name``, ``phase``, ``kind``, ``bytes``, ``sha256`` (of what was sent,
refused or of the error text), ``verdict`` (passed|refused|error) and
``reason``, plus the fields that make the log tamper-evident:

- ``seq``, the line's 0-based position;
- ``prev``, the sha256 of the previous line's bytes (64 zeros for the first),
  so a line edited, deleted, inserted or moved breaks the chain at the next
  line;
- ``mac``, when the log is kept with the site's secret (as a site always
  does): an HMAC-SHA256 under that secret of the line without ``mac``, so a
  line cannot be rewritten, added or re-chained without the key.

A head file holds the line count and the sha256 of the last line (with an
HMAC when keyed) and is replaced atomically after every append, so a cut-off
tail or a deleted log is detected too. Keyed, the head lives next to the secret
(``<secret>.<log name>.head``), not next to the log (see
:func:`fedbone.privacy.ledger.head_path_for`). Without a secret (tests, tools)
the chain is unkeyed: it detects accidents and naive edits, not someone who
rewrites the whole chain and head, and verification says so.

Appends are serialised by a lock file (``<log>.lock``, ``flock``) so that
concurrent processes keep one linear chain; an append first checks that the
log still matches its head and refuses
(:class:`EgressLogTampered`) if not, so a tampered log is never sealed again.
``fedbone site egress-log`` verifies everything
(:mod:`fedbone.federation.egress.log_audit`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedbone.errors import Problem, ProblemsError
from fedbone.file_lock import exclusive_lock
from fedbone.privacy.ledger import GENESIS_HASH, ChainHead, HeadFile, head_path_for
from fedbone.security.site_secret import SiteSecret

__all__ = [
    "EGRESS_MAC_PURPOSE",
    "EgressLog",
    "EgressLogTampered",
    "entry_mac_data",
    "line_hash",
    "split_lines",
]

EGRESS_MAC_PURPOSE = "egress-log"
"""The site-secret MAC purpose of the egress log's lines and head."""


class EgressLogTampered(ProblemsError):  # noqa: N818 (like LedgerTampered)
    """An egress log that no longer matches its head: nothing more is logged.

    A site whose egress log was cut off, rewritten or replaced stops sending
    replies until the log is restored from a backup (or moved away
    deliberately): appending would seal the altered log with a fresh head.
    """

    kind = "egress log"


def line_hash(line: bytes) -> str:
    """Return the sha256 of one log line's bytes (without its newline)."""
    return hashlib.sha256(line).hexdigest()


def entry_mac_data(entry: Mapping[str, Any]) -> bytes:
    """Return what an entry's ``mac`` covers: its canonical JSON less ``mac``."""
    content = {k: v for k, v in entry.items() if k != "mac"}
    return b"entry|" + _canonical(content).encode("utf-8")


def split_lines(data: bytes) -> list[bytes]:
    """Split a log's bytes into its lines (a final newline ends the last one)."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


class EgressLog:
    """Append-only, hash-chained JSON-lines record of every reply a site sends.

    Lines are written with one ``write`` and fsync'd, so the log survives a
    crash right after a message went out. See the module docstring for the
    fields and the tamper evidence.

    Parameters
    ----------
    path
        The log file; its folder is created if needed.
    secret
        The site secret that keys lines and head; ``None`` keeps the log
        chained but unkeyed (tests, tools). A site always passes its secret
        (:func:`fedbone.federation.site_context.guard_and_log_for`).
    """

    def __init__(self, path: Path, secret: SiteSecret | None = None) -> None:
        self.path = Path(path)
        self.secret = secret
        self.head_path = head_path_for(
            self.path, secret.path if secret is not None else None
        )
        self._head = HeadFile(self.head_path, EGRESS_MAC_PURPOSE, secret)
        self._lock_path = self.path.with_name(self.path.name + ".lock")

    @property
    def keyed(self) -> bool:
        """Whether lines and head carry a MAC under the site secret."""
        return self.secret is not None

    def append(
        self,
        *,
        run_id: int,
        run_name: str,
        phase: str,
        kind: str,
        n_bytes: int,
        sha256: str,
        verdict: str,
        reason: str,
    ) -> None:
        """Append one entry, chained (and MAC'd when keyed), and flush it to disk.

        Parameters
        ----------
        run_id
            Flower run id of the request.
        run_name
            ``run-name`` from the request's ``config`` record (may be empty).
        phase
            ``phase`` from the request's ``config`` record (may be empty).
        kind
            Message type of the request.
        n_bytes
            Size in bytes of the reply's canonical encoding (of the reason text
            for error entries).
        sha256
            SHA-256 hex digest of the same bytes.
        verdict
            ``passed``, ``refused`` or ``error``.
        reason
            Why: the guard's verdict reason, the refusal, or the error.

        Raises
        ------
        EgressLogTampered
            When the log no longer matches its head; nothing is appended.
        """
        entry: dict[str, Any] = {
            "time": "",
            "run-id": run_id,
            "run-name": run_name,
            "phase": phase,
            "kind": kind,
            "bytes": n_bytes,
            "sha256": sha256,
            "verdict": verdict,
            "reason": reason,
        }
        with self._locked():
            lines = self._tail_checked()
            # stamped under the lock, so times follow the chain's order
            entry["time"] = datetime.now(UTC).isoformat(timespec="milliseconds")
            entry["seq"] = len(lines)
            entry["prev"] = line_hash(lines[-1]) if lines else GENESIS_HASH
            if self.secret is not None:
                entry["mac"] = self.secret.mac(
                    EGRESS_MAC_PURPOSE, entry_mac_data(entry)
                )
            line = json.dumps(entry).encode("utf-8")
            # O_APPEND with a single write keeps the line whole
            descriptor = os.open(
                self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
            )
            try:
                data = line + b"\n"
                written = 0
                while written < len(data):
                    written += os.write(descriptor, data[written:])
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            self._head.write(ChainHead(len(lines) + 1, line_hash(line)))

    def check_tail(self) -> None:
        """Check that the log still matches its head (what :meth:`append` checks).

        Cheap (one hash); a site calls it before it answers a request, so a
        tampered log stops the site before any work is done.

        Raises
        ------
        EgressLogTampered
            When the log was cut off, deleted, added to, or its head rewritten.
        """
        with self._locked():
            self._tail_checked()

    def verify(self) -> list[Problem]:
        """Return every problem with the log (format, chain, MACs, head).

        Empty if it verifies; see
        :func:`fedbone.federation.egress.log_audit.verify_egress_log`.
        """
        from fedbone.federation.egress.log_audit import verify_egress_log

        return verify_egress_log(self.path, self.secret)

    def entries(self) -> list[dict[str, Any]]:
        """All entries so far, oldest first (empty if the log does not exist)."""
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def _tail_checked(self) -> list[bytes]:
        """Return the log's lines if they end where the head says; else raise."""
        head, problems = self._head.read()
        try:
            lines = split_lines(self.path.read_bytes())
        except FileNotFoundError:
            lines = []
            if head is not None and head.count > 0:
                problems.append(
                    Problem(
                        "missing-log",
                        f"the egress log is missing but its head records "
                        f"{head.count} lines; restore it from a backup",
                        str(self.path),
                    )
                )
        if not problems:
            problems = self._head_problems(head, lines)
        EgressLogTampered.raise_if_any(self.path, problems)
        return lines

    def _head_problems(
        self, head: ChainHead | None, lines: list[bytes]
    ) -> list[Problem]:
        count, last = (head.count, head.sha256) if head else (0, GENESIS_HASH)
        hashes = [GENESIS_HASH, *(line_hash(line) for line in lines[-2:])]
        if len(lines) == count and hashes[-1] == last:
            return []
        if (
            len(lines) == count + 1
            and hashes[-2] == last
            and self._authentic(lines[-1])
        ):
            return []  # a crash between the append and the head write
        return [
            Problem(
                "head-mismatch",
                f"the head records {count} lines ending in {last[:12]}..., the log "
                f"has {len(lines)} ending in {hashes[-1][:12]}...: lines were cut "
                "off, added or the log replaced; restore it from a backup",
                str(self.head_path),
            )
        ]

    def _authentic(self, line: bytes) -> bool:
        if self.secret is None:
            return True
        try:
            entry = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return False
        return isinstance(entry, dict) and self.secret.verify_mac(
            EGRESS_MAC_PURPOSE, entry_mac_data(entry), str(entry.get("mac", ""))
        )

    def _locked(self) -> AbstractContextManager[None]:
        return exclusive_lock(self._lock_path)


def _canonical(content: Mapping[str, Any]) -> str:
    # never raises for a parsed line: NaN is written as NaN, keys are strings
    return json.dumps(content, sort_keys=True, separators=(",", ":"))
