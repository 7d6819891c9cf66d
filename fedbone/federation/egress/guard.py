"""The site's egress guard, its append-only log, and the Flower mod joining them.

Every reply a site sends passes :class:`EgressGuard` first: it checks the reply
against the rules for its message type (:data:`fedbone.federation.kinds.REPLY_SPECS`,
checked by :mod:`fedbone.federation.egress.reply_rules`) and against the request it
answers, suppresses small census cells, and refuses anything else with
:class:`EgressRefused`, listing every problem.

:func:`egress_mod` wraps a ClientApp so that no handler can bypass the guard,
and appends one line per outgoing reply (passed, refused or error) to the
site's :class:`EgressLog`.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp.typing import ClientAppCallable, Mod

from fedbone.errors import FedboneError, Problem, ProblemsError
from fedbone.federation.egress.log import EgressLog
from fedbone.federation.egress.reply_rules import RequestSnapshot, reply_problems
from fedbone.federation.egress.synthetic_rules import ReleaseCheck
from fedbone.federation.kinds import (
    REPLY_SPECS,
    SUPPRESSED_KEYS,
    SUPPRESSED_RECORD,
    ValueRule,
    template_matches,
)
from fedbone.federation.records import content_digest

__all__ = [
    "VERDICT_ERROR",
    "VERDICT_PASSED",
    "VERDICT_REFUSED",
    "EgressGuard",
    "EgressLog",
    "EgressRefused",
    "EgressVerdict",
    "RequestSnapshot",
    "SiteTaskError",
    "egress_mod",
    "log_error_reply",
]

logger = logging.getLogger(__name__)

_COUNT_KEYS = ("n", "n-pos", "n-neg")

VERDICT_PASSED = "passed"
VERDICT_REFUSED = "refused"
VERDICT_ERROR = "error"
"""A handler failed or returned an error reply: Flower sends only an error."""


class EgressRefused(ProblemsError):  # noqa: N818 (the protocol's name)
    """A reply the egress guard will not let leave the site; every problem listed."""

    kind = "reply"

    def __init__(self, subject: str, problems: Sequence[Problem]) -> None:
        super().__init__(subject, problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        self.args = (
            f"egress guard refused the reply to {subject!r}; its content was not "
            f"sent ({len(self.problems)} problem(s)):\n{lines}",
        )


@dataclass(frozen=True)
class EgressVerdict:
    """Outcome of screening a reply that may leave the site.

    Parameters
    ----------
    passed
        Always True for a returned verdict (refusals raise).
    reason
        Human-readable summary for the egress log.
    suppressed
        Census keys whose small counts were replaced by -1.
    """

    passed: bool
    reason: str
    suppressed: tuple[str, ...] = ()


class EgressGuard:
    """Decides what of a reply may leave the site.

    Parameters
    ----------
    small_cell_threshold
        Census counts from 1 to this minus one are suppressed (sent as -1).
    min_histogram_bins
        Fewest bins a ``histograms-*`` list may have.
    release_check
        Finds synthetic images the site's audit did not release (usually
        :meth:`fedbone.generative.release_register.ReleaseRegister.unreleased`);
        without it no image may leave.
    max_histogram_bins
        Most bins a ``histograms-*`` list may have (``policy.max_histogram_bins``).
    min_patients_per_class
        With 1 to this minus one positive or negative scans, a validation
        reply's metrics *and* score histograms are withheld
        (``policy.min_patients_per_class``; the small-cell threshold if larger).
    require_private_statistics
        Refuse every exact statistic about the site's patients
        (``privacy.require_dp_statistics``).
    """

    def __init__(
        self,
        *,
        small_cell_threshold: int = 5,
        min_histogram_bins: int = 1000,
        release_check: ReleaseCheck | None = None,
        max_histogram_bins: int = 100_000,
        min_patients_per_class: int = 1,
        require_private_statistics: bool = False,
    ) -> None:
        if small_cell_threshold < 1 or min_histogram_bins < 1:
            raise ValueError(
                "small_cell_threshold and min_histogram_bins must be >= 1, got "
                f"{small_cell_threshold} and {min_histogram_bins}"
            )
        self.small_cell_threshold = small_cell_threshold
        self.min_histogram_bins = min_histogram_bins
        self.release_check = release_check
        self.max_histogram_bins = max_histogram_bins
        self.min_class = max(small_cell_threshold, min_patients_per_class)
        self.require_private_statistics = require_private_statistics

    def screen(
        self, request: Message | RequestSnapshot, reply_content: RecordDict
    ) -> tuple[RecordDict, EgressVerdict]:
        """Check a reply and return the content that may be sent.

        Parameters
        ----------
        request
            The message being answered (or its snapshot, taken before the
            handler ran).
        reply_content
            The records the handler wants to send; not modified.

        Returns
        -------
        tuple
            The content to send (census small cells suppressed, a ``suppressed``
            ConfigRecord added when any were) and the verdict.

        Raises
        ------
        EgressRefused
            Listing every problem, if anything in the reply breaks a rule.
        """
        if isinstance(request, RequestSnapshot):
            snapshot = request
        else:
            snapshot = RequestSnapshot.of(request)
        problems = reply_problems(
            snapshot,
            reply_content,
            min_histogram_bins=self.min_histogram_bins,
            small_cell_threshold=self.small_cell_threshold,
            release_check=self.release_check,
            max_histogram_bins=self.max_histogram_bins,
            require_private_statistics=self.require_private_statistics,
        )
        EgressRefused.raise_if_any(snapshot.kind, problems)
        screened, suppressed = self._suppress_small_cells(snapshot, reply_content)
        reason = VERDICT_PASSED
        if suppressed:
            reason += (
                f"; {len(suppressed)} small cell(s) (< "
                f"{self.small_cell_threshold}) suppressed"
            )
        return screened, EgressVerdict(True, reason, suppressed)

    def _suppress_small_cells(
        self, request: RequestSnapshot, content: RecordDict
    ) -> tuple[RecordDict, tuple[str, ...]]:
        spec = REPLY_SPECS[request.kind]
        rules = {
            name: next(
                r.rule
                for r in spec.records
                if template_matches(r.name, name, request.models)
            )
            for name in content
        }
        # All models are scored on the same patients: one small class count
        # withholds every per-site metric and paired test of the reply.
        # The score histograms too: they would show the few patients' scores.
        withhold = any(
            rules[name] is ValueRule.SITE_METRICS
            and isinstance(record, MetricRecord)
            and self._has_small_cell(record, ("n-pos", "n-neg"), self.min_class)
            for name, record in content.items()
        )
        screened = RecordDict()
        suppressed: list[str] = []
        for name, record in content.items():
            rule = rules[name]
            if rule is ValueRule.COUNTS and isinstance(record, MetricRecord):
                small = [k for k in record if self._has_small_cell(record, (k,))]
                suppressed += small
                record = MetricRecord(
                    {k: -1 if k in small else v for k, v in record.items()}
                )
            elif withhold and rule is ValueRule.SITE_METRICS:
                suppressed.append(name)
                record = MetricRecord(
                    {k: -1 if k in _COUNT_KEYS else math.nan for k in record}
                )
            elif withhold and rule is ValueRule.HISTOGRAMS:
                # empty bins: the pooled histograms simply lack this site
                suppressed.append(name)
                empty: dict[str, int | float | list[int] | list[float]] = {
                    k: [0] * len(v) for k, v in record.items() if isinstance(v, list)
                }
                record = MetricRecord(empty)
            screened[name] = record
        if suppressed:
            screened[SUPPRESSED_RECORD] = ConfigRecord({SUPPRESSED_KEYS: suppressed})
        return screened, tuple(suppressed)

    def _has_small_cell(
        self, record: MetricRecord, keys: Sequence[str], minimum: int | None = None
    ) -> bool:
        limit = self.small_cell_threshold if minimum is None else minimum
        # a count sent as a float (2.0) is still a count: no type escapes
        return any(
            isinstance(record.get(k), int | float) and 0 < float(record[k]) < limit  # type: ignore[arg-type]
            for k in keys
        )


def _log(
    log: EgressLog,
    request: RequestSnapshot,
    digest: tuple[int, str],
    verdict: str,
    reason: str,
) -> None:
    log.append(
        run_id=request.run_id,
        run_name=request.run_name,
        phase=request.phase,
        kind=request.kind,
        n_bytes=digest[0],
        sha256=digest[1],
        verdict=verdict,
        reason=reason,
    )


def _text_digest(text: str) -> tuple[int, str]:
    data = text.encode("utf-8")
    return len(data), hashlib.sha256(data).hexdigest()


def log_error_reply(log: EgressLog, request: Message, reason: str) -> None:
    """Log an error reply to ``request`` that leaves without passing a handler.

    For replies Flower makes itself (e.g. a refused app bundle): the entry's
    bytes and sha256 are those of ``reason``, its verdict ``error``.

    Parameters
    ----------
    log
        The site's egress log.
    request
        The incoming message the error answers; gives the run, phase and kind.
    reason
        The error text, logged and digested.
    """
    _log(log, RequestSnapshot.of(request), _text_digest(reason), VERDICT_ERROR, reason)


class SiteTaskError(FedboneError):
    """A site could not complete a request; the details stay at the site.

    The message the server receives names only the request kind, the
    exception type and, for fedbone's typed errors, their stable problem codes.
    """

    def __init__(self, kind: str, error: Exception) -> None:
        codes = getattr(error, "codes", None)
        detail = f" ({', '.join(codes)})" if codes else ""
        super().__init__(
            f"the site could not complete {kind!r}: {type(error).__name__}{detail}; "
            "the full reason is in the site's egress log and site log"
        )


def egress_mod(
    resolve_guard_and_log: Callable[[Message, Context], tuple[EgressGuard, EgressLog]],
) -> Mod:
    """Build a ClientApp mod that screens and logs every reply.

    Put it first in ``ClientApp(mods=[...])`` so it sees the final reply.

    Parameters
    ----------
    resolve_guard_and_log
        Gives the site's guard and log for a message (e.g. from its site
        config); called before the handler, so a misconfigured site fails
        before doing any work.

    Returns
    -------
    Mod
        A mod that runs the handler, screens its reply content, replaces it
        with the screened content and logs it. A refused reply is logged and
        :class:`EgressRefused` re-raised, so Flower sends an error reply
        instead. A handler exception is logged in full as ``error`` and
        replaced by :class:`SiteTaskError`, whose text carries no detail
        that could identify a patient. Error replies are logged and passed on.
    """

    def mod(
        message: Message, context: Context, call_next: ClientAppCallable
    ) -> Message:
        guard, log = resolve_guard_and_log(message, context)
        request = RequestSnapshot.of(message)
        try:
            reply = call_next(message, context)
        except Exception as exc:
            reason = f"handler raised {type(exc).__name__}: {exc}"
            _log(log, request, _text_digest(reason), VERDICT_ERROR, reason)
            logger.error("%s failed: %s", request.kind, reason)
            # Exception text can name files or values (a patient's path); the
            # site keeps it in its own log, the server learns only what failed.
            raise SiteTaskError(request.kind, exc) from None
        if reply.has_error():
            reason = f"error reply (code {reply.error.code}): {reply.error.reason}"
            _log(log, request, _text_digest(reason), VERDICT_ERROR, reason)
            return reply
        try:
            content, verdict = guard.screen(request, reply.content)
        except EgressRefused as exc:
            _log(log, request, content_digest(reply.content), VERDICT_REFUSED, str(exc))
            logger.error("%s", exc)
            raise
        _log(log, request, content_digest(content), VERDICT_PASSED, verdict.reason)
        reply.content = content
        return reply

    return mod
