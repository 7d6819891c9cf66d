"""Faults over Flower's deployment runtime: a site dies, the centre dies.

One SuperLink (127.0.0.1) and three SuperNodes (127.0.0.2-4), with TLS and
SuperNode authentication, shared by both tests; the sites run through
``fedbone site start``. A site killed (SIGKILL, as a power cut) while it holds
round 2's training request: round 2 completes with the other two; the site,
started again at once with the same key and config, is refused until the
SuperLink lets go of its old connection (up to 60 s), retries, and takes part
again by round 4. The centre killed (SIGKILL) after round 1's checkpoint: a
restarted SuperLink on the same state database and a resubmitted run with
``resume_run_dir`` finish the study with every round once per site and no
site training twice. A run whose app differs by one comment from the code
the sites installed is refused by every site before any of it runs.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from deployment_cluster import (
    PROJECT_DIR,
    RECEIVING,
    Cluster,
    approve_with_cli,
    count_in_log,
    loopback_cluster,
    make_training_site,
    missing_binaries,
)
from tiny_study import write_tiny_study

from fedbone.config.site import load_site_config
from fedbone.config.study import load_study_config
from fedbone.federation.deployment.control import (
    RunOutcome,
    submit_run,
    wait_for_online_nodes,
)
from fedbone.federation.deployment.processes import kill_tree
from fedbone.federation.egress.guard import EgressLog
from fedbone.security.pki import create_study_pki
from fedbone.simulation.sites import prepare_simulated_sites
from server.checkpoint import load_checkpoint

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        bool(missing_binaries()),
        reason=f"Flower binaries missing: {missing_binaries()}",
    ),
]

SITE_HOSTS = {"A": "127.0.0.2", "B": "127.0.0.3", "C": "127.0.0.4"}
ROUNDS = 3
SITE_FAULT_ROUNDS = 4
RUN_TIMEOUT_S = 240.0


def _write_study(root: Path, name: str, rounds: int = ROUNDS) -> Path:
    """Write the study, approved (``fedbone site approve``) at the sites made."""
    # The simulation block only writes and prepares the phantom hospitals.
    study = write_tiny_study(
        root,
        name,
        ["census", "train"],
        filename=f"{name}.yaml",
        sites=sorted(SITE_HOSTS),
        training={"rounds": rounds, "round_timeout_s": 30, "census_timeout_s": 60},
        output={"runs_dir": str(root / "runs" / name)},
    )
    approve_with_cli(study, sorted((root / "sites").glob("site-*/site.yaml")))
    return study


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def cluster(root: Path) -> Iterator[Cluster]:
    study = _write_study(root, "sitefault")
    prepare_simulated_sites(load_study_config(study), approve=False)
    make_training_site(root / "sites" / "site-C")
    site_configs = prepare_simulated_sites(load_study_config(study), approve=False)
    pki = create_study_pki(
        root / "pki",
        study="faults",
        server_hosts=["127.0.0.1", "localhost"],
        sites=sorted(SITE_HOSTS),
        days=1,
    )
    with loopback_cluster(root, pki, sites_via_cli=True) as running:
        running.start_federation(SITE_HOSTS, site_configs)
        yield running


def _only_run_dir(runs_dir: Path) -> Path:
    found = [p for p in runs_dir.iterdir() if p.is_dir()] if runs_dir.is_dir() else []
    assert len(found) == 1, found
    return found[0]


def _train_entries(run_dir: Path) -> list[dict[str, Any]]:
    rounds = json.loads((run_dir / "rounds.json").read_text())
    return [r for r in rounds if r["model"] == "federated" and r["kind"] == "train"]


def _site_work(root: Path, site: str) -> tuple[Path, Path]:
    config = load_site_config(root / "sites" / f"site-{site}" / "site.yaml")
    return config.egress_log, config.work_dir


def test_a_site_killed_in_a_round_is_left_out_and_rejoins(
    cluster: Cluster, root: Path
) -> None:
    study = _write_study(root, "sitefault", SITE_FAULT_ROUNDS)
    received = count_in_log(cluster.site_log("C"), RECEIVING.format(kind="train"))
    submitted: dict[str, RunOutcome] = {}
    run = threading.Thread(
        target=lambda: submitted.setdefault(
            "outcome",
            submit_run(
                cluster.centre_home,
                PROJECT_DIR,
                study,
                log_path=root / "logs" / "sitefault-run.log",
                timeout_s=RUN_TIMEOUT_S,
            ),
        ),
        daemon=True,
    )

    run.start()
    cluster.stop_site_in_round("C", 2, received, timeout_s=RUN_TIMEOUT_S, crash=True)
    time.sleep(1.0)
    cluster.restart_site("C")
    run.join(timeout=RUN_TIMEOUT_S + 60.0)

    assert submitted["outcome"].completed, submitted["outcome"].status
    entries = _train_entries(_only_run_dir(root / "runs" / "sitefault"))
    sites_by_round = {
        n: sorted(e["site"] for e in entries if e["round"] == n)
        for n in range(1, SITE_FAULT_ROUNDS + 1)
    }
    assert sites_by_round[1] == ["A", "B", "C"]
    assert sites_by_round[2] == ["A", "B"]
    assert sites_by_round[3] in (["A", "B"], ["A", "B", "C"])
    assert sites_by_round[4] == ["A", "B", "C"]
    # The restarted site was refused while the SuperLink held its old
    # connection, and its supervisor tried again.
    assert "refused to activate" in cluster.site_log("C").read_text()


def test_a_killed_centre_resumes_without_repeating_site_work(
    cluster: Cluster, root: Path
) -> None:
    study = _write_study(root, "centrefault")
    runs_dir = root / "runs" / "centrefault"
    interrupted = cluster.start_run(study)
    run_dir = _wait_for_round_checkpoint(runs_dir, interrupted)
    assert cluster.superlink is not None

    kill_tree(cluster.superlink)
    kill_tree(interrupted)
    restarted_at = time.monotonic()
    cluster.start_superlink()
    cluster.restart_exited_sites()
    wait_for_online_nodes(cluster.centre_home, len(SITE_HOSTS), timeout_s=90.0)
    first_round_at: list[float] = []
    outcome = submit_run(
        cluster.centre_home,
        PROJECT_DIR,
        study,
        log_path=root / "logs" / "centrefault-resume.log",
        timeout_s=RUN_TIMEOUT_S,
        resume_run_dir=run_dir,
        on_line=lambda line: (
            first_round_at.append(time.monotonic()) if "[ROUND " in line else None
        ),
    )

    assert outcome.completed, outcome.status
    assert _only_run_dir(runs_dir) == run_dir
    per_site_round = Counter((e["site"], e["round"]) for e in _train_entries(run_dir))
    assert per_site_round == Counter(
        {(s, n): 1 for s in SITE_HOSTS for n in range(1, ROUNDS + 1)}
    )
    for site in SITE_HOSTS:
        egress_log, work_dir = _site_work(root, site)
        sent = [
            e
            for e in EgressLog(egress_log).entries()
            if e["run-name"] == run_dir.name and e["kind"] == "train"
        ]
        replays_file = work_dir / "runs" / run_dir.name / "replays.jsonl"
        replays = (
            [json.loads(x) for x in replays_file.read_text().splitlines()]
            if replays_file.is_file()
            else []
        )
        replayed = sum(1 for r in replays if r["kind"] == "train")
        assert len(sent) - replayed == ROUNDS, (site, len(sent), replayed)
    assert first_round_at, "the resumed run never started a round"
    print(
        f"SuperLink restart -> resumed round: {first_round_at[0] - restarted_at:.1f} s"
    )


def _wait_for_round_checkpoint(runs_dir: Path, run: Any) -> Path:
    """Wait for the run's checkpoint to hold a completed federated round."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        for run_dir in runs_dir.glob("*"):
            state = load_checkpoint(run_dir)
            if state is not None and state.progress.get("federated", (0,))[0] >= 1:
                return run_dir
        if not run.running and run.process.returncode != 0:
            raise AssertionError(f"the run ended early:\n{run.log_tail()}")
        time.sleep(0.2)
    raise AssertionError("no federated round was checkpointed in time")


def _tampered_copy(destination: Path) -> Path:
    """The project's app with one comment added to the sites' ClientApp."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("fedbone", "sites", "server", "configs"):
        shutil.copytree(PROJECT_DIR / folder, destination / folder, ignore=ignore)
    shutil.copy2(PROJECT_DIR / "pyproject.toml", destination / "pyproject.toml")
    app = destination / "sites" / "app.py"
    app.write_text(app.read_text() + "# changed at the centre\n")
    return destination


def test_sites_refuse_an_app_whose_code_differs_from_theirs(
    cluster: Cluster, root: Path
) -> None:
    study = _write_study(root, "tampered")
    app_dir = _tampered_copy(root / "tampered-app")
    needle = "changed-code"
    refusals = {s: count_in_log(cluster.site_log(s), needle) for s in SITE_HOSTS}

    outcome = submit_run(
        cluster.centre_home,
        app_dir,
        study,
        log_path=root / "logs" / "tampered-run.log",
        timeout_s=RUN_TIMEOUT_S,
    )

    assert not outcome.completed, outcome.status
    for site in SITE_HOSTS:
        log = cluster.site_log(site)
        assert count_in_log(log, "changed-code") > refusals[site], site
        assert "sites/app.py" in log.read_text()
        egress_log, _ = _site_work(root, site)
        sent = [
            e
            for e in EgressLog(egress_log).entries()
            if str(e["run-name"]).startswith("tampered")
        ]
        # Only Flower's error reply left, and it is logged as such.
        assert sent, site
        assert {(e["verdict"], e["reason"][:12]) for e in sent} == {
            ("error", "app refused:")
        }, (site, sent)
