"""The site's egress log: one line per reply a site sends (passed, refused, error)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["EgressLog"]


class EgressLog:
    """Append-only JSON-lines record of every reply a site sends.

    Each line: ``time`` (UTC ISO 8601), ``run-id``, ``run-name``, ``phase``,
    ``kind``, ``bytes``, ``sha256``, ``verdict`` (passed|refused|error),
    ``reason``. Lines are written with one ``write`` and fsync'd, so the log
    survives a crash right after a message went out.

    Parameters
    ----------
    path
        The log file; its folder is created if needed.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

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
        """Append one entry and flush it to disk.

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
        """
        entry = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "run-id": run_id,
            "run-name": run_name,
            "phase": phase,
            "kind": kind,
            "bytes": n_bytes,
            "sha256": sha256,
            "verdict": verdict,
            "reason": reason,
        }
        line = (json.dumps(entry) + "\n").encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # O_APPEND with a single write keeps lines whole when processes share a log
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = 0
            while written < len(line):
                written += os.write(descriptor, line[written:])
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def entries(self) -> list[dict[str, Any]]:
        """All entries so far, oldest first (empty if the log does not exist)."""
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]
