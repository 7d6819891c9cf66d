"""Read, summarise and verify a site's egress log: what left this hospital.

The log (:class:`fedbone.federation.egress.guard.EgressLog`) is plain JSON lines, one
per reply the site sent or refused to send. It is not hash-chained, so
verification checks that it is well formed and plausible, not that it is
unedited: every line parses, has every field with the right type, a known
verdict, a 64-hex-digit sha256, and times that never go backwards. Problems are
listed in line order, so the first one names the first bad line.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from fedbone.errors import Problem
from fedbone.federation.egress.guard import (
    VERDICT_ERROR,
    VERDICT_PASSED,
    VERDICT_REFUSED,
)

__all__ = [
    "EGRESS_FIELDS",
    "EGRESS_VERDICTS",
    "EgressEntry",
    "EgressSummary",
    "read_egress_log",
    "summarise_egress_log",
    "verify_egress_log",
]

EGRESS_FIELDS: dict[str, type] = {
    "time": str,
    "run-id": int,
    "run-name": str,
    "phase": str,
    "kind": str,
    "bytes": int,
    "sha256": str,
    "verdict": str,
    "reason": str,
}
"""Every field an egress log line must hold, with its JSON type."""

EGRESS_VERDICTS = frozenset({VERDICT_PASSED, VERDICT_REFUSED, VERDICT_ERROR})

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class EgressEntry:
    """One well-formed line of an egress log.

    Parameters
    ----------
    line
        1-based line number in the file.
    time
        When the reply was screened (timezone-aware).
    run_id, run_name, phase, kind
        The Flower run and the study message it answered.
    n_bytes, sha256
        Size and digest of what was sent (or refused, or the error text).
    verdict, reason
        The egress guard's decision and why.
    """

    line: int
    time: datetime
    run_id: int
    run_name: str
    phase: str
    kind: str
    n_bytes: int
    sha256: str
    verdict: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        """Return the entry as the log writes it, plus its line number."""
        return {
            "line": self.line,
            "time": self.time.isoformat(timespec="milliseconds"),
            "run-id": self.run_id,
            "run-name": self.run_name,
            "phase": self.phase,
            "kind": self.kind,
            "bytes": self.n_bytes,
            "sha256": self.sha256,
            "verdict": self.verdict,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class EgressSummary:
    """Counts over an egress log's well-formed entries.

    ``bytes_total`` counts every entry; ``bytes_sent`` only the ``passed``
    ones, the content that actually left the site (a refused reply was not
    sent, and an error entry's bytes are the site's own error text).
    """

    entries: int = 0
    bytes_total: int = 0
    bytes_sent: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    by_verdict: dict[str, int] = field(default_factory=dict)
    by_phase: dict[str, int] = field(default_factory=dict)
    by_run: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, entries: Iterable[EgressEntry]) -> EgressSummary:
        """Summarise ``entries``."""
        listed = list(entries)
        return cls(
            entries=len(listed),
            bytes_total=sum(e.n_bytes for e in listed),
            bytes_sent=sum(e.n_bytes for e in listed if e.verdict == VERDICT_PASSED),
            by_kind=dict(Counter(e.kind for e in listed)),
            by_verdict=dict(Counter(e.verdict for e in listed)),
            by_phase=dict(Counter(e.phase for e in listed)),
            by_run=dict(Counter(e.run_name for e in listed)),
        )

    def to_json(self) -> dict[str, Any]:
        """Return the summary with kebab-case keys, for ``--json`` output."""
        return {
            "entries": self.entries,
            "bytes-total": self.bytes_total,
            "bytes-sent": self.bytes_sent,
            "by-kind": self.by_kind,
            "by-verdict": self.by_verdict,
            "by-phase": self.by_phase,
            "by-run": self.by_run,
        }


def _field_problems(raw: dict[str, Any], where: str) -> list[Problem]:
    problems = []
    for name, kind in EGRESS_FIELDS.items():
        value = raw.get(name)
        # bool is an int subclass; a true/false byte count is still wrong
        if value is None or isinstance(value, bool) or not isinstance(value, kind):
            problems.append(
                Problem(
                    "missing-field" if value is None else "wrong-type",
                    f"field {name!r} must be a JSON {kind.__name__}, got {value!r}; "
                    "lines are written by EgressLog.append only, so this line was "
                    "edited or written by something else",
                    where,
                )
            )
    return problems


def _value_problems(raw: dict[str, Any], where: str) -> list[Problem]:
    problems = []
    if raw["verdict"] not in EGRESS_VERDICTS:
        problems.append(
            Problem(
                "unknown-verdict",
                f"verdict {raw['verdict']!r} is not one of {sorted(EGRESS_VERDICTS)}",
                where,
            )
        )
    if not _SHA256.fullmatch(raw["sha256"]):
        problems.append(
            Problem(
                "bad-sha256",
                f"sha256 {raw['sha256']!r} is not 64 lowercase hex digits",
                where,
            )
        )
    if raw["bytes"] < 0:
        problems.append(
            Problem("negative-bytes", f"bytes is {raw['bytes']}, expected >= 0", where)
        )
    return problems


def _parse_time(text: str, where: str) -> datetime | Problem:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        return Problem(
            "bad-time",
            f"time {text!r} is not an ISO 8601 UTC timestamp "
            "(e.g. 2025-01-31T12:00:00.000+00:00)",
            where,
        )
    return moment


def _parse_line(number: int, text: str) -> EgressEntry | list[Problem]:
    where = f"line {number}"
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        return [Problem("not-json", f"not a JSON object ({exc.msg})", where)]
    if not isinstance(raw, dict):
        return [Problem("not-json", "not a JSON object", where)]
    problems = _field_problems(raw, where)
    if problems:
        return problems
    problems = _value_problems(raw, where)
    moment = _parse_time(raw["time"], where)
    if isinstance(moment, Problem):
        problems.append(moment)
    if problems or isinstance(moment, Problem):
        return problems
    return EgressEntry(
        number,
        moment,
        raw["run-id"],
        raw["run-name"],
        raw["phase"],
        raw["kind"],
        raw["bytes"],
        raw["sha256"],
        raw["verdict"],
        raw["reason"],
    )


def read_egress_log(path: str | Path) -> tuple[list[EgressEntry], list[Problem]]:
    """Parse an egress log into its well-formed entries and its problems.

    Parameters
    ----------
    path
        The site's egress log (``egress_log`` in the site config).

    Returns
    -------
    tuple
        Well-formed entries in file order, and every problem found, in line
        order: malformed lines, times that go backwards, or a missing file.
    """
    path = Path(path)
    if not path.is_file():
        return [], [
            Problem(
                "missing-log",
                f"no egress log at {path}; a site that has answered any request "
                "has one: check egress_log in the site config",
            )
        ]
    entries: list[EgressEntry] = []
    problems: list[Problem] = []
    latest: EgressEntry | None = None
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        parsed = _parse_line(number, text)
        if isinstance(parsed, list):
            problems += parsed
            continue
        if latest is not None and parsed.time < latest.time:
            problems.append(
                Problem(
                    "time-goes-back",
                    f"time {parsed.time.isoformat()} is before line {latest.line}'s "
                    f"{latest.time.isoformat()}; the log is append-only, so lines "
                    "were reordered or inserted",
                    f"line {number}",
                )
            )
        latest = parsed if latest is None or parsed.time >= latest.time else latest
        entries.append(parsed)
    return entries, problems


def verify_egress_log(path: str | Path) -> list[Problem]:
    """Return every problem with an egress log; empty if it verifies.

    The first problem names the first bad line. See the module docstring for
    what is checked (and that an edit keeping lines well formed goes unseen).
    """
    return read_egress_log(path)[1]


def summarise_egress_log(path: str | Path, run: str | None = None) -> EgressSummary:
    """Count an egress log's well-formed entries per kind, verdict, phase, run.

    Parameters
    ----------
    path
        The site's egress log.
    run
        Only entries of this run (its name, or its id as text).
    """
    entries, _ = read_egress_log(path)
    if run is not None:
        entries = [e for e in entries if run in (e.run_name, str(e.run_id))]
    return EgressSummary.of(entries)
