"""A study over Flower's deployment runtime: TLS, SuperNode auth, 3 hosts.

One SuperLink on 127.0.0.1 and three SuperNodes on 127.0.0.2-4, each a
separate process, run a one-round study to the end through ``flwr run``. A
SuperNode with an unregistered key, and one without TLS, are refused. Each
hospital approves the study with ``fedbone site approve``; a study it did not
approve is refused by every site and nothing but the refusal leaves.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from deployment_cluster import (
    Cluster,
    approve_with_cli,
    free_address,
    loopback_cluster,
    missing_binaries,
)
from tiny_study import write_tiny_study

from fedbone.config.site import load_site_config
from fedbone.config.study import load_study_config
from fedbone.federation.deployment.control import (
    RunOutcome,
    online_node_ids,
    submit_run,
)
from fedbone.federation.egress.guard import EgressLog
from fedbone.security.pki import create_study_pki
from fedbone.simulation.sites import prepare_simulated_sites

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        bool(missing_binaries()),
        reason=f"Flower binaries missing: {missing_binaries()}",
    ),
]

PROJECT_DIR = Path(__file__).resolve().parents[2]
SITE_HOSTS = {"A": "127.0.0.2", "B": "127.0.0.3", "C": "127.0.0.4"}


def _write_study(root: Path) -> Path:
    # The simulation block only writes and prepares the phantom hospitals.
    return write_tiny_study(
        root,
        "deployed",
        ["census", "train", "validate", "report"],
        sites=sorted(SITE_HOSTS),
        validation={"n_bootstrap": 50},
        simulation={"outcome_sites": ["C"]},
    )


@pytest.fixture(scope="module")
def study_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_study(tmp_path_factory.mktemp("deployment"))


@pytest.fixture(scope="module")
def cluster(study_path: Path) -> Iterator[Cluster]:
    root = study_path.parent
    site_configs = prepare_simulated_sites(load_study_config(study_path), approve=False)
    approve_with_cli(study_path, site_configs)
    pki = create_study_pki(
        root / "pki",
        study="deployed",
        server_hosts=["127.0.0.1", "localhost"],
        sites=[*sorted(SITE_HOSTS), "intruder"],
        days=1,
    )
    with loopback_cluster(root, pki) as running:
        running.start_federation(SITE_HOSTS, site_configs)
        yield running


@pytest.fixture(scope="module")
def finished(cluster: Cluster, study_path: Path) -> RunOutcome:
    return submit_run(
        cluster.centre_home,
        PROJECT_DIR,
        study_path,
        log_path=cluster.root / "logs" / "flwr-run.log",
        timeout_s=240.0,
    )


def test_the_study_runs_to_the_end_over_tls(
    finished: RunOutcome, study_path: Path
) -> None:
    runs = study_path.parent / "runs"

    results_files = list(runs.glob("deployed-*/results.json"))

    assert finished.completed, finished.status
    assert len(results_files) == 1
    results = json.loads(results_files[0].read_text())
    assert {row["site"] for row in results["per_site"]} == set(SITE_HOSTS)
    assert results["rejected"] == [] and results["site_errors"] == []


def test_every_site_logged_only_passed_egress(
    finished: RunOutcome, study_path: Path
) -> None:
    sites = study_path.parent / "sites"

    logs = {
        site: EgressLog(
            load_site_config(sites / f"site-{site}" / "site.yaml").egress_log
        ).entries()
        for site in SITE_HOSTS
    }

    assert finished.completed
    for site, entries in logs.items():
        assert entries, f"site {site} sent nothing"
        assert all(e["verdict"] == "passed" for e in entries), site
    assert "train" in {e["kind"] for e in logs["A"]}


def test_a_study_no_site_approved_is_refused_by_every_site(
    finished: RunOutcome, cluster: Cluster, study_path: Path
) -> None:
    root = study_path.parent
    study = write_tiny_study(
        root,
        "unapproved",
        ["census", "train", "report"],
        filename="unapproved.yaml",
        sites=sorted(SITE_HOSTS),
        training={"census_timeout_s": 30},
    )

    outcome = submit_run(
        cluster.centre_home,
        PROJECT_DIR,
        study,
        log_path=root / "logs" / "unapproved-run.log",
        timeout_s=240.0,
    )

    assert finished.completed
    assert not outcome.completed, outcome.status
    run_log = (root / "logs" / "unapproved-run.log").read_text()
    assert "a site refused the census: site 'A' refused" in run_log
    for site in SITE_HOSTS:
        config = load_site_config(root / "sites" / f"site-{site}" / "site.yaml")
        sent = [
            e
            for e in EgressLog(config.egress_log).entries()
            if str(e["run-name"]).startswith("unapproved")
        ]
        assert sent, site
        assert all(e["verdict"] == "error" for e in sent), (site, sent)
        assert all("study-not-approved" in e["reason"] for e in sent), site


def test_a_site_whose_key_is_not_registered_is_refused(
    cluster: Cluster, study_path: Path
) -> None:
    config = study_path.parent / "sites" / "site-A" / "site.yaml"
    online_before = online_node_ids(cluster.centre_home)

    intruder = cluster.start_site("intruder", "127.0.0.5", config, max_wait_s=10.0)
    exit_code = intruder.wait(timeout_s=60.0)

    assert exit_code not in (None, 0), intruder.log_tail()
    assert (
        "No SuperNode found with the given public key"
        in (cluster.root / "logs" / "centre.log").read_text()
    )
    assert sorted(online_node_ids(cluster.centre_home)) == sorted(online_before)


def _plaintext_http_reply(address: str) -> bytes:
    host, port = address.rsplit(":", 1)
    request = b"POST /v1/fleet/activate-node HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=5.0) as connection:
        connection.sendall(request)
        try:
            return connection.recv(64)
        except OSError:
            return b""


def test_plaintext_is_refused(cluster: Cluster) -> None:
    centre_log = cluster.root / "logs" / "centre.log"
    activations_before = centre_log.read_text().count("activate-node")

    runtime_host, runtime_port = free_address("127.0.0.6").split(":")
    reply = _plaintext_http_reply(cluster.superlink_address)
    plaintext = cluster.start_raw(
        "plaintext",
        [
            "flower-supernode",
            "--insecure",
            "--superlink",
            cluster.superlink_address,
            "--host",
            runtime_host,
            "--port",
            runtime_port,
            "--max-wait-time",
            "10",
        ],
    )
    exit_code = plaintext.wait(timeout_s=60.0)

    assert not reply.startswith(b"HTTP/"), reply
    assert exit_code not in (None, 0), plaintext.log_tail()
    # It never reached the Fleet API (not even to be refused as unregistered).
    assert centre_log.read_text().count("activate-node") == activations_before
