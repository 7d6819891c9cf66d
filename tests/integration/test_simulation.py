"""One whole study through Flower's simulation runtime: 3 tiny sites, 2 rounds."""

import json
from pathlib import Path

import pytest
from tiny_study import write_tiny_study

from fedbone.config.site import load_site_config
from fedbone.config.study import load_study_config
from fedbone.federation.egress.guard import EgressLog
from fedbone.privacy.approvals import open_site_approvals
from server.simulation import simulate_study

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("simulation")
    path = write_tiny_study(
        root,
        "tiny",
        ["census", "train", "validate", "outcomes", "report"],
        study={"baselines": ["local", "pooled"]},
        training={"rounds": 2},
        validation={"n_bootstrap": 100},
        outcomes={"resolution_days": 182},
        simulation={"outcome_sites": ["C"]},
    )

    outcome = simulate_study(load_study_config(path))

    return outcome.run_dir, root / "sites"


def test_the_study_writes_its_results_and_report(finished: tuple[Path, Path]) -> None:
    run_dir, _ = finished

    results = json.loads((run_dir / "results.json").read_text())
    census = json.loads((run_dir / "census.json").read_text())
    rounds = json.loads((run_dir / "rounds.json").read_text())

    assert set(results["pooled"]) == {"federated", "local-A", "local-B", "pooled"}
    assert results["rejected"] == [] and results["site_errors"] == []
    assert {row["site"] for row in results["per_site"]} == {"A", "B", "C"}
    assert [(s["site"], s["role"]) for s in census] == [
        ("A", "train"),
        ("B", "train"),
        ("C", "validate-only"),
    ]
    federated_train = [
        r for r in rounds if r["model"] == "federated" and r["kind"] == "train"
    ]
    assert sorted({r["round"] for r in federated_train}) == [1, 2]
    assert {r["site"] for r in federated_train} == {"A", "B"}  # C never trains
    for name in (
        "report.html",
        "roc_pooled.png",
        "per_site.csv",
        "pooled.csv",
        "models/federated.npz",
        "config.resolved.json",
    ):
        assert (run_dir / name).is_file(), name


def test_every_outgoing_message_passed_the_guard_and_was_logged(
    finished: tuple[Path, Path],
) -> None:
    _, sites = finished

    logs = {
        site: EgressLog(sites / f"site-{site}" / "egress-log.jsonl").entries()
        for site in "ABC"
    }

    kinds = {site: {e["kind"] for e in entries} for site, entries in logs.items()}
    assert all(e["verdict"] == "passed" for es in logs.values() for e in es)
    assert kinds["A"] >= {"query.census", "train", "evaluate", "query.validate"}
    # A tiny site's small class withholds its histograms (issue #17): it is
    # then not asked for paired DeLong components.
    [validated] = [e for e in logs["A"] if e["kind"] == "query.validate"]
    withheld = "suppressed" in validated["reason"]
    assert ("query.paired_components" in kinds["A"]) is not withheld
    assert "train" not in kinds["C"]
    assert "query.outcomes" in kinds["C"] and "query.outcomes" in kinds["A"]
    assert all(
        len(e["sha256"]) == 64 and e["bytes"] > 0 for es in logs.values() for e in es
    )


def test_the_outcome_analysis_reports_every_site_and_why(
    finished: tuple[Path, Path],
) -> None:
    run_dir, sites = finished

    outcomes = json.loads((run_dir / "outcomes.json").read_text())
    status = {
        (row["site"], row["part"]): row["status"] for row in outcomes["site-status"]
    }

    # Only C has follow-up; its scored cohort stayed in its work folder.
    assert status[("A", "counts")] == status[("B", "counts")] == "no-follow-up"
    assert status[("C", "counts")] != "no-follow-up"
    assert list((sites / "site-C" / "work").rglob("outcome-cohort.npz"))
    if status[("C", "counts")] == "included":
        assert outcomes["endpoints"]["death"]["sites"] == ["C"]
        assert (run_dir / "km_death.png").is_file()


def test_every_site_required_and_recorded_the_studys_approval(
    finished: tuple[Path, Path],
) -> None:
    _, sites = finished

    configs = [load_site_config(sites / f"site-{s}" / "site.yaml") for s in "ABC"]
    approvals = [open_site_approvals(config).records() for config in configs]

    assert all(config.policy.require_study_approval for config in configs)
    for records in approvals:
        [record] = records
        assert (record.approval.study, record.approved_by) == ("tiny", "simulation")
        assert record.active
