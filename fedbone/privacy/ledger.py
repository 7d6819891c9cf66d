"""The per-site privacy ledger: every DP release, hash-chained, append-only.

What a privacy officer needs to know
------------------------------------
Each line of the ledger (JSON lines) is one differentially private release the
site made: a classifier round, a GAN round or a noisy statistic, with its run,
phase, mechanism, ε, δ and time. Lines are appended, never rewritten.

**Streams and composition.** Every release belongs to one *stream*: the
sequence of releases one privacy accountant tracks (for example
``run-7/train/classifier``: all DP-SGD rounds of one classifier training).

- *Within a stream* the accountant composes (RDP/PRV accounting, much tighter
  than adding up per-round ε). Each release records ``stream_epsilon``, the
  stream's cumulative ε after this release as its accountant reports it at the
  stream's δ, and ``epsilon``, the increment ``stream_epsilon`` minus the
  stream's previous ``stream_epsilon``. The stream costs its latest
  ``stream_epsilon``.
- *Across streams* the ledger uses basic sequential composition:
  total ε = Σ over streams of the stream's final ε, and
  total δ = Σ over streams of the stream's δ. A stream's δ is counted once: it
  is the δ its accountant was evaluated at, so every release of one stream must
  carry the same δ. Pure-ε releases (Laplace noise on a statistic) have δ = 0.

A release is refused (:class:`~fedbone.privacy.errors.BudgetExceeded`,
nothing written) when it would take the total ε or total δ over the site's
budget.

**Tamper evidence.** Each line stores ``prev``, the sha256 of the line before
(64 zeros for the first), and ``sha256``, the hash of its own canonical JSON
(every field but ``sha256``). A head file holds the line count and the last
hash and is replaced atomically after every append, so a cut-off tail is
detected too. An edited, reordered, deleted or missing line, or a ledger
deleted while its head remains, raises
:class:`~fedbone.privacy.errors.LedgerTampered` naming the line; such a ledger
refuses every release until it is restored from a backup. It is never reset
silently. Every value is checked again on load (ε, δ and the stream's ε finite
and non-negative, each stream's ε the sum of its increments, one δ per
stream), so a line that would lower the spending is refused too.

**Keyed with the site secret.** At a site the ledger is opened with the site's
secret (:mod:`fedbone.security.site_secret`, see
:func:`~fedbone.privacy.site_spending.open_site_ledger`). Then every line also
carries ``mac``, an HMAC-SHA256 of its content under the secret (hashed into
its ``sha256``), and the head carries an HMAC of its count and last hash. The
head then lives next to the secret (``<secret>.<ledger name>.head``), not next
to the ledger. So someone who can write the ledger's folder but cannot read
the secret can neither rewrite nor re-chain lines, nor append one, nor swap
in another site's ledger, nor truncate the ledger and rewrite its head, nor
delete ledger and head to start again at zero (the head next to the secret
still records the releases), nor restore an older copy of ledger and head
(a rollback). Keep the secret's folder writable only by the site's service
account: whoever can delete or restore the head there can still roll the
ledger back, which only the head hash kept elsewhere reveals
(``summary()["ledger-sha256"]``, e.g. in the study report). Without a secret
(tests, tools) the head is ``<ledger>.head`` and the chain detects accidents
and naive edits only.

A crash between appending a line and replacing the head leaves exactly one
chained line beyond the head; that line (whose MAC must verify, when keyed) is
kept and counted as spent (the safe direction) and the head is rolled forward
with a fresh MAC.

**Concurrency.** A lock file ``<ledger>.lock`` (``flock``) is held across
reading the ledger, checking the budget, appending and writing the head, so
concurrent releases (threads or processes) are composed one after the other:
:meth:`PrivacyLedger.record_composed` computes the stream's ε from the entries
it reads under that lock.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from fedbone.errors import Problem
from fedbone.file_lock import exclusive_lock
from fedbone.privacy.budget import PrivacyBudget
from fedbone.privacy.errors import BudgetExceeded, LedgerTampered, PrivacyError
from fedbone.security.site_secret import SiteSecret

__all__ = [
    "GENESIS_HASH",
    "LEDGER_MAC_PURPOSE",
    "ChainHead",
    "HeadFile",
    "LedgerEntry",
    "PrivacyLedger",
    "Spending",
    "StreamSpending",
    "canonical_json",
    "head_path_for",
    "replace_atomically",
]

logger = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
"""The ``prev`` of the first line."""

LEDGER_MAC_PURPOSE = "privacy-ledger"
"""The site-secret MAC purpose of the ledger's lines and head."""

_KEBAB = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_MAX_DETAILS = 32
"""``details`` is a few accountant parameters, not a payload."""
_STREAM_TOLERANCE = 1e-9
"""Relative slack when re-adding a stream's increments (float rounding)."""


def head_path_for(path: Path, secret_path: Path | None) -> Path:
    """Return where the head of a hash-chained file lives.

    Parameters
    ----------
    path
        The chained file (the privacy ledger, the egress log).
    secret_path
        The site secret's file when the chain is keyed, else ``None``.

    Returns
    -------
    Path
        ``<secret>.<file name>.head`` next to the secret when keyed (so
        deleting the file's folder does not delete its head), else
        ``<file>.head`` next to the file.
    """
    path = Path(path)
    if secret_path is None:
        return path.with_name(path.name + ".head")
    secret_path = Path(secret_path)
    return secret_path.with_name(f"{secret_path.name}.{path.name}.head")


def replace_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, durably.

    The file is either the old or the new one after a crash: the text is
    fsync'd, renamed over ``path`` and the folder fsync'd.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(temporary, "w", encoding="utf-8") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@dataclass(frozen=True)
class ChainHead:
    """What a head file records: how many lines, and the last line's hash."""

    count: int
    sha256: str


class HeadFile:
    """The head of a hash-chained file, with an HMAC when keyed.

    Parameters
    ----------
    path
        The head file (see :func:`head_path_for`).
    purpose
        The site-secret MAC purpose (one per chained file kind).
    secret
        The site secret; ``None`` writes and accepts heads without a MAC.
    """

    def __init__(self, path: Path, purpose: str, secret: SiteSecret | None) -> None:
        self.path = Path(path)
        self.purpose = purpose
        self.secret = secret

    def read(self) -> tuple[ChainHead | None, list[Problem]]:
        """Return the head (``None`` if there is none) and its problems.

        Problems are ``head-unreadable`` (not a head: garbage, wrong types,
        NaN) and ``head-mac-invalid`` (keyed, and the MAC is missing or not
        the secret's).
        """
        where = str(self.path)
        try:
            raw = json.loads(self.path.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            return None, []
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            return None, [
                Problem(
                    "head-unreadable",
                    f"the head file cannot be read ({error}); restore it from a backup",
                    where,
                )
            ]
        count = raw.get("count") if isinstance(raw, dict) else None
        sha256 = raw.get("sha256") if isinstance(raw, dict) else None
        if (
            not isinstance(count, int)
            or isinstance(count, bool)
            or count < 0
            or not isinstance(sha256, str)
            or not _HEX64.match(sha256)
        ):
            return None, [
                Problem(
                    "head-unreadable",
                    "the head file must hold a count >= 0 and a 64-hex sha256; "
                    "restore it from a backup",
                    where,
                )
            ]
        head = ChainHead(count, sha256)
        if self.secret is not None and not self.secret.verify_mac(
            self.purpose, self._mac_data(head), str(raw.get("mac", ""))
        ):
            return None, [
                Problem(
                    "head-mac-invalid",
                    "the head's MAC is missing or was not made with this site's "
                    "secret: the head (and so the file's length) was rewritten; "
                    "restore both from a backup",
                    where,
                )
            ]
        return head, []

    def write(self, head: ChainHead) -> None:
        """Replace the head atomically (with its MAC when keyed)."""
        content: dict[str, Any] = {"count": head.count, "sha256": head.sha256}
        if self.secret is not None:
            content["mac"] = self.secret.mac(self.purpose, self._mac_data(head))
        replace_atomically(self.path, canonical_json(content))

    @staticmethod
    def _mac_data(head: ChainHead) -> bytes:
        return f"head|{head.count}|{head.sha256}".encode("ascii")


@dataclass(frozen=True)
class LedgerEntry:
    """One DP release as recorded on one ledger line.

    Parameters
    ----------
    seq
        0-based position in the ledger.
    time
        UTC time of recording, ISO 8601.
    run, phase
        The study run and phase that made the release.
    kind
        ``classifier-round``, ``gan-round``, ``statistic`` or another kebab string.
    mechanism
        ``dp-sgd-rdp``, ``laplace``, ``gaussian``...
    stream
        The accountant stream the release belongs to.
    epsilon
        This release's ε increment within its stream.
    stream_epsilon
        The stream's cumulative ε after this release.
    delta
        The stream's δ.
    details
        Small JSON mapping of mechanism parameters (noise multiplier, ...).
    prev
        sha256 of the previous line's entry.
    sha256
        sha256 of this entry's canonical JSON without ``sha256``.
    mac
        HMAC-SHA256 under the site secret of the entry without ``sha256`` and
        ``mac``; empty (and absent from the line) in an unkeyed ledger.
    """

    seq: int
    time: str
    run: str
    phase: str
    kind: str
    mechanism: str
    stream: str
    epsilon: float
    stream_epsilon: float
    delta: float
    details: Mapping[str, Any]
    prev: str
    sha256: str
    mac: str = ""


_REQUIRED_FIELDS: dict[str, Callable[[object], bool]] = {
    "seq": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
    "time": lambda v: isinstance(v, str),
    "run": lambda v: isinstance(v, str),
    "phase": lambda v: isinstance(v, str),
    "kind": lambda v: isinstance(v, str),
    "mechanism": lambda v: isinstance(v, str),
    "stream": lambda v: isinstance(v, str),
    "epsilon": lambda v: _is_real(v),
    "stream_epsilon": lambda v: _is_real(v),
    "delta": lambda v: _is_real(v),
    "details": lambda v: isinstance(v, dict),
    "prev": lambda v: isinstance(v, str) and bool(_HEX64.match(v)),
    "sha256": lambda v: isinstance(v, str) and bool(_HEX64.match(v)),
}


@dataclass(frozen=True)
class StreamSpending:
    """What one accountant stream has spent: its latest ε at its δ."""

    epsilon: float
    delta: float
    n_entries: int


@dataclass(frozen=True)
class Spending:
    """Total spending of a site, composed across streams.

    Parameters
    ----------
    epsilon
        Σ of the streams' final ε.
    delta
        Σ of the streams' δ.
    per_stream
        Spending of each stream, by stream id.
    n_entries
        Number of releases recorded.
    """

    epsilon: float
    delta: float
    per_stream: Mapping[str, StreamSpending]
    n_entries: int


class PrivacyLedger:
    """A site's append-only, hash-chained record of its DP releases.

    Parameters
    ----------
    path
        The ledger file (JSON lines); created on the first release. The lock
        file is ``<path>.lock``; the head file is given by
        :func:`head_path_for`.
    budget
        The site's total budget.
    secret
        The site secret that keys the lines and the head (see the module
        docstring); ``None`` for an unkeyed ledger (tests, tools). A site
        always opens its ledger with its secret
        (:func:`~fedbone.privacy.site_spending.open_site_ledger`).

    Raises
    ------
    LedgerTampered
        When the existing ledger does not verify.
    """

    def __init__(
        self, path: Path, budget: PrivacyBudget, secret: SiteSecret | None = None
    ) -> None:
        self.path = Path(path)
        self.budget = budget
        self.secret = secret
        self.head_path = head_path_for(
            self.path, secret.path if secret is not None else None
        )
        self._head = HeadFile(self.head_path, LEDGER_MAC_PURPOSE, secret)
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        with self._locked():
            self._load(roll_forward=True)

    @property
    def keyed(self) -> bool:
        """Whether lines and head carry a MAC under the site secret."""
        return self.secret is not None

    def verify(self) -> list[LedgerEntry]:
        """Re-hash every line and check values, MACs, the chain and the head.

        Returns
        -------
        list of LedgerEntry
            The verified entries.

        Raises
        ------
        LedgerTampered
            Naming every line and what broke.
        """
        with self._locked():
            return self._load(roll_forward=False)

    def entries(self) -> list[LedgerEntry]:
        """Return every recorded release, verified, oldest first."""
        return self.verify()

    def spent(self) -> Spending:
        """Return the total spending composed across streams."""
        return _compose(self.verify())

    def remaining(self) -> tuple[float, float]:
        """Return the (ε, δ) still available under the budget, never negative."""
        spending = self.spent()
        return (
            max(0.0, self.budget.epsilon - spending.epsilon),
            max(0.0, self.budget.delta - spending.delta),
        )

    def summary(self) -> dict[str, float | int | str]:
        """Return flat scalars for results and the study report."""
        entries = self.verify()
        spending = _compose(entries)
        return {
            "epsilon-spent": spending.epsilon,
            "delta-spent": spending.delta,
            "epsilon-budget": self.budget.epsilon,
            "delta-budget": self.budget.delta,
            "n-releases": spending.n_entries,
            "ledger-sha256": entries[-1].sha256 if entries else GENESIS_HASH,
        }

    def check(self, stream: str, stream_epsilon: float, delta: float) -> None:
        """Check that a release fits the budget; write nothing.

        Parameters
        ----------
        stream
            The accountant stream of the release.
        stream_epsilon
            The stream's cumulative ε after the release.
        delta
            The δ the stream's accountant was evaluated at (0 for pure ε).

        Raises
        ------
        PrivacyError
            For invalid values or a δ that differs from the stream's earlier δ.
        BudgetExceeded
            ``budget-exceeded`` when total ε or δ would exceed the budget.
        LedgerTampered
            When the ledger does not verify.
        """
        self._check(self.verify(), stream, stream_epsilon, delta)

    def record(
        self,
        *,
        run: str,
        phase: str,
        kind: str,
        mechanism: str,
        stream: str,
        stream_epsilon: float,
        delta: float,
        details: Mapping[str, Any] | None = None,
    ) -> LedgerEntry:
        """Check a release against the budget, then append it durably.

        Parameters
        ----------
        run, phase
            The study run and phase making the release.
        kind
            Kebab-case release kind (``classifier-round``, ``gan-round``,
            ``statistic``...).
        mechanism
            Kebab-case mechanism (``dp-sgd-rdp``, ``laplace``, ``gaussian``...).
        stream
            The accountant stream of the release.
        stream_epsilon
            The stream's cumulative ε after this release, from its accountant.
            When it depends on the stream's history, use
            :meth:`record_composed`, which computes it under the ledger's lock.
        delta
            The stream's δ (0 for pure-ε mechanisms).
        details
            Small JSON mapping of mechanism parameters.

        Returns
        -------
        LedgerEntry
            The appended entry.

        Raises
        ------
        PrivacyError, BudgetExceeded, LedgerTampered
            As :meth:`check`, or for invalid fields; nothing is written then.
        """
        details = dict(details or {})
        problems = _field_problems(run, phase, kind, mechanism, details)
        problems += _release_problems(stream, stream_epsilon, delta)
        PrivacyError.raise_if_any("privacy release", problems)
        return self._record(
            (run, phase, kind, mechanism, stream),
            lambda _entries: stream_epsilon,
            delta,
            details,
        )

    def record_composed(
        self,
        *,
        run: str,
        phase: str,
        kind: str,
        mechanism: str,
        stream: str,
        stream_epsilon_of: Callable[[list[LedgerEntry]], float],
        delta: float,
        details: Mapping[str, Any] | None = None,
    ) -> LedgerEntry:
        """Compose a release after the ledger's entries, check it, append it.

        The ledger's lock is held from reading the entries through computing
        the stream's ε, the budget check, the append and the head write, so
        concurrent releases each compose after the one before: none is
        charged the same stream ε twice (an increment of 0).

        Parameters
        ----------
        run, phase, kind, mechanism, stream, delta, details
            As for :meth:`record`.
        stream_epsilon_of
            Given the verified entries (oldest first), returns the stream's
            cumulative ε after this release. Called under the lock: it must
            not use this ledger.

        Returns
        -------
        LedgerEntry
            The appended entry.

        Raises
        ------
        PrivacyError, BudgetExceeded, LedgerTampered
            As :meth:`record`; nothing is written then.
        """
        details = dict(details or {})
        problems = _field_problems(run, phase, kind, mechanism, details)
        problems += _release_problems(stream, 0.0, delta)
        PrivacyError.raise_if_any("privacy release", problems)
        return self._record(
            (run, phase, kind, mechanism, stream), stream_epsilon_of, delta, details
        )

    def _record(
        self,
        names: tuple[str, str, str, str, str],
        stream_epsilon_of: Callable[[list[LedgerEntry]], float],
        delta: float,
        details: dict[str, Any],
    ) -> LedgerEntry:
        run, phase, kind, mechanism, stream = names
        with self._locked():
            entries = self._load(roll_forward=False)
            stream_epsilon = stream_epsilon_of(list(entries))
            previous = self._check(entries, stream, stream_epsilon, delta)
            content: dict[str, Any] = {
                "seq": len(entries),
                "time": datetime.now(UTC).isoformat(),
                "run": run,
                "phase": phase,
                "kind": kind,
                "mechanism": mechanism,
                "stream": stream,
                "epsilon": max(0.0, float(stream_epsilon) - previous),
                "stream_epsilon": float(stream_epsilon),
                "delta": float(delta),
                "details": details,
                "prev": entries[-1].sha256 if entries else GENESIS_HASH,
            }
            if self.secret is not None:
                content["mac"] = self.secret.mac(
                    LEDGER_MAC_PURPOSE, _entry_mac_data(content)
                )
            entry = LedgerEntry(**content, sha256=_entry_hash(content))
            self._append(entry)
            self._head.write(ChainHead(entry.seq + 1, entry.sha256))
        logger.info(
            "privacy release recorded: stream %s, epsilon +%.4g (stream %.4g), "
            "delta %.3g",
            stream,
            entry.epsilon,
            entry.stream_epsilon,
            entry.delta,
        )
        return entry

    def _check(
        self,
        entries: list[LedgerEntry],
        stream: str,
        stream_epsilon: float,
        delta: float,
    ) -> float:
        """Raise if the release is invalid or over budget; return the stream's ε."""
        spending = _compose(entries)
        problems = _release_problems(stream, stream_epsilon, delta)
        current = spending.per_stream.get(stream)
        if current is not None and not problems:
            if delta != current.delta:
                problems.append(
                    Problem(
                        "stream-delta-changed",
                        f"stream {stream!r} was accounted at delta {current.delta:.3g}"
                        f" but this release gives delta {delta:.3g}; evaluate the "
                        "accountant at the stream's delta or start a new stream",
                        "delta",
                    )
                )
            if stream_epsilon < current.epsilon:
                problems.append(
                    Problem(
                        "stream-epsilon-decreased",
                        f"stream {stream!r} already spent epsilon "
                        f"{current.epsilon:.4g}, but this release reports a "
                        f"cumulative {stream_epsilon:.4g}; pass the accountant's "
                        "cumulative epsilon, not the per-round one",
                        "stream_epsilon",
                    )
                )
        PrivacyError.raise_if_any("privacy release", problems)
        previous = current.epsilon if current is not None else 0.0
        total_epsilon = spending.epsilon - previous + stream_epsilon
        total_delta = spending.delta + (delta if current is None else 0.0)
        over = []
        if total_epsilon > self.budget.epsilon:
            over.append(
                f"epsilon: spent {spending.epsilon:.4g}, this release adds "
                f"{stream_epsilon - previous:.4g}, budget {self.budget.epsilon:.4g}"
            )
        if total_delta > self.budget.delta:
            over.append(
                f"delta: spent {spending.delta:.3g}, this release adds "
                f"{total_delta - spending.delta:.3g}, budget {self.budget.delta:.3g}"
            )
        if over:
            raise BudgetExceeded(
                str(self.path),
                [
                    Problem(
                        "budget-exceeded",
                        f"release on stream {stream!r} refused, it would exceed the "
                        f"site's budget ({'; '.join(over)}); raise the site's "
                        "budget in its config, or lower the study's epsilon or "
                        "number of rounds",
                        stream,
                    )
                ],
            )
        return previous

    def _locked(self) -> AbstractContextManager[None]:
        return exclusive_lock(self._lock_path)

    def _load(self, *, roll_forward: bool) -> list[LedgerEntry]:
        head, problems = self._head.read()
        LedgerTampered.raise_if_any(self.path, problems)
        if not self.path.exists():
            if head is not None and head.count > 0:
                self._tampered(
                    "ledger-missing",
                    f"the ledger is missing but its head file {self.head_path} "
                    f"records {head.count} releases; restore the ledger from a "
                    "backup (a site's spending is never reset)",
                    str(self.path),
                )
            return []
        entries = self._read_chain()
        count, last = (head.count, head.sha256) if head else (0, GENESIS_HASH)
        hashes = [GENESIS_HASH] + [e.sha256 for e in entries]
        if len(entries) == count + 1 and hashes[count] == last:
            # The crash window between append and head write: keep the line
            # (its MAC verified, when keyed).
            if roll_forward:
                logger.warning(
                    "privacy ledger %s has one release beyond its head; "
                    "counting it and rolling the head forward",
                    self.path,
                )
                self._head.write(ChainHead(len(entries), entries[-1].sha256))
            return entries
        if len(entries) != count or hashes[-1] != last:
            self._tampered(
                "head-mismatch",
                f"the head file records {count} releases ending in {last[:12]}..., "
                f"the ledger has {len(entries)} ending in {hashes[-1][:12]}...; "
                "lines were cut off, added or the ledger replaced (or the head "
                "changed): restore both from a backup",
                str(self.head_path),
            )
        return entries

    def _read_chain(self) -> list[LedgerEntry]:
        entries: list[LedgerEntry] = []
        problems: list[Problem] = []
        expected_prev: str | None = GENESIS_HASH
        lines = self.path.read_bytes().split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        for number, line in enumerate(lines, start=1):
            where = f"line {number}"
            parsed = _parse_entry(line, where)
            if isinstance(parsed, list):
                problems += parsed
                expected_prev = None
                continue
            entry = parsed
            if _entry_hash(_hashed_content(entry)) != entry.sha256:
                problems.append(
                    Problem(
                        "entry-hash-mismatch",
                        "the entry does not match its sha256: it was edited",
                        where,
                    )
                )
            if expected_prev is not None and entry.prev != expected_prev:
                problems.append(
                    Problem(
                        "chain-broken",
                        f"prev does not match line {number - 1}'s sha256: a line "
                        "before it was deleted, inserted, reordered or rewritten",
                        where,
                    )
                )
            if entry.seq != number - 1:
                problems.append(
                    Problem(
                        "sequence-gap",
                        f"seq is {entry.seq}, expected {number - 1}",
                        where,
                    )
                )
            if self.secret is not None and not self.secret.verify_mac(
                LEDGER_MAC_PURPOSE, _entry_mac_data(_hashed_content(entry)), entry.mac
            ):
                problems.append(
                    Problem(
                        "entry-mac-invalid",
                        "the line's MAC is missing or was not made with this site's "
                        "secret: it was written, rewritten or re-chained without "
                        "the key, or comes from another site's ledger",
                        where,
                    )
                )
            expected_prev = entry.sha256
            entries.append(entry)
        LedgerTampered.raise_if_any(self.path, problems)
        LedgerTampered.raise_if_any(self.path, _stream_problems(entries))
        return entries

    def _append(self, entry: LedgerEntry) -> None:
        with open(self.path, "a", encoding="utf-8") as ledger:
            ledger.write(canonical_json(_line_content(entry)) + "\n")
            ledger.flush()
            os.fsync(ledger.fileno())

    def _tampered(self, code: str, message: str, where: str) -> NoReturn:
        raise LedgerTampered(self.path, [Problem(code, message, where)])


def _parse_entry(line: bytes, where: str) -> LedgerEntry | list[Problem]:
    """Parse one line into an entry, or say why it is not one (never raise)."""
    try:
        raw = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return [Problem("unreadable-line", f"not a ledger entry ({error})", where)]
    if not isinstance(raw, dict):
        return [Problem("unreadable-line", "not a JSON object", where)]
    unknown = sorted(set(raw) - set(_REQUIRED_FIELDS) - {"mac"})
    wrong = [
        name
        for name, valid in _REQUIRED_FIELDS.items()
        if name not in raw or not valid(raw[name])
    ]
    if "mac" in raw and not isinstance(raw["mac"], str):
        wrong.append("mac")
    if unknown or wrong:
        return [
            Problem(
                "unreadable-line",
                f"not a ledger entry: fields missing or of the wrong type {wrong}, "
                f"unknown fields {unknown}",
                where,
            )
        ]
    problems = [
        Problem(
            "invalid-value",
            f"{name} is {raw[name]!r}; a recorded release has a finite "
            f"{name} >= 0 (delta < 1): the line was forged or edited",
            where,
        )
        for name in ("epsilon", "stream_epsilon", "delta")
        if not (math.isfinite(raw[name]) and raw[name] >= 0)
        or (name == "delta" and raw[name] >= 1)
    ]
    try:
        canonical_json(raw["details"])
    except (TypeError, ValueError):
        problems.append(
            Problem(
                "invalid-value",
                "details holds values that are not finite JSON numbers or strings",
                where,
            )
        )
    if problems:
        return problems
    return LedgerEntry(**raw)


def _stream_problems(entries: list[LedgerEntry]) -> list[Problem]:
    """Check that each stream's ε adds up and keeps one δ, line by line."""
    problems: list[Problem] = []
    streams: dict[str, tuple[float, float]] = {}
    for number, entry in enumerate(entries, start=1):
        previous, delta = streams.get(entry.stream, (0.0, entry.delta))
        expected = previous + entry.epsilon
        if not math.isclose(
            entry.stream_epsilon, expected, rel_tol=_STREAM_TOLERANCE, abs_tol=1e-12
        ):
            problems.append(
                Problem(
                    "stream-inconsistent",
                    f"stream {entry.stream!r}: epsilon {entry.stream_epsilon:.6g} "
                    f"after this line, but {previous:.6g} before plus an increment "
                    f"of {entry.epsilon:.6g}: the line would change what was spent",
                    f"line {number}",
                )
            )
        if entry.delta != delta:
            problems.append(
                Problem(
                    "stream-inconsistent",
                    f"stream {entry.stream!r} changes delta from {delta:.3g} to "
                    f"{entry.delta:.3g}; the ledger never records that",
                    f"line {number}",
                )
            )
        streams[entry.stream] = (max(previous, entry.stream_epsilon), delta)
    return problems


def _compose(entries: list[LedgerEntry]) -> Spending:
    per_stream: dict[str, StreamSpending] = {}
    for entry in entries:
        earlier = per_stream.get(entry.stream)
        count = earlier.n_entries + 1 if earlier is not None else 1
        per_stream[entry.stream] = StreamSpending(
            entry.stream_epsilon, entry.delta, count
        )
    return Spending(
        epsilon=sum(s.epsilon for s in per_stream.values()),
        delta=sum(s.delta for s in per_stream.values()),
        per_stream=per_stream,
        n_entries=len(entries),
    )


def _release_problems(
    stream: str, stream_epsilon: float, delta: float
) -> list[Problem]:
    problems: list[Problem] = []
    if not isinstance(stream, str) or not stream.strip():
        problems.append(
            Problem("empty-field", "give the accountant stream id", "stream")
        )
    if not _is_real(stream_epsilon) or not (
        math.isfinite(stream_epsilon) and stream_epsilon >= 0
    ):
        problems.append(
            Problem(
                "invalid-epsilon",
                f"stream epsilon must be finite and >= 0, got {stream_epsilon!r}",
                "stream_epsilon",
            )
        )
    if not _is_real(delta) or not (0 <= delta < 1):
        problems.append(
            Problem(
                "invalid-delta",
                f"delta must satisfy 0 <= delta < 1, got {delta!r}",
                "delta",
            )
        )
    return problems


def _field_problems(
    run: str, phase: str, kind: str, mechanism: str, details: dict[str, Any]
) -> list[Problem]:
    problems = [
        Problem("empty-field", f"give the release's {name}", name)
        for name, value in (("run", run), ("phase", phase))
        if not isinstance(value, str) or not value.strip()
    ]
    problems += [
        Problem(
            "not-kebab-case",
            f"{name} must be a kebab-case string such as 'gan-round', got {value!r}",
            name,
        )
        for name, value in (("kind", kind), ("mechanism", mechanism))
        if not isinstance(value, str) or not _KEBAB.match(value)
    ]
    try:
        canonical_json(details)
        valid = len(details) <= _MAX_DETAILS and all(
            isinstance(k, str) for k in details
        )
    except (TypeError, ValueError):
        valid = False
    if not valid:
        problems.append(
            Problem(
                "invalid-details",
                f"details must be a JSON mapping with string keys and at most "
                f"{_MAX_DETAILS} entries of finite values",
                "details",
            )
        )
    return problems


def canonical_json(content: Mapping[str, Any]) -> str:
    """Return ``content`` as the one JSON text its hashes and MACs are taken of."""
    return json.dumps(
        content,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    )


def _line_content(entry: LedgerEntry) -> dict[str, Any]:
    """Return the entry as its line holds it: ``mac`` only when keyed."""
    content = asdict(entry)
    if not content["mac"]:
        del content["mac"]
    return content


def _hashed_content(entry: LedgerEntry) -> dict[str, Any]:
    """Return what ``sha256`` covers: the line without ``sha256``."""
    content = _line_content(entry)
    del content["sha256"]
    return content


def _entry_mac_data(content: Mapping[str, Any]) -> bytes:
    """Return what an entry's MAC covers: the line less ``sha256`` and ``mac``."""
    unkeyed = {k: v for k, v in content.items() if k not in ("sha256", "mac")}
    return b"entry|" + canonical_json(unkeyed).encode("utf-8")


def _entry_hash(content: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(content).encode("utf-8")).hexdigest()


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
