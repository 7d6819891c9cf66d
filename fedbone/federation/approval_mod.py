"""The ClientApp mod by which a site answers only the studies it approved.

With ``policy.require_study_approval: true`` in the site config, every
request is checked against the site's approvals list
(:mod:`fedbone.privacy.approvals`) before any work: the study its
``study-approval-sha256`` names must be approved here and not revoked
(``study-not-approved``), and the request must stay within the approval: its
phase, kind, run name, DP settings and bins (``not-in-approved-study``). A
refused request gets an error reply (Flower's ``MOD_FAILED_PRECONDITION``)
naming the site, the request and every problem, which the centre records under
``results["site-errors"]``; no handler runs, so nothing but that reply leaves.

Put the mod right after the egress guard (``mods=[egress_mod(...),
study_approval_mod(...), replay_mod(...)]``): the guard logs the refusal as an
``error`` line of the egress log, and a stored reply is never replayed for a
study no longer approved. A list that does not verify, or a site secret that
cannot be read, refuses every request (the detail stays in the site's log).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from flwr.app import ConfigRecord, Context, Error, Message
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common.constant import ErrorCode

from fedbone.config.site import SiteConfig
from fedbone.errors import Problem, ProblemsError
from fedbone.federation.kinds import CONFIG_RECORD
from fedbone.privacy.approvals import open_site_approvals
from fedbone.privacy.errors import ApprovalsTampered
from fedbone.security.errors import PkiError

__all__ = ["StudyNotApproved", "study_approval_mod"]

logger = logging.getLogger(__name__)


class StudyNotApproved(ProblemsError):  # noqa: N818 (the refusal's name)
    """A request the site refuses: its study is not approved here, or not for it."""

    kind = "request"

    def __init__(self, site_id: str, request: str, problems: Sequence[Problem]) -> None:
        super().__init__(request, problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        self.args = (
            f"site {site_id!r} refused {request} ({len(self.problems)} "
            f"problem(s)); it answers only studies it approved:\n{lines}",
        )


def study_approval_mod(
    site_config_for: Callable[[Message, Context], SiteConfig],
) -> Mod:
    """Build the mod that refuses requests outside the site's approved studies.

    Parameters
    ----------
    site_config_for
        Gives the site config a message is for (e.g.
        :func:`fedbone.federation.site_context.load_site_for`).

    Returns
    -------
    Mod
        A mod that passes a request on only when the site does not require
        approval or the request is within a standing approval, and otherwise
        answers with an error reply carrying a :class:`StudyNotApproved` text.
    """

    def mod(
        message: Message, context: Context, call_next: ClientAppCallable
    ) -> Message:
        site = site_config_for(message, context)
        if not site.policy.require_study_approval:
            return call_next(message, context)
        refusal = _refusal(site, message)
        if refusal is None:
            return call_next(message, context)
        logger.error("%s", refusal)
        return Message(
            Error(code=ErrorCode.MOD_FAILED_PRECONDITION, reason=str(refusal)),
            reply_to=message,
        )

    return mod


def _refusal(site: SiteConfig, message: Message) -> StudyNotApproved | None:
    kind = message.metadata.message_type
    config = (
        message.content.config_records.get(CONFIG_RECORD, ConfigRecord())
        if message.has_content()
        else ConfigRecord()
    )
    request = f"{kind} of run {config.get('run-name', '')!r}"
    try:
        problems = open_site_approvals(site).refusal_problems(kind, dict(config))
    except (ApprovalsTampered, PkiError) as error:
        # The detail (paths, lines) stays in the site's log.
        logger.error("the site cannot read its approvals: %s", error)
        problems = [
            Problem(
                "approvals-unverified",
                "the site's approvals list or secret does not verify; it answers "
                "no study until its data-protection officer restores them",
            )
        ]
    if not problems:
        return None
    return StudyNotApproved(site.site_id, request, problems)
