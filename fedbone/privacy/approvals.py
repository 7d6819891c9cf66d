"""The studies a site approved: an append-only, hash-chained, sealed list.

What a data-protection officer needs to know
--------------------------------------------
``fedbone site approve <study.yaml>`` appends one line to the site's approvals
list (site config ``approvals``, default ``approvals.jsonl`` beside the site
YAML): the study's name and approval sha256, its phases and the message kinds
each sends the site, its differential privacy, its most histogram bins (see
:class:`~fedbone.privacy.study_approval.StudyApproval`), who approved it
(``--by`` or the OS user), when, and the sha256 of the study file read.
``fedbone site revoke <sha256>`` appends a revoking line; nothing is ever
rewritten or removed, so the list is also the audit trail of every decision.
With ``policy.require_study_approval: true`` the site answers only requests
of an approved, unrevoked study, within what the approval lists
(:func:`fedbone.federation.study_approval.study_approval_mod`).

**Tamper evidence**, as the privacy ledger (:mod:`fedbone.privacy.ledger`):
each line holds ``prev`` (the ``sha256`` of the line before, 64 zeros for the
first), ``sha256`` (of its own canonical JSON without ``sha256``) and
``mac``, an HMAC-SHA256 under the site's secret (``privacy.secret``) of the
line without ``sha256`` and ``mac``. A head file next to the secret
(``<secret>.<list name>.head``) holds the line count and the last hash, with
its own MAC. So someone who can write the site folder but not read the secret
can neither add an approval, nor edit, reorder or remove a line (a revocation
included), nor cut the tail off, nor swap in another site's list. A list
that does not verify raises :class:`~fedbone.privacy.errors.ApprovalsTampered`
naming every problem, and the site answers no study until the list and its
head are restored from a backup. Appends hold ``<list>.lock`` (``flock``)
across reading, checking and writing, and are fsync'd; one authentic line
beyond the head (a crash between the append and the head write) is kept.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedbone.config.site import SiteConfig
from fedbone.errors import Problem
from fedbone.privacy.approval_lines import APPROVE, REVOKE, ApprovalLines
from fedbone.privacy.errors import StudyApprovalError
from fedbone.privacy.site_seal import open_site_secret_for
from fedbone.privacy.study_approval import NOT_APPROVED, StudyApproval
from fedbone.security.site_secret import SiteSecret

__all__ = [
    "APPROVAL_SHA256_KEY",
    "ApprovalRecord",
    "ApprovalsList",
    "open_site_approvals",
]

APPROVAL_SHA256_KEY = "study-approval-sha256"
"""The config key in which every message names the study it belongs to."""

_MIN_PREFIX = 8
"""Fewest hex digits that name an approval on the command line."""
_HOW = "run `fedbone site approve <study.yaml>` at this site"


@dataclass(frozen=True)
class ApprovalRecord:
    """One approval of a study, as the list holds it, and its revocation.

    Parameters
    ----------
    approval
        What was approved.
    approved_by, approved_at
        Who approved it, and when (UTC, ISO 8601).
    revoked_by, revoked_at
        Who revoked it, and when; empty while it stands.
    """

    approval: StudyApproval
    approved_by: str
    approved_at: str
    revoked_by: str = ""
    revoked_at: str = ""

    @property
    def active(self) -> bool:
        """Whether the approval stands (was not revoked)."""
        return not self.revoked_at


class ApprovalsList:
    """A site's approvals list: every approval and revocation, verified.

    Parameters
    ----------
    path
        The list (JSON lines); created by the first approval.
    secret
        The site's secret, which seals every line and the head.
    """

    def __init__(self, path: Path, secret: SiteSecret) -> None:
        self.lines = ApprovalLines(path, secret)
        self.path = self.lines.path

    def records(self) -> list[ApprovalRecord]:
        """Return every approval ever recorded, oldest first, with revocations.

        Raises
        ------
        ApprovalsTampered
            Naming every problem, when the list does not verify.
        """
        with self.lines.locked():
            return _records(self.lines.read())

    def find(self, approval_sha256: str) -> ApprovalRecord | None:
        """Return the latest approval of ``approval_sha256`` (revoked or not).

        Raises
        ------
        ApprovalsTampered
            When the list does not verify.
        """
        found = [
            r for r in self.records() if r.approval.approval_sha256 == approval_sha256
        ]
        return found[-1] if found else None

    def approve(self, approval: StudyApproval, *, by: str) -> ApprovalRecord:
        """Record that the site approves ``approval``; return its record.

        Approving a study that stands approved records nothing and returns
        the standing approval; a revoked one may be approved again.

        Parameters
        ----------
        approval
            What the study asks of the site.
        by
            Who approves it.

        Raises
        ------
        ApprovalsTampered
            When the list does not verify; nothing is appended.
        """
        sha = approval.approval_sha256
        with self.lines.locked():
            lines = self.lines.read()
            standing = [
                r
                for r in _records(lines)
                if r.approval.approval_sha256 == sha and r.active
            ]
            if standing:
                return standing[-1]
            fields = {"study": approval.study, "approval-sha256": sha, "by": by}
            self.lines.append(lines, APPROVE, fields | _terms(approval))
            return _records(self.lines.read())[-1]

    def revoke(self, approval_sha256: str, *, by: str) -> ApprovalRecord:
        """Record that the site revokes a standing approval; return it, revoked.

        Parameters
        ----------
        approval_sha256
            The approval sha256, or a unique prefix of at least 8 hex digits.
        by
            Who revokes it.

        Raises
        ------
        StudyApprovalError
            ``unknown-approval``, ``ambiguous-approval`` or ``not-approved``
            (already revoked); nothing is appended.
        ApprovalsTampered
            When the list does not verify.
        """
        with self.lines.locked():
            lines = self.lines.read()
            approval = _standing(_records(lines), approval_sha256).approval
            sha = approval.approval_sha256
            fields = {"study": approval.study, "approval-sha256": sha, "by": by}
            self.lines.append(lines, REVOKE, fields)
            return [
                r
                for r in _records(self.lines.read())
                if r.approval.approval_sha256 == sha
            ][-1]

    def refusal_problems(self, kind: str, config: Mapping[str, Any]) -> list[Problem]:
        """Return why the site refuses a request; empty if it may answer.

        Parameters
        ----------
        kind
            The message type.
        config
            The request's ``config`` record; its ``study-approval-sha256``
            names the study.

        Raises
        ------
        ApprovalsTampered
            When the list does not verify.
        """
        sha = config.get(APPROVAL_SHA256_KEY)
        if not isinstance(sha, str) or not sha:
            return [
                _not_approved(
                    f"the request names no study ({APPROVAL_SHA256_KEY} missing): "
                    "this site answers only studies it approved; the centre must "
                    f"run a fedbone that sends it, and the site {_HOW}"
                )
            ]
        record = self.find(sha)
        if record is None:
            return [
                _not_approved(
                    f"this site has not approved the study (approval sha256 "
                    f"{sha[:12]}...); to take part, {_HOW}"
                )
            ]
        if not record.active:
            return [
                _not_approved(
                    f"this site revoked its approval of study "
                    f"{record.approval.study!r} on {record.revoked_at}; to take "
                    f"part again, {_HOW}"
                )
            ]
        return record.approval.request_problems(kind, config)


def _not_approved(message: str) -> Problem:
    return Problem(NOT_APPROVED, message, APPROVAL_SHA256_KEY)


def open_site_approvals(site: SiteConfig) -> ApprovalsList:
    """Open the site's approvals list (``approvals``), sealed with its secret.

    Parameters
    ----------
    site
        The site config.

    Raises
    ------
    PkiError
        When the site's secret cannot be loaded (see
        :func:`~fedbone.privacy.site_seal.open_site_secret_for`).
    """
    return ApprovalsList(site.approvals_file, open_site_secret_for(site))


def _terms(approval: StudyApproval) -> dict[str, Any]:
    return {
        "phases": list(approval.phases),
        "kinds": {phase: list(kinds) for phase, kinds in approval.kinds.items()},
        "dp": dict(approval.dp),
        "validation-bins": approval.validation_bins,
        "statistics-bins": approval.statistics_bins,
        "study-file-sha256": approval.study_file_sha256,
    }


def _records(lines: list[dict[str, Any]]) -> list[ApprovalRecord]:
    records: list[ApprovalRecord] = []
    for line in lines:
        if line["action"] == APPROVE:
            approval = StudyApproval(
                study=line["study"],
                approval_sha256=line["approval-sha256"],
                kinds={p: tuple(line["kinds"][p]) for p in line["phases"]},
                dp={k: float(v) for k, v in line["dp"].items()},
                validation_bins=line["validation-bins"],
                statistics_bins=line["statistics-bins"],
                study_file_sha256=line["study-file-sha256"],
            )
            records.append(ApprovalRecord(approval, line["by"], line["time"]))
            continue
        for index in range(len(records) - 1, -1, -1):
            record = records[index]
            if record.approval.approval_sha256 == line["approval-sha256"]:
                if record.active:
                    records[index] = ApprovalRecord(
                        record.approval,
                        record.approved_by,
                        record.approved_at,
                        revoked_by=line["by"],
                        revoked_at=line["time"],
                    )
                break
    return records


def _standing(records: list[ApprovalRecord], sha: str) -> ApprovalRecord:
    """Return the one standing approval whose sha256 starts with ``sha``."""
    sha = sha.strip().lower()
    if len(sha) < _MIN_PREFIX or not re.fullmatch(r"[0-9a-f]+", sha):
        raise StudyApprovalError(
            sha,
            [
                Problem(
                    "unknown-approval",
                    f"give the approval sha256 (at least {_MIN_PREFIX} hex digits), "
                    "as `fedbone site status` lists it",
                    "sha256",
                )
            ],
        )
    matching = {
        r.approval.approval_sha256
        for r in records
        if r.approval.approval_sha256.startswith(sha)
    }
    if not matching:
        code, text = "unknown-approval", "no approval of this site has that sha256"
    elif len(matching) > 1:
        code, text = (
            "ambiguous-approval",
            f"{len(matching)} approvals start with it; give more digits",
        )
    else:
        latest = [r for r in records if r.approval.approval_sha256 in matching][-1]
        if latest.active:
            return latest
        code, text = (
            "not-approved",
            f"the approval of {latest.approval.study!r} was already revoked on "
            f"{latest.revoked_at}",
        )
    raise StudyApprovalError(
        sha, [Problem(code, f"{text}; see `fedbone site status`", "sha256")]
    )
