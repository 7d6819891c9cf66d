"""The approvals list on disk: JSON lines, hash-chained, sealed, with a head.

The format and its tamper evidence (see :mod:`fedbone.privacy.approvals` for
what a line means): each line is one canonical JSON object with ``seq``,
``time``, ``action`` (``approve`` or ``revoke``), ``study``,
``approval-sha256``, the approved terms (``approve`` only), ``by``, ``prev``
(the previous line's ``sha256``; 64 zeros first), ``mac`` (HMAC-SHA256 under
the site secret of the line less ``sha256`` and ``mac``) and ``sha256`` (of
the line less ``sha256``). The head (:class:`~fedbone.privacy.ledger.HeadFile`,
next to the secret) records the line count and the last ``sha256``. One
authentic line beyond the head, a crash between an append and its head write,
is accepted.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedbone.errors import Problem
from fedbone.file_lock import exclusive_lock
from fedbone.privacy.errors import ApprovalsTampered
from fedbone.privacy.ledger import (
    GENESIS_HASH,
    ChainHead,
    HeadFile,
    canonical_json,
    head_path_for,
)
from fedbone.security.site_secret import SiteSecret

__all__ = ["APPROVALS_MAC_PURPOSE", "APPROVE", "REVOKE", "ApprovalLines"]

APPROVALS_MAC_PURPOSE = "study-approvals"
"""The site-secret MAC purpose of the approvals list's lines and head."""
APPROVE = "approve"
REVOKE = "revoke"

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_RECOVER = (
    "restore the approvals list and its head from the site's backup; or move "
    "both away deliberately and approve the studies again with `fedbone site "
    "approve` (until then the site answers no study)"
)


def _is_text(value: object) -> bool:
    return isinstance(value, str)


def _is_whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_hex64(value: object) -> bool:
    return isinstance(value, str) and bool(_HEX64.match(value))


def _is_kinds(value: object) -> bool:
    return isinstance(value, dict) and all(
        isinstance(kinds, list) and all(isinstance(k, str) for k in kinds)
        for kinds in value.values()
    )


def _is_dp(value: object) -> bool:
    return isinstance(value, dict) and all(
        isinstance(v, int | float)
        and not isinstance(v, bool)
        and math.isfinite(v)
        and v >= 0
        for v in value.values()
    )


_COMMON = {
    "seq": _is_whole,
    "time": _is_text,
    "action": lambda v: v in (APPROVE, REVOKE),
    "study": _is_text,
    "approval-sha256": _is_hex64,
    "by": _is_text,
    "prev": _is_hex64,
    "sha256": _is_hex64,
    "mac": _is_text,
}
_TERMS = {
    "phases": lambda v: isinstance(v, list) and all(isinstance(p, str) for p in v),
    "kinds": _is_kinds,
    "dp": _is_dp,
    "validation-bins": _is_whole,
    "statistics-bins": _is_whole,
    "study-file-sha256": _is_text,
}


class ApprovalLines:
    """The sealed lines of one approvals list, read verified and appended.

    Parameters
    ----------
    path
        The list (JSON lines); created by the first append.
    secret
        The site's secret, which seals every line and the head.
    """

    def __init__(self, path: Path, secret: SiteSecret) -> None:
        self.path = Path(path)
        self.secret = secret
        self.head_path = head_path_for(self.path, secret.path)
        self._head = HeadFile(self.head_path, APPROVALS_MAC_PURPOSE, secret)
        self._lock_path = self.path.with_name(self.path.name + ".lock")

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the list's lock: reads and appends inside see one chain."""
        with exclusive_lock(self._lock_path):
            yield

    def read(self) -> list[dict[str, Any]]:
        """Return the lines, oldest first, if chain, seals and head verify.

        Raises
        ------
        ApprovalsTampered
            Naming every problem and how to recover.
        """
        head, problems = self._head.read()
        ApprovalsTampered.raise_if_any(self.path, problems)
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            if head is not None and head.count > 0:
                raise ApprovalsTampered(
                    self.path,
                    [
                        Problem(
                            "approvals-missing",
                            f"the approvals list is missing but its head records "
                            f"{head.count} lines; {_RECOVER}",
                            str(self.path),
                        )
                    ],
                ) from None
            return []
        lines, problems = self._chain(data)
        count, last = (head.count, head.sha256) if head else (0, GENESIS_HASH)
        hashes = [GENESIS_HASH, *(line["sha256"] for line in lines)]
        crash_window = len(lines) == count + 1 and hashes[count] == last
        if (
            not problems
            and not crash_window
            and (len(lines), hashes[-1]) != (count, last)
        ):
            problems.append(
                Problem(
                    "head-mismatch",
                    f"the head records {count} lines ending in {last[:12]}..., the "
                    f"list has {len(lines)} ending in {hashes[-1][:12]}...: lines "
                    f"were cut off or added, or the list replaced; {_RECOVER}",
                    str(self.head_path),
                )
            )
        ApprovalsTampered.raise_if_any(self.path, problems)
        return lines

    def _chain(self, data: bytes) -> tuple[list[dict[str, Any]], list[Problem]]:
        lines: list[dict[str, Any]] = []
        problems: list[Problem] = []
        prev = GENESIS_HASH
        raw_lines = data.split(b"\n")
        if raw_lines and raw_lines[-1] == b"":
            raw_lines.pop()
        for number, raw in enumerate(raw_lines, start=1):
            where = f"line {number}"
            line = _parse(raw)
            if line is None:
                problems.append(
                    Problem(
                        "unreadable-line",
                        f"not an approvals entry (fields missing, unknown or of "
                        f"the wrong type); {_RECOVER}",
                        where,
                    )
                )
                prev = ""
                continue
            problems += self._line_problems(line, number, prev, where)
            prev = line["sha256"]
            lines.append(line)
        return lines, problems

    def _line_problems(
        self, line: dict[str, Any], number: int, prev: str, where: str
    ) -> list[Problem]:
        found = []
        if _hash(line) != line["sha256"]:
            found.append(("entry-hash-mismatch", "the line does not match its sha256"))
        if prev and line["prev"] != prev:
            found.append(
                (
                    "chain-broken",
                    f"prev is not line {number - 1}'s sha256: a line "
                    "before it was removed, inserted, moved or rewritten",
                )
            )
        if line["seq"] != number - 1:
            found.append(
                ("sequence-gap", f"seq is {line['seq']}, expected {number - 1}")
            )
        if not self.secret.verify_mac(
            APPROVALS_MAC_PURPOSE, _mac_data(line), line["mac"]
        ):
            found.append(
                (
                    "entry-mac-invalid",
                    "the line's MAC was not made with this site's "
                    "secret: written without the key, or from another site's list",
                )
            )
        return [Problem(code, f"{text}; {_RECOVER}", where) for code, text in found]

    def append(
        self, lines: list[dict[str, Any]], action: str, fields: Mapping[str, Any]
    ) -> None:
        """Append one line after ``lines`` (read under :meth:`locked`), durably.

        Parameters
        ----------
        lines
            The verified lines, as :meth:`read` returned them under the lock.
        action
            ``approve`` or ``revoke``.
        fields
            ``study``, ``approval-sha256``, ``by`` and, to approve, the terms.
        """
        line: dict[str, Any] = {
            "seq": len(lines),
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "action": action,
            **fields,
            "prev": lines[-1]["sha256"] if lines else GENESIS_HASH,
        }
        line["mac"] = self.secret.mac(APPROVALS_MAC_PURPOSE, _mac_data(line))
        line["sha256"] = _hash(line)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as stream:
            stream.write(canonical_json(line) + "\n")
            stream.flush()
            os.fsync(stream.fileno())
        self._head.write(ChainHead(len(lines) + 1, line["sha256"]))


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        line = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(line, dict):
        return None
    schema = dict(_COMMON)
    if line.get("action") == APPROVE:
        schema |= _TERMS
    if set(line) != set(schema) or not all(
        check(line[k]) for k, check in schema.items()
    ):
        return None
    if line["action"] == APPROVE and set(line["phases"]) != set(line["kinds"]):
        return None
    return line


def _hash(line: Mapping[str, Any]) -> str:
    content = {k: v for k, v in line.items() if k != "sha256"}
    return hashlib.sha256(canonical_json(content).encode("utf-8")).hexdigest()


def _mac_data(line: Mapping[str, Any]) -> bytes:
    content = {k: v for k, v in line.items() if k not in ("sha256", "mac")}
    return b"approval|" + canonical_json(content).encode("utf-8")
