"""Typed errors of the privacy package."""

from __future__ import annotations

from fedbone.errors import ProblemsError

__all__ = [
    "ApprovalsTampered",
    "BudgetExceeded",
    "LedgerTampered",
    "PrivacyError",
    "StudyApprovalError",
]


class PrivacyError(ProblemsError):
    """A privacy setting, release or record that cannot be accepted, all listed."""

    kind = "privacy"


class LedgerTampered(PrivacyError):  # noqa: N818 (name set by the design)
    """A privacy ledger whose lines, hash chain or head file do not agree.

    A site whose ledger cannot be verified refuses every release: its spending
    is unknown, so no budget check can be trusted. The ledger is never reset
    silently; a privacy officer must restore it from a backup.
    """

    kind = "privacy ledger"


class BudgetExceeded(PrivacyError):  # noqa: N818 (name set by the design)
    """A release that would take the site's total ε or δ over its budget."""

    kind = "privacy budget"


class ApprovalsTampered(PrivacyError):  # noqa: N818 (like LedgerTampered)
    """A site's approvals list whose lines, chain, seals or head do not agree.

    A site whose approvals list cannot be verified answers no study: which
    studies it approved is unknown. The list is never reset silently.
    """

    kind = "approvals list"


class StudyApprovalError(PrivacyError):
    """An approval or revocation that cannot be recorded (unknown study...)."""

    kind = "study approval"
