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
(64 zeros for the first), and ``sha256``, the hash of its own canonical JSON.
A head file ``<ledger>.head`` holds the line count and the last hash and is
replaced atomically after every append, so a cut-off tail is detected too. An
edited, reordered, deleted or missing line, or a ledger deleted while its head
remains, raises :class:`~fedbone.privacy.errors.LedgerTampered` naming the line;
such a ledger refuses every release until it is restored from a backup. It is
never reset silently. The chain detects accidents and naive edits; someone who
rewrites the whole chain and head is caught only by comparing the head hash
(``summary()["ledger-sha256"]``) with a copy kept elsewhere, e.g. in the
study report.

A crash between appending a line and replacing the head leaves exactly one
chained line beyond the head; that line is kept and counted as spent (the
safe direction) and the head is rolled forward.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from fedbone.errors import Problem
from fedbone.privacy.budget import PrivacyBudget
from fedbone.privacy.errors import BudgetExceeded, LedgerTampered, PrivacyError

__all__ = [
    "GENESIS_HASH",
    "LedgerEntry",
    "PrivacyLedger",
    "Spending",
    "StreamSpending",
]

logger = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
"""The ``prev`` of the first line."""

_KEBAB = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_MAX_DETAILS = 32
"""``details`` is a few accountant parameters, not a payload."""


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
        The ledger file (JSON lines); created on the first release. The head
        file is ``<path>.head`` and the lock file ``<path>.lock``.
    budget
        The site's total budget.

    Raises
    ------
    LedgerTampered
        When the existing ledger does not verify.
    """

    def __init__(self, path: Path, budget: PrivacyBudget) -> None:
        self.path = Path(path)
        self.budget = budget
        self.head_path = self.path.with_name(self.path.name + ".head")
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        with self._locked():
            self._load(roll_forward=True)

    def verify(self) -> list[LedgerEntry]:
        """Re-hash every line and check the chain and the head.

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
        with self._locked():
            entries = self._load(roll_forward=False)
            previous = self._check(entries, stream, stream_epsilon, delta)
            content: dict[str, Any] = {
                "seq": len(entries),
                "time": datetime.now(UTC).isoformat(),
                "run": run,
                "phase": phase,
                "kind": kind,
                "mechanism": mechanism,
                "stream": stream,
                "epsilon": float(stream_epsilon) - previous,
                "stream_epsilon": float(stream_epsilon),
                "delta": float(delta),
                "details": details,
                "prev": entries[-1].sha256 if entries else GENESIS_HASH,
            }
            entry = LedgerEntry(**content, sha256=_entry_hash(content))
            self._append(entry)
            self._write_head(entry.seq + 1, entry.sha256)
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

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # A separate lock file: locking the ledger itself would create it and
        # hide a ledger deleted while its head remains.
        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _load(self, *, roll_forward: bool) -> list[LedgerEntry]:
        head = self._read_head()
        if not self.path.exists():
            if head is not None:
                self._tampered(
                    "ledger-missing",
                    f"the ledger is missing but its head file {self.head_path} "
                    f"records {head[0]} releases; restore the ledger from a backup",
                    str(self.path),
                )
            return []
        entries = self._read_chain()
        count, last = head if head is not None else (0, GENESIS_HASH)
        hashes = [GENESIS_HASH] + [e.sha256 for e in entries]
        if len(entries) == count + 1 and hashes[count] == last:
            # The crash window between append and head write: keep the line.
            if roll_forward:
                logger.warning(
                    "privacy ledger %s has one release beyond its head; "
                    "counting it and rolling the head forward",
                    self.path,
                )
                self._write_head(len(entries), entries[-1].sha256)
            return entries
        if len(entries) != count or hashes[-1] != last:
            self._tampered(
                "head-mismatch",
                f"the head file records {count} releases ending in {last[:12]}..., "
                f"the ledger has {len(entries)} ending in {hashes[-1][:12]}...; "
                "lines were cut off or the head was changed, restore both from a "
                "backup",
                str(self.head_path),
            )
        return entries

    def _read_chain(self) -> list[LedgerEntry]:
        entries: list[LedgerEntry] = []
        problems: list[Problem] = []
        expected_prev = GENESIS_HASH
        lines = self.path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            where = f"line {number}"
            try:
                entry = LedgerEntry(**json.loads(line))
            except (json.JSONDecodeError, TypeError) as error:
                problems.append(
                    Problem("unreadable-line", f"not a ledger entry ({error})", where)
                )
                expected_prev = GENESIS_HASH
                continue
            content = asdict(entry)
            stored = content.pop("sha256")
            if _entry_hash(content) != stored:
                problems.append(
                    Problem(
                        "entry-hash-mismatch",
                        "the entry does not match its sha256: it was edited",
                        where,
                    )
                )
            if entry.prev != expected_prev:
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
            expected_prev = stored
            entries.append(entry)
        LedgerTampered.raise_if_any(self.path, problems)
        return entries

    def _read_head(self) -> tuple[int, str] | None:
        if not self.head_path.exists():
            return None
        try:
            head = json.loads(self.head_path.read_text(encoding="utf-8"))
            return int(head["count"]), str(head["sha256"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            self._tampered(
                "head-unreadable",
                f"the head file cannot be read ({error}); restore it from a backup",
                str(self.head_path),
            )

    def _append(self, entry: LedgerEntry) -> None:
        with open(self.path, "a", encoding="utf-8") as ledger:
            ledger.write(_canonical(asdict(entry)) + "\n")
            ledger.flush()
            os.fsync(ledger.fileno())

    def _write_head(self, count: int, sha256: str) -> None:
        temporary = self.head_path.with_name(self.head_path.name + ".tmp")
        with open(temporary, "w", encoding="utf-8") as head:
            head.write(_canonical({"count": count, "sha256": sha256}))
            head.flush()
            os.fsync(head.fileno())
        os.replace(temporary, self.head_path)
        directory = os.open(self.head_path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def _tampered(self, code: str, message: str, where: str) -> NoReturn:
        raise LedgerTampered(self.path, [Problem(code, message, where)])


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
        _canonical(details)
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


def _canonical(content: Mapping[str, Any]) -> str:
    return json.dumps(
        content,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    )


def _entry_hash(content: Mapping[str, Any]) -> str:
    return hashlib.sha256(_canonical(content).encode("utf-8")).hexdigest()


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
