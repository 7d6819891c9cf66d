"""Secure aggregation through Flower's simulation runtime, one site dropping out.

Four phantom sites train (C and D made training sites). D has a privacy
budget, so it refuses every round's non-private training: under secure
aggregation it answers the keys and shares stages and then drops out before
sending its masked input. The centre must remove D's pairwise masks from the
others' inputs and end with the same model, to fixed-point precision, as
plain FedAvg over A, B and C (the same study without secure aggregation,
where D refuses its plain training rounds).
"""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from deployment_cluster import make_training_site
from tiny_study import write_tiny_study

import server.simulation as simulation
from fedbone.config.site import load_site_config, write_site_config
from fedbone.config.study import load_study_config
from fedbone.federation.egress.guard import EgressLog
from fedbone.federation.kinds import SECURE_AGGREGATION_KINDS
from fedbone.simulation.sites import approve_at_sites, prepare_simulated_sites
from server.simulation import SimulationOutcome, simulate_study

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROUNDS = 1
#: fixed point (3 sites x 2^-25, divided by their examples) plus float32 rounding
#: of weights near 1; a second round would add training's own float noise
ATOL = 1e-6
SITES = ["A", "B", "C", "D"]


def _make_training_site(site_dir: Path) -> None:
    """Make a validate-only phantom site train; a patient's scans share a split."""
    make_training_site(site_dir)
    manifest = site_dir / "manifest.csv"
    with manifest.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields = list(reader.fieldnames or [])
        rows = list(reader)
    first: dict[str, str] = {}
    for row in rows:  # a repeat scan follows its patient's first scan
        row["split"] = first.setdefault(row["patient_id"], row["split"])
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _hand_made_federation(studies: list[Path], sites_dir: Path) -> list[Path]:
    """Four training sites, D with a privacy budget; both studies approved.

    The sites are fixed here (the simulation's own preparation would reset
    D's budget), so both studies run on them unchanged.
    """
    prepare_simulated_sites(load_study_config(studies[0]), approve=False)
    for site in "CD":
        _make_training_site(sites_dir / f"site-{site}")
    configs = prepare_simulated_sites(load_study_config(studies[0]), approve=False)
    d_config = load_site_config(configs[SITES.index("D")])
    budget = replace(d_config.privacy, epsilon_budget=50.0)
    write_site_config(
        replace(d_config, privacy=budget, source=None), configs[SITES.index("D")]
    )
    for study in studies:
        approve_at_sites(load_study_config(study), configs)
    return configs


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("secagg")
    paths = {
        name: write_tiny_study(
            root,
            name,
            ["census", "train"],
            filename=f"{name}.yaml",
            sites=SITES,
            training={
                "rounds": ROUNDS,
                "min_train_sites": 3,
                "augment": False,
                "secure_aggregation": name == "secure",
            },
            output={"runs_dir": str(root / "runs" / name)},
        )
        for name in ("secure", "plain")
    }
    configs = _hand_made_federation(list(paths.values()), root / "sites")
    patch = pytest.MonkeyPatch()
    patch.setattr(simulation, "prepare_simulated_sites", lambda study: configs)
    try:
        outcomes: dict[str, SimulationOutcome] = {
            name: simulate_study(load_study_config(path))
            for name, path in paths.items()
        }
    finally:
        patch.undo()
    return {"outcomes": outcomes, "sites": root / "sites"}


def test_the_secure_model_is_fedavg_over_the_sites_that_finished(
    studies: dict[str, Any],
) -> None:
    secure = studies["outcomes"]["secure"].run
    plain = studies["outcomes"]["plain"].run

    secure_model = secure.models["federated"]
    plain_model = plain.models["federated"]

    floats = [k for k, v in plain_model.items() if v.dtype.kind == "f"]
    floats = [k for k in floats if "num_batches_tracked" not in k]
    assert floats and set(secure_model) == set(plain_model)
    for key in floats:
        np.testing.assert_allclose(
            secure_model[key], plain_model[key], rtol=0, atol=ATOL, err_msg=key
        )


def test_each_secure_round_names_d_as_dropped_after_sharing_its_keys(
    studies: dict[str, Any],
) -> None:
    secure = studies["outcomes"]["secure"].run

    reports = secure.results["secure-aggregation"]

    assert [r["round"] for r in reports] == list(range(1, ROUNDS + 1))
    for report in reports:
        assert report["failure"] is None
        assert report["sites-keys"] == report["sites-shares"] == SITES
        assert report["sites-masked"] == report["sites-unmask"] == ["A", "B", "C"]
        assert report["dropped"] == ["D"] and report["threshold"] == 3
    refusals = [e for e in secure.results["site-errors"] if e["site"] == "D"]
    assert refusals and all("federated round" in e["action"] for e in refusals)


def test_sites_sent_only_masked_inputs_through_their_egress_guards(
    studies: dict[str, Any],
) -> None:
    run_name = studies["outcomes"]["secure"].run_dir.name

    logs = {
        site: [
            e
            for e in EgressLog(
                studies["sites"] / f"site-{site}" / "egress-log.jsonl"
            ).entries()
            if e["run-name"] == run_name
        ]
        for site in SITES
    }

    for site in "ABC":
        kinds = {e["kind"] for e in logs[site]}
        assert kinds >= set(SECURE_AGGREGATION_KINDS) and "train" not in kinds
        assert all(e["verdict"] == "passed" for e in logs[site])
    d_kinds = {(e["kind"], e["verdict"]) for e in logs["D"]}
    assert ("query.secagg_shares", "passed") in d_kinds
    assert ("train.secagg", "error") in d_kinds
