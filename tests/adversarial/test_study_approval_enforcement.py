"""Site approval of studies, through the real ClientApp (issue #20).

A site with ``policy.require_study_approval: true`` answers only studies it
approved (``fedbone site approve``), within what it approved: anything else
gets an error reply naming the site and the reason, and nothing but that
``error`` line is logged as leaving. The approvals live on disk, so they hold
for a restarted site.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from adversary import egress_entries, message, model, send, write_cohort_cache
from adversary import write_site as write_adversary_site
from flwr.app import Message
from flwr.common.constant import ErrorCode

from fedbone.config.privacy import DpPhaseSettings, DpSettings
from fedbone.config.site import load_site_config
from fedbone.config.study import ModelSettings, StudyConfig, ValidationSettings
from fedbone.federation.records import arrays_to_record
from fedbone.federation.site_context import _site_cached
from fedbone.privacy.approvals import open_site_approvals
from fedbone.privacy.study_approval import StudyApproval

STUDY = StudyConfig(
    name="study",
    phases=("census", "validate", "report"),
    model=ModelSettings(architecture="small-cnn", norm="group"),
    validation=ValidationSettings(bins=1000),
)
DP_STUDY = StudyConfig(
    name="study",
    phases=("census", "train", "report"),
    model=ModelSettings(architecture="small-cnn", norm="group"),
    dp=DpSettings(classifier=DpPhaseSettings(target_epsilon=8.0)),
)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cohort_cache(tmp_path_factory.mktemp("cohort"), n_patients=12)


def write_site(folder: Path, cache_dir: Path) -> Path:
    return write_adversary_site(
        folder, cache_dir, policy={"require_study_approval": True}
    )


def approve(site_yaml: Path, study: StudyConfig = STUDY) -> StudyApproval:
    approval = StudyApproval.of(study)
    open_site_approvals(load_site_config(site_yaml)).approve(approval, by="dpo")
    return approval


def request(
    kind: str, phase: str, study: StudyConfig = STUDY, **config: Any
) -> Message:
    """A request of ``study`` (its approval sha256 and a run of its name)."""
    values = {"study-approval-sha256": study.approval_sha256(), **config}
    records = {}
    if kind in ("train", "query.validate"):
        records = {"arrays" if kind == "train" else "model-federated": model()}
    return message(
        kind,
        phase,
        {name: arrays_to_record(arrays) for name, arrays in records.items()},
        **{"run-name": "study-20250101-120000", **values},
    )


def refusal(reply: Message) -> str:
    assert reply.has_error(), "the site answered"
    assert reply.error.code == ErrorCode.MOD_FAILED_PRECONDITION
    return str(reply.error.reason)


VALIDATION = {"split": "test", "bins": 1000, "n-bootstrap": 10, "threshold": 0.5}


@pytest.mark.parametrize(
    ("kind", "phase", "config"),
    [
        ("query.census", "census", {}),
        ("query.validate", "validate", VALIDATION),
        ("train", "train", {"rounds": 1}),
    ],
)
def test_an_unapproved_study_is_refused_and_only_the_error_leaves(
    tmp_path: Path, cache_dir: Path, kind: str, phase: str, config: dict[str, Any]
) -> None:
    # Prepare
    site = write_site(tmp_path / "site", cache_dir)

    # Execute
    reply = send(request(kind, phase, **config), site)

    # Assert
    reason = refusal(reply)
    assert "site 'hospital' refused" in reason
    assert "[study-not-approved]" in reason
    assert "fedbone site approve <study.yaml>" in reason
    [entry] = egress_entries(site)
    assert entry["verdict"] == "error" and "study-not-approved" in entry["reason"]
    assert not (tmp_path / "site" / "work" / "runs").exists()


def test_a_request_naming_no_study_is_refused(tmp_path: Path, cache_dir: Path) -> None:
    site = write_site(tmp_path / "site", cache_dir)
    approve(site)

    reply = send(message("query.census", "census"), site)

    assert "study-approval-sha256 missing" in refusal(reply)


def test_an_approved_study_is_answered(tmp_path: Path, cache_dir: Path) -> None:
    site = write_site(tmp_path / "site", cache_dir)
    approve(site)

    reply = send(request("query.census", "census"), site)

    assert not reply.has_error()
    assert reply.content.config_records["site"]["site-id"] == "hospital"
    assert [e["verdict"] for e in egress_entries(site)] == ["passed"]


@pytest.mark.parametrize(
    ("kind", "phase", "study", "config", "where"),
    [
        ("train", "train", STUDY, {"rounds": 1}, "phase"),
        ("query.umap", "validate", STUDY, {}, "kind"),
        ("query.validate", "validate", STUDY, {**VALIDATION, "bins": 2000}, "bins"),
        (
            "query.census",
            "census",
            STUDY,
            {"run-name": "another-study-1"},
            "run-name",
        ),
        (
            "train",
            "train",
            DP_STUDY,
            {"rounds": 1, "dp-target-epsilon": 50.0},
            "dp-target-epsilon",
        ),
        ("train", "train", DP_STUDY, {"rounds": 1}, "dp-target-epsilon"),
    ],
    ids=["phase", "kind", "bins", "run-name", "epsilon", "dp-dropped"],
)
def test_a_request_beyond_the_approval_is_refused_before_any_work(
    tmp_path: Path,
    cache_dir: Path,
    kind: str,
    phase: str,
    study: StudyConfig,
    config: dict[str, Any],
    where: str,
) -> None:
    site = write_site(tmp_path / "site", cache_dir)
    approve(site, study)

    reply = send(request(kind, phase, study, **config), site)

    reason = refusal(reply)
    assert f"[not-in-approved-study] {where}:" in reason
    [entry] = egress_entries(site)
    assert entry["verdict"] == "error"
    assert not (tmp_path / "site" / "work" / "runs").exists()


def test_the_approval_holds_for_a_restarted_site_and_a_revocation_too(
    tmp_path: Path, cache_dir: Path
) -> None:
    site = write_site(tmp_path / "site", cache_dir)
    approval = approve(site)
    _site_cached.cache_clear()  # a new process builds its Site from disk

    answered = send(request("query.census", "census"), site)
    open_site_approvals(load_site_config(site)).revoke(
        approval.approval_sha256, by="dpo"
    )
    _site_cached.cache_clear()
    refused = send(request("query.census", "census"), site)

    assert not answered.has_error()
    assert "revoked its approval" in refusal(refused)
    assert [e["verdict"] for e in egress_entries(site)] == ["passed", "error"]


def test_a_tampered_approvals_list_refuses_every_study(
    tmp_path: Path, cache_dir: Path
) -> None:
    site = write_site(tmp_path / "site", cache_dir)
    approve(site)
    approvals = load_site_config(site).approvals_file
    approvals.write_text(approvals.read_text().replace('"dpo"', '"someone"'))

    reply = send(request("query.census", "census"), site)

    assert "[approvals-unverified]" in refusal(reply)
    assert str(approvals) not in reply.error.reason  # the detail stays at the site


def test_a_site_that_does_not_require_approval_answers_any_study(
    tmp_path: Path, cache_dir: Path
) -> None:
    site = write_adversary_site(tmp_path / "site", cache_dir)

    reply = send(request("query.census", "census"), site)

    assert not reply.has_error()
