"""The approvals list: hash-chained, sealed with the site secret, append-only."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from fedbone.config.study import PHASES, StudyConfig
from fedbone.privacy.approval_lines import _hash
from fedbone.privacy.approvals import ApprovalsList
from fedbone.privacy.errors import ApprovalsTampered, StudyApprovalError
from fedbone.privacy.study_approval import StudyApproval
from fedbone.security.site_secret import SiteSecret, create_site_secret


def _approval(name: str = "bm-study") -> StudyApproval:
    return StudyApproval.of(StudyConfig(name=name), "f" * 64)


@pytest.fixture
def secret(tmp_path: Path) -> SiteSecret:
    return create_site_secret(tmp_path / "secret" / "site-secret.key")


def _list(tmp_path: Path, secret: SiteSecret) -> ApprovalsList:
    return ApprovalsList(tmp_path / "site" / "approvals.jsonl", secret)


def _lines(approvals: ApprovalsList) -> list[dict[str, object]]:
    return [json.loads(line) for line in approvals.path.read_text().splitlines()]


def test_an_approval_survives_reopening_the_list(
    tmp_path: Path, secret: SiteSecret
) -> None:
    approval = _approval()
    _list(tmp_path, secret).approve(approval, by="dpo")

    reopened = _list(tmp_path, secret)
    record = reopened.find(approval.approval_sha256)

    assert record is not None and record.active
    assert record.approval == approval
    assert record.approved_by == "dpo"
    assert record.approval.phases == ("census", "train", "validate", "report")


def test_each_line_is_chained_and_sealed(tmp_path: Path, secret: SiteSecret) -> None:
    approvals = _list(tmp_path, secret)
    approvals.approve(_approval("one"), by="dpo")
    approvals.approve(_approval("two"), by="dpo")

    first, second = _lines(approvals)

    assert first["prev"] == "0" * 64 and second["prev"] == first["sha256"]
    assert [first["seq"], second["seq"]] == [0, 1]
    assert all(len(str(line["mac"])) == 64 for line in (first, second))
    assert first["study-file-sha256"] == "f" * 64
    head = secret.path.with_name(f"{secret.path.name}.approvals.jsonl.head")
    assert json.loads(head.read_text())["count"] == 2


def test_approving_a_standing_approval_again_records_nothing(
    tmp_path: Path, secret: SiteSecret
) -> None:
    approvals = _list(tmp_path, secret)
    first = approvals.approve(_approval(), by="dpo")

    again = approvals.approve(_approval(), by="someone-else")

    assert again == first
    assert len(_lines(approvals)) == 1


def test_revoking_appends_a_line_and_the_approval_no_longer_stands(
    tmp_path: Path, secret: SiteSecret
) -> None:
    approvals = _list(tmp_path, secret)
    approval = _approval()
    approvals.approve(approval, by="dpo")

    revoked = approvals.revoke(approval.approval_sha256[:8], by="ciso")

    assert not revoked.active and revoked.revoked_by == "ciso"
    assert [line["action"] for line in _lines(approvals)] == ["approve", "revoke"]
    record = _list(tmp_path, secret).find(approval.approval_sha256)
    assert record is not None and not record.active
    reapproved = approvals.approve(approval, by="dpo")
    assert reapproved.active and len(_lines(approvals)) == 3


@pytest.mark.parametrize(
    ("sha", "code"),
    [("0123abcd", "unknown-approval"), ("ab", "unknown-approval")],
)
def test_revoking_what_was_never_approved_is_refused(
    tmp_path: Path, secret: SiteSecret, sha: str, code: str
) -> None:
    approvals = _list(tmp_path, secret)
    approvals.approve(_approval(), by="dpo")

    with pytest.raises(StudyApprovalError) as raised:
        approvals.revoke(sha, by="ciso")

    assert raised.value.codes == [code]
    assert len(_lines(approvals)) == 1


def test_revoking_twice_is_refused(tmp_path: Path, secret: SiteSecret) -> None:
    approvals = _list(tmp_path, secret)
    sha = approvals.approve(_approval(), by="dpo").approval.approval_sha256
    approvals.revoke(sha, by="ciso")

    with pytest.raises(StudyApprovalError) as raised:
        approvals.revoke(sha, by="ciso")

    assert raised.value.codes == ["not-approved"]


def _rewrite(approvals: ApprovalsList, index: int, **changes: object) -> None:
    lines = _lines(approvals)
    lines[index].update(changes)
    approvals.path.write_text("".join(json.dumps(line) + "\n" for line in lines))


@pytest.mark.parametrize(
    ("tamper", "code"),
    [
        (lambda a: _rewrite(a, 0, by="someone"), "entry-hash-mismatch"),
        (
            lambda a: a.path.write_text(a.path.read_text().splitlines()[0] + "\n"),
            "head-mismatch",
        ),
        (lambda a: a.path.unlink(), "approvals-missing"),
        (lambda a: a.path.write_text("not json\n"), "unreadable-line"),
    ],
    ids=["edited", "revocation-cut-off", "deleted", "garbage"],
)
def test_a_tampered_list_is_refused_with_how_to_recover(
    tmp_path: Path,
    secret: SiteSecret,
    tamper: Callable[[ApprovalsList], object],
    code: str,
) -> None:
    approvals = _list(tmp_path, secret)
    sha = approvals.approve(_approval(), by="dpo").approval.approval_sha256
    approvals.revoke(sha, by="ciso")
    tamper(approvals)

    with pytest.raises(ApprovalsTampered) as raised:
        _list(tmp_path, secret).records()

    assert code in raised.value.codes
    assert "backup" in str(raised.value)


def test_a_line_rewritten_and_rechained_without_the_key_is_refused(
    tmp_path: Path, secret: SiteSecret
) -> None:
    approvals = _list(tmp_path, secret)
    sha = approvals.approve(_approval(), by="dpo").approval.approval_sha256
    approvals.revoke(sha, by="ciso")
    lines = _lines(approvals)
    # drop the revocation from its line: hashes and chain made consistent
    lines[1]["action"] = "approve"
    lines[1].update(_terms(approvals))
    lines[1]["sha256"] = _hash(lines[1])
    approvals.path.write_text("".join(json.dumps(line) + "\n" for line in lines))

    with pytest.raises(ApprovalsTampered) as raised:
        _list(tmp_path, secret).records()

    assert "entry-mac-invalid" in raised.value.codes


def _terms(approvals: ApprovalsList) -> dict[str, object]:
    first = _lines(approvals)[0]
    keys = ("phases", "kinds", "dp", "validation-bins", "statistics-bins")
    keys += ("study-file-sha256",)
    return {key: first[key] for key in keys}


def test_another_sites_secret_does_not_verify_the_list(
    tmp_path: Path, secret: SiteSecret
) -> None:
    approvals = _list(tmp_path, secret)
    approvals.approve(_approval(), by="dpo")
    other = create_site_secret(tmp_path / "other" / "site-secret.key")
    # the other site's head, written as its own, for the same list file
    ApprovalsList(tmp_path / "copy" / "approvals.jsonl", other).approve(
        _approval("decoy"), by="x"
    )
    (tmp_path / "copy" / "approvals.jsonl").write_bytes(approvals.path.read_bytes())

    with pytest.raises(ApprovalsTampered) as raised:
        ApprovalsList(tmp_path / "copy" / "approvals.jsonl", other).records()

    assert "entry-mac-invalid" in raised.value.codes


def test_a_line_written_before_a_crash_beyond_the_head_is_kept(
    tmp_path: Path, secret: SiteSecret
) -> None:
    approvals = _list(tmp_path, secret)
    approvals.approve(_approval("one"), by="dpo")
    head = approvals.lines.head_path
    saved = head.read_bytes()
    approvals.approve(_approval("two"), by="dpo")
    head.write_bytes(saved)  # the crash: the head write never happened

    studies = [r.approval.study for r in _list(tmp_path, secret).records()]

    assert studies == ["one", "two"]


def test_every_phase_has_its_message_kinds() -> None:
    from fedbone.federation import kinds
    from fedbone.privacy.study_approval import PHASE_KINDS, SECURE_AGGREGATION_KINDS

    listed = {kind for phase_kinds in PHASE_KINDS.values() for kind in phase_kinds}

    assert set(PHASE_KINDS) == set(PHASES)
    assert listed <= set(kinds.REPLY_SPECS)
    assert SECURE_AGGREGATION_KINDS == kinds.SECURE_AGGREGATION_KINDS
