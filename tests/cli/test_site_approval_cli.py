"""``fedbone site approve``, ``revoke`` and ``status``, and ``init``'s default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from adversary import send, write_cohort_cache, write_site
from federation_messages import request
from flwr.app import ConfigRecord, RecordDict
from tiny_study import write_tiny_study

from fedbone.cli.main import main
from fedbone.config.site import load_site_config
from fedbone.config.study import load_study_config


@pytest.fixture
def study_yaml(tmp_path: Path) -> Path:
    return write_tiny_study(
        tmp_path / "centre",
        "bm-dp",
        ["census", "train", "validate", "report"],
        model={"architecture": "small-cnn", "norm": "group"},
        validation={"bins": 1000},
        dp={"classifier": {"target_epsilon": 8.0}, "statistics": {"epsilon": 1.0}},
    )


@pytest.fixture
def site_yaml(tmp_path: Path) -> Path:
    cache = write_cohort_cache(tmp_path / "cohort", n_patients=12)
    return write_site(tmp_path / "site", cache, policy={"require_study_approval": True})


def test_approve_shows_what_the_study_asks_and_records_it(
    study_yaml: Path, site_yaml: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Execute
    code = main(
        ["site", "approve", str(study_yaml), "--config", str(site_yaml), "--by", "dpo"]
    )

    # Assert
    out = capsys.readouterr().out
    sha = load_study_config(study_yaml).approval_sha256()
    assert code == 0
    assert f"approval sha256:   {sha}" in out
    assert "train       train, evaluate" in out
    assert "validate    query.validate, query.paired_components" in out
    assert "classifier DP-SGD target epsilon 8" in out
    assert "noisy statistics epsilon 1" in out
    assert "at most 1000 bins" in out
    assert "approved by dpo" in out
    [line] = load_site_config(site_yaml).approvals_file.read_text().splitlines()
    assert json.loads(line)["approval-sha256"] == sha


def test_a_dry_run_records_nothing(
    study_yaml: Path, site_yaml: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["site", "approve", str(study_yaml), "--config", str(site_yaml), "--dry-run"]
    )

    assert code == 0 and "nothing recorded" in capsys.readouterr().out
    assert not load_site_config(site_yaml).approvals_file.exists()


def test_status_shows_approvals_spending_and_recent_egress(
    study_yaml: Path, site_yaml: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: one approved census answered, a second study approved and revoked
    main(["site", "approve", str(study_yaml), "--config", str(site_yaml)])
    sha = load_study_config(study_yaml).approval_sha256()
    config = {"phase": "census", "run-name": "bm-dp-1", "study-approval-sha256": sha}
    reply = send(
        request("query.census", RecordDict({"config": ConfigRecord(config)})),
        site_yaml,
    )
    other = write_tiny_study(study_yaml.parent, "other", ["census"], filename="o.yaml")
    main(["site", "approve", str(other), "--config", str(site_yaml)])
    other_sha = load_study_config(other).approval_sha256()
    assert main(["site", "revoke", other_sha[:10], "--config", str(site_yaml)]) == 0
    capsys.readouterr()

    # Execute
    code = main(["site", "status", "--config", str(site_yaml)])

    # Assert
    out = capsys.readouterr().out
    assert not reply.has_error()
    assert code == 0, out
    assert "study approval: required" in out
    assert f"active   bm-dp  {sha[:16]}" in out
    assert f"revoked  other  {other_sha[:16]}" in out
    assert "no budget" in out and "epsilon spent 0 of -" in out
    assert "1 entries" in out and "query.census  passed" in out


def test_status_exits_1_when_the_approvals_list_was_tampered_with(
    study_yaml: Path, site_yaml: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["site", "approve", str(study_yaml), "--config", str(site_yaml)])
    approvals = load_site_config(site_yaml).approvals_file
    approvals.write_text(approvals.read_text().replace("bm-dp", "bm-xx"))

    code = main(["site", "status", "--config", str(site_yaml)])

    assert code == 1
    assert "NOT VERIFIED" in capsys.readouterr().out


def test_revoking_an_unknown_approval_fails_with_a_clear_error(
    site_yaml: Path, caplog: pytest.LogCaptureFixture
) -> None:
    code = main(["site", "revoke", "0123456789ab", "--config", str(site_yaml)])

    assert code == 2
    assert "unknown-approval" in caplog.text


SITE_YAML = """\
site:
  id: vienna
data:
  manifest: manifest.csv
policy:              # what the centre may ask
  max_histogram_bins: 2000   # a comment that stays
egress_log: egress.jsonl
"""


def test_init_requires_approval_in_a_site_yaml_that_does_not_say(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "manifest.csv").write_text("scan_id\n")
    path = tmp_path / "site.yaml"
    path.write_text(SITE_YAML)

    code = main(["site", "init", "--config", str(path)])

    assert code == 0
    assert load_site_config(path).policy.require_study_approval
    assert "# a comment that stays" in path.read_text()
    assert "require_study_approval: true written" in capsys.readouterr().out


def test_init_keeps_an_explicit_false_and_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = write_site(
        tmp_path / "site", tmp_path / "cache", policy={"require_study_approval": False}
    )

    main(["site", "init", "--config", str(site)])

    assert not load_site_config(site).policy.require_study_approval
    assert "WARNING" in capsys.readouterr().out


def test_init_requires_approval_in_a_json_site_config(tmp_path: Path) -> None:
    site = write_site(tmp_path / "site", tmp_path / "cache")

    main(["site", "init", "--config", str(site)])

    assert load_site_config(site).policy.require_study_approval
