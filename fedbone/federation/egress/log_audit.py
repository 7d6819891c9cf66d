"""Read, summarise and verify a site's egress log: what left this hospital.

The log (:class:`fedbone.federation.egress.log.EgressLog`) is JSON lines, one
per reply the site sent or refused to send, hash-chained and, at a site, keyed
with the site's secret. Verification checks that

- every line parses, has every field with the right type, a known verdict, a
  64-hex-digit sha256, and times that never go backwards;
- every line's ``seq`` is its position and its ``prev`` the sha256 of the line
  before (an edited, deleted, inserted or moved line breaks the chain at the
  next line);
- with the secret, every line's ``mac`` is the secret's HMAC of the line (no
  line was written, rewritten or re-chained without the key);
- the head (line count and last hash, MAC'd when keyed) matches the log, so a
  cut-off tail, lines added after it or a deleted log are seen too. One
  authentic line beyond the head is a crash between an append and its head
  write, and is accepted.

Without the secret the chain is unkeyed: someone who rewrites the whole chain
and its head goes unseen, and :class:`EgressAudit` says ``keyed=False``.
Problems are listed in line order, so the first one names the first bad line;
head problems come last.
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
from fedbone.federation.egress.log import (
    EGRESS_MAC_PURPOSE,
    entry_mac_data,
    line_hash,
    split_lines,
)
from fedbone.privacy.ledger import GENESIS_HASH, ChainHead, HeadFile, head_path_for
from fedbone.security.site_secret import SiteSecret

__all__ = [
    "EGRESS_FIELDS",
    "EGRESS_VERDICTS",
    "EgressAudit",
    "EgressEntry",
    "EgressSummary",
    "audit_egress_log",
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
    "seq": int,
    "prev": str,
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


def _chain_problems(
    number: int, raw: Any, prev: str, secret: SiteSecret | None
) -> list[Problem]:
    """Check one parsed line's ``seq``, ``prev`` and (keyed) ``mac``."""
    where = f"line {number}"
    if not isinstance(raw, dict):
        return []  # reported as not-json
    problems = []
    if isinstance(raw.get("prev"), str) and raw["prev"] != prev:
        problems.append(
            Problem(
                "chain-broken",
                f"prev does not match line {number - 1}'s sha256: a line before "
                "it was edited, deleted, inserted or moved"
                if number > 1
                else "the first line's prev is not 64 zeros: lines before it "
                "were deleted",
                where,
            )
        )
    seq = raw.get("seq")
    if isinstance(seq, int) and not isinstance(seq, bool) and seq != number - 1:
        problems.append(
            Problem(
                "sequence-gap",
                f"seq is {seq}, expected {number - 1}: lines were deleted, "
                "inserted or moved",
                where,
            )
        )
    if secret is not None and not secret.verify_mac(
        EGRESS_MAC_PURPOSE, entry_mac_data(raw), str(raw.get("mac", ""))
    ):
        problems.append(
            Problem(
                "entry-mac-invalid",
                "the line's MAC is missing or was not made with this site's "
                "secret: it was written or rewritten without the key",
                where,
            )
        )
    return problems


@dataclass(frozen=True)
class EgressAudit:
    """What verifying an egress log found.

    Parameters
    ----------
    path
        The log.
    entries
        Well-formed entries in file order.
    problems
        Every problem, in line order, head problems last; empty if it verifies.
    keyed
        Whether the MACs were checked with the site secret; ``False`` means
        the chain was checked without a key (a full rewrite would go unseen).
    """

    path: Path
    entries: list[EgressEntry]
    problems: list[Problem]
    keyed: bool

    @property
    def verified(self) -> bool:
        """Whether no problem was found."""
        return not self.problems


def _head_problems(
    head_file: HeadFile, lines: list[bytes], last_line_clean: bool
) -> list[Problem]:
    head, problems = head_file.read()
    if problems:
        return problems
    count, last = (head.count, head.sha256) if head else (0, GENESIS_HASH)
    hashes = [GENESIS_HASH, *(line_hash(line) for line in lines)]
    if len(lines) == count and hashes[-1] == last:
        return []
    if len(lines) == count + 1 and hashes[count] == last and last_line_clean:
        return []  # a crash between the last append and its head write
    if head is None:
        return [
            Problem(
                "head-missing",
                f"the log has {len(lines)} lines but no head file; it was deleted "
                "or the log was written by something else",
                str(head_file.path),
            )
        ]
    return [
        Problem(
            "head-mismatch",
            f"the head records {count} lines ending in {last[:12]}..., the log "
            f"has {len(lines)} ending in {hashes[-1][:12]}...: lines were cut off "
            "or added, or the log was replaced",
            str(head_file.path),
        )
    ]


def audit_egress_log(path: str | Path, secret: SiteSecret | None = None) -> EgressAudit:
    """Parse and verify an egress log: format, times, chain, MACs and head.

    Parameters
    ----------
    path
        The site's egress log (``egress_log`` in the site config).
    secret
        The site's secret: the MACs of lines and head are checked with it and
        the head is looked for next to it. Without it the chain is checked
        unkeyed (``keyed=False``).

    Returns
    -------
    EgressAudit
        Well-formed entries and every problem found (see the module docstring).
    """
    path = Path(path)
    head_file = HeadFile(
        head_path_for(path, secret.path if secret is not None else None),
        EGRESS_MAC_PURPOSE,
        secret,
    )
    keyed = secret is not None
    if not path.is_file():
        head, _ = head_file.read()
        message = (
            f"no egress log at {path}, but its head {head_file.path} records "
            f"{head.count} lines: it was deleted, restore it from a backup"
            if isinstance(head, ChainHead) and head.count > 0
            else f"no egress log at {path}; a site that has answered any request "
            "has one: check egress_log in the site config"
        )
        return EgressAudit(
            path,
            [],
            [Problem("missing-log", message)],
            keyed,
        )
    entries: list[EgressEntry] = []
    problems: list[Problem] = []
    latest: EgressEntry | None = None
    lines = split_lines(path.read_bytes())
    last_line_clean = True
    for number, raw_line in enumerate(lines, start=1):
        found = len(problems)
        prev = line_hash(lines[number - 2]) if number > 1 else GENESIS_HASH
        text = raw_line.decode("utf-8", errors="replace")
        if not text.strip():
            problems.append(
                Problem("not-json", "a blank line; the log has none", f"line {number}")
            )
            last_line_clean = False
            continue
        parsed = _parse_line(number, text)
        try:
            raw: Any = json.loads(text)
        except json.JSONDecodeError:
            raw = None
        if isinstance(parsed, list):
            problems += parsed
        elif latest is not None and parsed.time < latest.time:
            problems.append(
                Problem(
                    "time-goes-back",
                    f"time {parsed.time.isoformat()} is before line {latest.line}'s "
                    f"{latest.time.isoformat()}; the log is append-only, so lines "
                    "were reordered or inserted",
                    f"line {number}",
                )
            )
        problems += _chain_problems(number, raw, prev, secret)
        last_line_clean = len(problems) == found
        if isinstance(parsed, EgressEntry):
            if latest is None or parsed.time >= latest.time:
                latest = parsed
            entries.append(parsed)
    problems += _head_problems(head_file, lines, last_line_clean)
    return EgressAudit(path, entries, problems, keyed)


def read_egress_log(
    path: str | Path, secret: SiteSecret | None = None
) -> tuple[list[EgressEntry], list[Problem]]:
    """Parse an egress log into its well-formed entries and its problems.

    Parameters
    ----------
    path
        The site's egress log (``egress_log`` in the site config).
    secret
        The site's secret, to check MACs; see :func:`audit_egress_log`.

    Returns
    -------
    tuple
        Well-formed entries in file order, and every problem found (see
        :func:`audit_egress_log`).
    """
    audit = audit_egress_log(path, secret)
    return audit.entries, audit.problems


def verify_egress_log(
    path: str | Path, secret: SiteSecret | None = None
) -> list[Problem]:
    """Return every problem with an egress log; empty if it verifies.

    The first problem names the first bad line. See the module docstring for
    what is checked; without ``secret`` a rewrite of the whole chain and head
    goes unseen.
    """
    return audit_egress_log(path, secret).problems


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
