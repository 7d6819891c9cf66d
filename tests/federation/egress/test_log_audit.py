from __future__ import annotations

import argparse
import io
import json
import threading
from pathlib import Path

import pytest

from fedbone.cli.egress_log import add_egress_log_parser, run_egress_log
from fedbone.federation.egress.guard import EgressLog
from fedbone.federation.egress.log import EgressLogTampered
from fedbone.federation.egress.log_audit import (
    audit_egress_log,
    summarise_egress_log,
    verify_egress_log,
)
from fedbone.security.site_secret import SiteSecret, create_site_secret

DIGEST = "ab" * 32


def _write_log(path: Path, secret: SiteSecret | None = None) -> EgressLog:
    """Four replies over two runs, as the egress mod logs them."""
    log = EgressLog(path, secret)
    for run_name, phase, kind, n_bytes, verdict in [
        ("study-1", "census", "query.census", 100, "passed"),
        ("study-1", "train", "train", 5000, "passed"),
        ("study-1", "train", "train", 7000, "refused"),
        ("study-2", "validate", "query.validate", 300, "error"),
    ]:
        log.append(
            run_id=1 if run_name == "study-1" else 2,
            run_name=run_name,
            phase=phase,
            kind=kind,
            n_bytes=n_bytes,
            sha256=DIGEST,
            verdict=verdict,
            reason=verdict,
        )
    return log


def _site_yaml(folder: Path) -> Path:
    (folder / "manifest.csv").write_text("scan_id\n")
    path = folder / "site.yaml"
    path.write_text(
        "site: {id: vienna}\ndata: {manifest: manifest.csv}\n"
        "egress_log: logs/egress.jsonl\n"
    )
    return path


def _site_with_log(folder: Path) -> tuple[Path, EgressLog]:
    """A site YAML, its secret (default path) and a keyed log of four replies."""
    config = _site_yaml(folder)
    secret = create_site_secret(folder / "site-secret.key")
    return config, _write_log(folder / "logs" / "egress.jsonl", secret)


def _edit_line(path: Path, number: int, **changes: object) -> None:
    lines = path.read_text().splitlines()
    entry = json.loads(lines[number - 1])
    entry.update(changes)
    lines[number - 1] = json.dumps({k: v for k, v in entry.items() if v is not None})
    path.write_text("\n".join(lines) + "\n")


def _run(*argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    add_egress_log_parser(parser.add_subparsers())
    out = io.StringIO()
    return run_egress_log(parser.parse_args(["egress-log", *argv]), out), out.getvalue()


def test_a_log_written_by_egress_log_verifies_and_is_summarised(
    tmp_path: Path,
) -> None:
    log = _write_log(tmp_path / "egress.jsonl")

    problems = verify_egress_log(log.path)
    summary = summarise_egress_log(log.path)

    assert problems == []
    assert summary.entries == 4
    assert summary.bytes_total == 12400
    assert summary.bytes_sent == 5100  # refused and error content never left
    assert summary.by_verdict == {"passed": 2, "refused": 1, "error": 1}
    assert summary.by_kind["train"] == 2
    assert summary.by_phase == {"census": 1, "train": 2, "validate": 1}
    assert summary.by_run == {"study-1": 3, "study-2": 1}


def test_summary_of_one_run(tmp_path: Path) -> None:
    log = _write_log(tmp_path / "egress.jsonl")

    by_name = summarise_egress_log(log.path, run="study-2")
    by_id = summarise_egress_log(log.path, run="1")

    assert by_name.entries == 1 and by_name.by_verdict == {"error": 1}
    assert by_id.entries == 3


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"verdict": "leaked"}, "unknown-verdict"),
        ({"sha256": "abc"}, "bad-sha256"),
        ({"bytes": None}, "missing-field"),
        ({"bytes": "100"}, "wrong-type"),
        ({"time": "yesterday"}, "bad-time"),
        ({"time": "2000-01-01T00:00:00.000+00:00"}, "time-goes-back"),
    ],
)
def test_each_kind_of_bad_line_is_reported_at_its_line(
    tmp_path: Path, changes: dict[str, object], code: str
) -> None:
    log = _write_log(tmp_path / "egress.jsonl")
    _edit_line(log.path, 3, **changes)

    problems = verify_egress_log(log.path)

    # the edit also breaks the hash chain at the next line
    assert [(p.code, p.where) for p in problems] == [
        (code, "line 3"),
        ("chain-broken", "line 4"),
    ]


def test_the_first_problem_names_the_first_bad_line(tmp_path: Path) -> None:
    log = _write_log(tmp_path / "egress.jsonl")
    with log.path.open("a") as stream:
        stream.write("{not json\n")
    _edit_line(log.path, 2, verdict="maybe")

    problems = verify_egress_log(log.path)

    assert [(p.code, p.where) for p in problems] == [
        ("unknown-verdict", "line 2"),
        ("chain-broken", "line 3"),
        ("not-json", "line 5"),
        ("head-mismatch", str(log.head_path)),  # line 5 is not an append
    ]


def test_a_missing_log_does_not_verify(tmp_path: Path) -> None:
    problems = verify_egress_log(tmp_path / "nowhere.jsonl")

    assert [p.code for p in problems] == ["missing-log"]


def test_command_prints_a_table_and_a_summary(tmp_path: Path) -> None:
    config, _ = _site_with_log(tmp_path)

    code, text = _run("--config", str(config), "--tail", "2")

    table = text.splitlines()
    assert code == 0
    assert table[0].split() == [
        "time", "run", "phase", "kind", "bytes", "sha256", "verdict"
    ]  # fmt: skip
    assert len([row for row in table[1:3] if DIGEST[:12] in row]) == 2
    assert "refused" in table[1] and "study-2" in table[2]
    assert "5100 bytes sent" in text and "verified" in text


def test_command_exits_1_and_lists_problems_when_the_log_is_bad(
    tmp_path: Path,
) -> None:
    config, log = _site_with_log(tmp_path)
    _edit_line(log.path, 4, sha256="0" * 63)

    code, text = _run("--config", str(config), "--json", "--run", "study-1")

    document = json.loads(text)
    assert code == 1
    assert document["verified"] is False
    assert document["problems"][0]["where"] == "line 4"
    assert [e["line"] for e in document["entries"]] == [1, 2, 3]


def test_a_keyed_log_verifies_with_its_secret_only(tmp_path: Path) -> None:
    # Prepare
    secret = create_site_secret(tmp_path / "site-secret.key")
    other = create_site_secret(tmp_path / "other-site.key")
    log = _write_log(tmp_path / "egress.jsonl", secret)

    # Execute
    audit = audit_egress_log(log.path, secret)
    with_other_key = verify_egress_log(log.path, other)

    # Assert
    assert audit.verified and audit.keyed
    assert len(audit.entries) == 4
    assert [e["seq"] for e in log.entries()] == [0, 1, 2, 3]
    assert all(len(e["mac"]) == 64 for e in log.entries())
    assert log.verify() == []
    assert "entry-mac-invalid" in [p.code for p in with_other_key]


def test_an_unkeyed_audit_says_so(tmp_path: Path) -> None:
    # Prepare
    log = _write_log(tmp_path / "egress.jsonl")

    # Execute
    audit = audit_egress_log(log.path)

    # Assert
    assert audit.verified
    assert audit.keyed is False


def test_a_keyed_line_edited_and_rechained_fails_its_mac(tmp_path: Path) -> None:
    # Prepare: edit the last line (no next line to break) keeping prev and seq
    secret = create_site_secret(tmp_path / "site-secret.key")
    log = _write_log(tmp_path / "egress.jsonl", secret)

    # Execute
    _edit_line(log.path, 4, verdict="passed")

    # Assert
    codes = [(p.code, p.where) for p in verify_egress_log(log.path, secret)]
    assert ("entry-mac-invalid", "line 4") in codes
    assert "head-mismatch" in [code for code, _ in codes]


def test_a_cut_off_tail_is_detected_and_refuses_the_next_append(
    tmp_path: Path,
) -> None:
    # Prepare
    secret = create_site_secret(tmp_path / "site-secret.key")
    log = _write_log(tmp_path / "egress.jsonl", secret)
    lines = log.path.read_text().splitlines()

    # Execute
    log.path.write_text("\n".join(lines[:3]) + "\n")

    # Assert: the audit names the head, and the log is never sealed again
    assert [p.code for p in verify_egress_log(log.path, secret)] == ["head-mismatch"]
    with pytest.raises(EgressLogTampered) as caught:
        _write_log(log.path, secret)
    assert caught.value.codes == ["head-mismatch"]
    assert len(log.path.read_text().splitlines()) == 3


def test_a_deleted_log_whose_head_remains_is_named(tmp_path: Path) -> None:
    # Prepare
    secret = create_site_secret(tmp_path / "site-secret.key")
    log = _write_log(tmp_path / "egress.jsonl", secret)

    # Execute
    log.path.unlink()

    # Assert
    problems = verify_egress_log(log.path, secret)
    assert [p.code for p in problems] == ["missing-log"]
    assert "records 4 lines" in problems[0].message
    with pytest.raises(EgressLogTampered):
        log.check_tail()


def test_a_line_appended_before_a_crash_is_accepted(tmp_path: Path) -> None:
    # Prepare: the head as it was before the last append
    secret = create_site_secret(tmp_path / "site-secret.key")
    log = _write_log(tmp_path / "egress.jsonl", secret)
    saved_head = log.head_path.read_bytes()
    log.append(
        run_id=3,
        run_name="study-3",
        phase="census",
        kind="query.census",
        n_bytes=10,
        sha256=DIGEST,
        verdict="passed",
        reason="passed",
    )
    log.head_path.write_bytes(saved_head)

    # Execute
    problems = verify_egress_log(log.path, secret)
    log.check_tail()
    _write_log(log.path, secret)

    # Assert
    assert problems == []
    assert verify_egress_log(log.path, secret) == []
    assert len(log.entries()) == 9


def test_concurrent_appends_keep_one_chain(tmp_path: Path) -> None:
    # Prepare: four log objects on one file, as four site processes
    secret = create_site_secret(tmp_path / "site-secret.key")
    path = tmp_path / "egress.jsonl"

    def write() -> None:
        for _ in range(3):
            _write_log(path, secret)

    # Execute
    threads = [threading.Thread(target=write) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Assert
    assert verify_egress_log(path, secret) == []
    assert [e["seq"] for e in EgressLog(path).entries()] == list(range(48))


def test_command_refuses_a_site_without_its_secret(tmp_path: Path) -> None:
    # Prepare
    config, _ = _site_with_log(tmp_path)
    (tmp_path / "site-secret.key").unlink()

    # Execute
    code, text = _run("--config", str(config), "--json")

    # Assert
    document = json.loads(text)
    assert code == 1
    assert document["problems"][0]["code"] == "missing-secret"
    assert document["keyed"] is False
