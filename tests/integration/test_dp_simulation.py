"""A DP study through Flower's simulation runtime: budgets, ledgers, ε reported.

A and B train the federated model and their local baselines with DP-SGD under
a site budget that covers the federated model but not both: the second model
each site is asked for is refused (budget-exceeded), reported, and the study
carries on (``on_budget_exhausted: continue``). Validation runs under
``dp.statistics``: every site sends only noisy histograms, charged to its
ledger, and the server computes the per-site figures from them. The outcome
analysis at C (the site with follow-up) releases only noisy survival counts,
charged to C's ledger too, and no Cox derivatives.
"""

import json
from pathlib import Path

import pytest
from tiny_study import write_tiny_study

from fedbone.config.site import load_site_config
from fedbone.config.study import load_study_config
from fedbone.federation.egress.guard import EgressLog
from fedbone.privacy.site_spending import SGD_STREAM, open_site_ledger
from fedbone.privacy.statistic_spending import STATISTICS_STREAM
from server.simulation import simulate_study

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("dp")
    path = write_tiny_study(
        root,
        "tiny-dp",
        ["census", "train", "validate", "outcomes", "report"],
        min_scans=40,
        study={"baselines": ["local"]},
        model={"architecture": "small-cnn", "norm": "group"},
        training={"augment": False},
        dp={
            "classifier": {"noise_multiplier": 1.0, "clipping": "hooks"},
            "statistics": {"epsilon": 0.5},
            "on_budget_exhausted": "continue",
        },
        validation={"n_bootstrap": 50},
        outcomes={"resolution_days": 182},
        simulation={"site_epsilon": 4.0, "outcome_sites": ["C"]},
    )

    outcome = simulate_study(load_study_config(path))

    return outcome.run_dir, root / "sites"


def test_each_site_reports_its_epsilon_within_its_budget(
    finished: tuple[Path, Path],
) -> None:
    run_dir, sites = finished

    privacy = json.loads((run_dir / "privacy.json").read_text())

    assert {"A", "B"} <= set(privacy)
    for site in "AB":
        config = load_site_config(sites / f"site-{site}" / "site.yaml")
        ledger = open_site_ledger(config, n_training=1)
        spent = ledger.spent()
        assert 0 < privacy[site]["epsilon"] <= spent.epsilon <= 4.0
        sgd = spent.per_stream[SGD_STREAM].epsilon
        assert sgd == pytest.approx(privacy[site]["epsilon"])
        assert ledger.verify()


def test_models_beyond_a_budget_are_refused_and_reported(
    finished: tuple[Path, Path],
) -> None:
    run_dir, _ = finished

    results = json.loads((run_dir / "results.json").read_text())

    assert "federated" in results["pooled"]
    refused = {(r["site"], r["model"]) for r in results["budget_refusals"]}
    assert refused and {model for _, model in refused} <= {"local-A", "local-B"}
    skipped = {m["model"] for m in results["skipped_models"]}
    assert skipped == {model for _, model in refused}
    assert (run_dir / "report.html").read_text().count("budget exhausted") >= 1


def test_no_site_released_weights_without_recording_them(
    finished: tuple[Path, Path],
) -> None:
    _, sites = finished

    for site in "AB":
        log = EgressLog(sites / f"site-{site}" / "egress-log.jsonl").entries()
        config = load_site_config(sites / f"site-{site}" / "site.yaml")
        recorded = open_site_ledger(config, n_training=1).entries()
        released = [e for e in log if e["kind"] == "train" and e["verdict"] == "passed"]
        weights = [e for e in recorded if e.stream == SGD_STREAM]
        assert len(released) == len(weights) > 0


def test_validation_released_only_noisy_histograms_charged_to_ledgers(
    finished: tuple[Path, Path],
) -> None:
    run_dir, sites = finished

    results = json.loads((run_dir / "results.json").read_text())
    privacy = results["privacy"]

    answered = {row["site"] for row in results["per_site"]}
    assert "C" in answered and results["pooled"]["federated"]["n_positive"] >= 0
    for site in answered:
        config = load_site_config(sites / f"site-{site}" / "site.yaml")
        ledger = open_site_ledger(config, n_training=1)
        statistics = [
            e
            for e in ledger.entries()
            if e.stream == STATISTICS_STREAM and e.kind == "validation-histograms"
        ]
        assert [e.mechanism for e in statistics] == ["laplace"]
        assert statistics[0].epsilon == pytest.approx(0.5)
        assert privacy[site]["epsilon-total"] == pytest.approx(ledger.spent().epsilon)
        log = EgressLog(sites / f"site-{site}" / "egress-log.jsonl").entries()
        validate = [e for e in log if e["kind"] == "query.validate"]
        assert [e["verdict"] for e in validate] == ["passed"]
    assert not any(
        key.startswith("pooled_pairs") and results.get(key) for key in results
    )


def test_outcomes_released_only_noisy_counts_charged_to_the_ledger(
    finished: tuple[Path, Path],
) -> None:
    run_dir, sites = finished

    outcomes = json.loads((run_dir / "outcomes.json").read_text())
    config = load_site_config(sites / "site-C" / "site.yaml")
    ledger = open_site_ledger(config, n_training=1)
    log = EgressLog(sites / "site-C" / "egress-log.jsonl").entries()
    privacy = json.loads((run_dir / "privacy.json").read_text())

    counted = [e for e in ledger.entries() if e.kind == "outcome-counts"]
    assert [e.epsilon for e in counted] == [pytest.approx(0.5)]
    assert privacy["C"]["statistics-epsilon"] == pytest.approx(1.0)
    assert outcomes["dp"] is True
    assert outcomes["endpoints"]["death"]["sites"] == ["C"]
    assert "cox" not in outcomes["endpoints"]["death"]
    kinds = [(e["kind"], e["verdict"]) for e in log if "outcome" in e["kind"]]
    assert kinds == [("query.outcomes", "passed")]
