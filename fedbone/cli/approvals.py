"""``fedbone site approve``, ``revoke`` and ``status``: a hospital's say on studies.

``approve`` reads the study YAML the centre sent, prints what the study will
ask of this site (phases and message kinds, differential privacy, histogram
bins) and its approval sha256, and records the approval in the site's sealed
approvals list (:mod:`fedbone.privacy.approvals`). ``revoke`` records that an
approval no longer stands. ``status`` shows on one screen what the site
approved, what its privacy ledger has spent against its budget, and the last
replies that left it; it exits 1 when any of the three does not verify.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from fedbone.config.site import SiteConfig
    from fedbone.errors import Problem
    from fedbone.privacy.study_approval import StudyApproval

__all__ = [
    "add_approval_parsers",
    "run_site_approve",
    "run_site_revoke",
    "run_site_status",
]

_RECENT = 10
_OFF_WARNING = (
    "note: policy.require_study_approval is not true in {config}: this site "
    "answers every study until it is set to true"
)


def add_approval_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``approve``, ``revoke`` and ``status`` to the ``fedbone site`` actions."""
    approve = sub.add_parser(
        "approve",
        help="approve a study at this site (record it in the approvals list)",
        description=(
            "Show what the study asks of this site (phases, message kinds, "
            "differential privacy, histogram bins) and record its approval in "
            "the site's sealed approvals list. With policy."
            "require_study_approval: true the site answers only approved studies."
        ),
    )
    approve.add_argument("study", type=Path, help="the study YAML the centre sent")
    _add_common(approve)
    approve.add_argument(
        "--dry-run", action="store_true", help="show what would be approved only"
    )
    approve.set_defaults(func=run_site_approve)
    revoke = sub.add_parser(
        "revoke",
        help="revoke a study's approval at this site",
        description=(
            "Record that this site no longer approves a study; its requests are "
            "refused from now on. The approval stays in the list, marked revoked."
        ),
    )
    revoke.add_argument("sha256", help="the approval sha256 (or 8+ leading hex digits)")
    _add_common(revoke)
    revoke.set_defaults(func=run_site_revoke)
    status = sub.add_parser(
        "status",
        help="approvals, privacy spending and recent egress on one screen",
        description=(
            "Show the studies this site approved (standing or revoked), what "
            "its privacy ledger spent against its budget, and the last replies "
            "that left it. Exits 1 if the approvals list, the ledger or the "
            "egress log does not verify."
        ),
    )
    status.add_argument("--config", type=Path, required=True, help="site YAML")
    status.add_argument(
        "--egress",
        type=int,
        default=_RECENT,
        metavar="N",
        help=f"show the last N egress log entries (default {_RECENT})",
    )
    status.set_defaults(func=run_site_status)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="site YAML")
    parser.add_argument(
        "--by", help="who decides (recorded; default: the operating-system user)"
    )


def _who(by: str | None) -> str:
    if by:
        return by
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def run_site_approve(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Show what a study asks of the site and record its approval; return 0.

    Parameters
    ----------
    args
        ``study`` (YAML), ``config`` (site YAML), ``by`` and ``dry_run``.
    out
        Where to print (standard output by default).
    """
    from fedbone.config.site import load_site_config
    from fedbone.config.study import load_study_config
    from fedbone.privacy.approvals import open_site_approvals
    from fedbone.privacy.study_approval import StudyApproval

    stream = sys.stdout if out is None else out
    site = load_site_config(args.config)
    study = load_study_config(args.study)
    file_sha256 = hashlib.sha256(Path(args.study).read_bytes()).hexdigest()
    approval = StudyApproval.of(study, file_sha256)
    stream.write(f"site {site.site_id}: study {study.name!r} ({args.study})\n")
    _describe(stream, approval)
    if not site.policy.require_study_approval:
        stream.write(_OFF_WARNING.format(config=args.config) + "\n")
    if args.dry_run:
        stream.write("dry run: nothing recorded\n")
        return 0
    record = open_site_approvals(site).approve(approval, by=_who(args.by))
    stream.write(
        f"approved by {record.approved_by} at {record.approved_at}; recorded in "
        f"{site.approvals_file}\n"
    )
    return 0


def _describe(stream: TextIO, approval: StudyApproval) -> None:
    stream.write(f"  approval sha256:   {approval.approval_sha256}\n")
    stream.write(f"  study file sha256: {approval.study_file_sha256}\n")
    stream.write("  phases and the messages they send this site:\n")
    for phase, kinds in approval.kinds.items():
        stream.write(f"    {phase:<11} {', '.join(kinds) or '(none)'}\n")
    stream.write(f"  differential privacy: {approval.describe_dp()}\n")
    stream.write(f"  score histograms: at most {approval.validation_bins} bins\n")


def run_site_revoke(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Record that an approval no longer stands; return 0.

    Parameters
    ----------
    args
        ``sha256`` (or a unique prefix), ``config`` (site YAML) and ``by``.
    out
        Where to print (standard output by default).
    """
    from fedbone.config.site import load_site_config
    from fedbone.privacy.approvals import open_site_approvals

    stream = sys.stdout if out is None else out
    site = load_site_config(args.config)
    record = open_site_approvals(site).revoke(args.sha256, by=_who(args.by))
    stream.write(
        f"site {site.site_id}: approval of study {record.approval.study!r} "
        f"({record.approval.approval_sha256}) revoked by {record.revoked_by} at "
        f"{record.revoked_at}; its requests are refused from now on\n"
    )
    return 0


def run_site_status(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Print approvals, privacy spending and recent egress; 1 if any fails to verify.

    Parameters
    ----------
    args
        ``config`` (site YAML) and ``egress`` (how many recent entries).
    out
        Where to print (standard output by default).
    """
    from fedbone.config.site import load_site_config

    stream = sys.stdout if out is None else out
    site = load_site_config(args.config)
    required = site.policy.require_study_approval
    stream.write(
        f"site {site.site_id} ({site.role.value}), {args.config}\n"
        f"study approval: {'required' if required else 'NOT required'} "
        f"(policy.require_study_approval: {str(required).lower()})\n"
    )
    problems = _approvals_section(stream, site)
    problems += _ledger_section(stream, site)
    problems += _egress_section(stream, site, max(0, args.egress))
    if problems:
        stream.write(f"\nNOT VERIFIED: {len(problems)} problem(s)\n")
        stream.writelines(f"  - {p}\n" for p in problems)
        return 1
    return 0


def _approvals_section(stream: TextIO, site: SiteConfig) -> list[Problem]:
    from fedbone.errors import ProblemsError
    from fedbone.privacy.approvals import open_site_approvals

    stream.write(f"\napprovals ({site.approvals_file}):\n")
    try:
        records = open_site_approvals(site).records()
    except ProblemsError as error:
        stream.write("  cannot be read; see the problems below\n")
        return list(error.problems)
    if not records:
        stream.write("  none: every study is refused (when approval is required)\n")
    rows = [
        (
            "active" if r.active else "revoked",
            r.approval.study,
            r.approval.approval_sha256[:16],
            ", ".join(r.approval.phases),
            f"{r.approved_at} by {r.approved_by}"
            + ("" if r.active else f"; revoked {r.revoked_at} by {r.revoked_by}"),
        )
        for r in records
    ]
    if rows:
        _table(stream, ("state", "study", "sha256", "phases", "decided"), rows)
    return []


def _ledger_section(stream: TextIO, site: SiteConfig) -> list[Problem]:
    from fedbone.errors import ProblemsError
    from fedbone.privacy.budget import PrivacyBudget
    from fedbone.privacy.ledger import PrivacyLedger
    from fedbone.privacy.site_seal import open_site_secret_for

    privacy = site.privacy
    budget = privacy.epsilon_budget
    delta = "1/(10 n)" if privacy.delta_budget is None else f"{privacy.delta_budget:g}"
    stream.write(f"\nprivacy ledger ({privacy.ledger}):\n")
    if budget is None:
        stream.write("  no budget: the site makes no differentially private release\n")
    try:
        # the budget only gates new releases; what was spent is read as it is
        nominal = PrivacyBudget(budget or 1.0, privacy.delta_budget or 0.5)
        spent = PrivacyLedger(
            privacy.ledger, nominal, open_site_secret_for(site)
        ).spent()
    except ProblemsError as error:
        stream.write("  cannot be read; see the problems below\n")
        return list(error.problems)
    share = f" ({100 * spent.epsilon / budget:.0f}%)" if budget else ""
    stream.write(
        f"  epsilon spent {spent.epsilon:.4g} of {budget if budget else '-'}{share}; "
        f"delta spent {spent.delta:.3g} of {delta}; {spent.n_entries} release(s) "
        f"in {len(spent.per_stream)} stream(s)\n"
    )
    return []


def _egress_section(stream: TextIO, site: SiteConfig, recent: int) -> list[Problem]:
    from fedbone.errors import ProblemsError
    from fedbone.federation.egress.log_audit import audit_egress_log
    from fedbone.privacy.ledger import head_path_for
    from fedbone.privacy.site_seal import open_site_secret_for

    path = site.egress_log
    stream.write(f"\negress log ({path}):\n")
    try:
        secret = open_site_secret_for(site)
    except ProblemsError as error:
        stream.write("  cannot be read; see the problems below\n")
        return list(error.problems)
    if not path.exists() and not head_path_for(path, secret.path).exists():
        stream.write("  nothing has left this site yet\n")
        return []
    audit = audit_egress_log(path, secret)
    entries = audit.entries[-recent:] if recent else []
    sent = sum(e.n_bytes for e in audit.entries if e.verdict == "passed")
    stream.write(
        f"  {len(audit.entries)} entries, {sent} bytes sent; the last {len(entries)}:\n"
    )
    rows = [
        (
            e.time.isoformat(timespec="seconds"),
            e.run_name or str(e.run_id),
            e.kind,
            e.verdict,
            str(e.n_bytes),
        )
        for e in entries
    ]
    if rows:
        _table(stream, ("time", "run", "kind", "verdict", "bytes"), rows)
    return list(audit.problems)


def _table(
    stream: TextIO, columns: Sequence[str], rows: Sequence[Sequence[str]]
) -> None:
    widths = [
        max([len(name), *(len(row[i]) for row in rows)])
        for i, name in enumerate(columns)
    ]
    for row in [columns, *rows]:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        stream.write("  " + "  ".join(cells).rstrip() + "\n")
