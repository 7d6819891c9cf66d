"""Deployment faults and TLS cost, measured on loopback with real processes.

(a) Rounds completed while one of three training sites drops out every round
    (a different site stopped each round, started again at once).
(a') A site killed outright (SIGKILL of the whole site, as a power cut) in
    round 2 and started again at once with ``fedbone site start``: seconds
    until the SuperLink lets it back in, and the round it rejoins.
(b) Seconds from a SuperLink restart (centre killed after round 1's
    checkpoint) to the first round of the resumed run.
(c) Seconds per round of the same study with TLS + SuperNode authentication
    and in plaintext (``--insecure``, allowed only here), and their ratio.

Run: ``.venv/bin/python bench/deployment_faults.py``. Writes
``bench/results/deployment_faults.json`` and ``.md`` with machine info.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import re
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "support"), str(ROOT / "bench")]

from bench_data import machine_info  # noqa: E402
from deployment_cluster import (  # noqa: E402
    PROJECT_DIR,
    RECEIVING,
    Cluster,
    approve_with_cli,
    count_in_log,
    loopback_cluster,
    make_training_site,
    wait_for_count,
)
from tiny_study import write_tiny_study  # noqa: E402

from fedbone.config.study import load_study_config  # noqa: E402
from fedbone.federation.deployment.control import (  # noqa: E402
    submit_run,
    wait_for_online_nodes,
)
from fedbone.federation.deployment.processes import kill_tree  # noqa: E402
from fedbone.security.pki import create_study_pki  # noqa: E402
from fedbone.simulation.sites import prepare_simulated_sites  # noqa: E402
from server.checkpoint import load_checkpoint  # noqa: E402

logger = logging.getLogger("bench.deployment_faults")
#: What a SuperNode logs once the SuperLink has activated it.
ACTIVATED = "SuperNode ID:"
#: What ``fedbone site start`` logs when the SuperLink refuses the site.
REFUSED = "refused to activate"
SITE_HOSTS = {"A": "127.0.0.2", "B": "127.0.0.3", "C": "127.0.0.4"}
RUN_TIMEOUT_S = 400.0


def write_study(root: Path, name: str, rounds: int) -> Path:
    """Write the study, approved (``fedbone site approve``) at the sites made."""
    study = write_tiny_study(
        root,
        name,
        ["census", "train"],
        filename=f"{name}.yaml",
        sites=sorted(SITE_HOSTS),
        training={"rounds": rounds, "round_timeout_s": 30},
        # Shared by every part: the phantom hospitals are made once.
        simulation={"sites_dir": str(root.parent / "sites")},
        output={"runs_dir": str(root / "runs" / name)},
    )
    approve_with_cli(study, sorted((root.parent / "sites").glob("site-*/site.yaml")))
    return study


@contextmanager
def federation(
    root: Path, *, insecure: bool = False, sites_via_cli: bool = True
) -> Iterator[Cluster]:
    """SuperLink + three training sites, every process stopped on exit."""
    study = write_study(root, "setup", 1)
    prepare_simulated_sites(load_study_config(study), approve=False)
    make_training_site(root.parent / "sites" / "site-C")
    configs = prepare_simulated_sites(load_study_config(study), approve=False)
    pki = create_study_pki(
        root / "pki",
        study="bench",
        server_hosts=["127.0.0.1", "localhost"],
        sites=sorted(SITE_HOSTS),
        days=1,
    )
    with loopback_cluster(
        root, pki, insecure=insecure, sites_via_cli=sites_via_cli
    ) as cluster:
        cluster.start_federation(SITE_HOSTS, configs)
        yield cluster


def train_entries(runs_dir: Path) -> list[dict[str, Any]]:
    run_dir = next(p for p in runs_dir.iterdir() if p.is_dir())
    rounds = json.loads((run_dir / "rounds.json").read_text())
    return [r for r in rounds if r["model"] == "federated" and r["kind"] == "train"]


_MARK = re.compile(
    r"^(\d\d/\d\d/\d{4} \d\d:\d\d:\d\d):INFO:"
    r"(?:\[ROUND |Strategy execution finished)"
)


def timed_run(
    cluster: Cluster, study: Path, log_name: str, **kwargs: Any
) -> tuple[bool, list[float]]:
    """Submit ``study``; return success and when each round started (epoch s).

    Times come from the ServerApp's own log stamps: the streamed lines reach
    ``flwr run`` in bursts, so their arrival says little.
    """
    log_path = cluster.root / "logs" / log_name
    outcome = submit_run(
        cluster.centre_home,
        PROJECT_DIR,
        study,
        log_path=log_path,
        timeout_s=RUN_TIMEOUT_S,
        **kwargs,
    )
    marks = [
        datetime.strptime(m.group(1), "%m/%d/%Y %H:%M:%S").timestamp()
        for line in log_path.read_text(errors="replace").splitlines()
        if (m := _MARK.match(line))
    ]
    return outcome.completed, marks


def dropout_every_round(
    root: Path, rounds: int, *, crash: bool = False
) -> dict[str, Any]:
    with federation(root) as cluster:
        study = write_study(root, "dropout", rounds)
        needle = RECEIVING.format(kind="train")
        before = {s: count_in_log(cluster.site_log(s), needle) for s in SITE_HOSTS}
        result: dict[str, Any] = {}

        def run_study() -> None:
            result["completed"], _ = timed_run(cluster, study, "dropout.log")

        worker = threading.Thread(target=run_study, daemon=True)
        started = time.monotonic()
        worker.start()
        dropped = []
        for number in range(1, rounds + 1):
            site = sorted(SITE_HOSTS)[(number - 1) % len(SITE_HOSTS)]
            # A stopped site had taken that round's request, so by round n
            # every site has taken n (its log file outlives its processes).
            cluster.stop_site_in_round(
                site, number, before[site], RUN_TIMEOUT_S, crash=crash
            )
            dropped.append(site)
            time.sleep(1.0)
            cluster.restart_site(site)
        worker.join(RUN_TIMEOUT_S + 60.0)
        entries = train_entries(root / "runs" / "dropout")
    by_round = {
        n: sorted(e["site"] for e in entries if e["round"] == n)
        for n in range(1, rounds + 1)
    }
    return {
        "rounds": rounds,
        "how": "SIGKILL of the whole site" if crash else "SIGTERM to the SuperNode",
        "completed": bool(result.get("completed")),
        "dropped_site_per_round": dropped,
        "sites_per_round": by_round,
        "rounds_completed": sum(1 for sites in by_round.values() if len(sites) >= 2),
        "study_seconds": round(time.monotonic() - started, 1),
    }


def site_crash(root: Path, rounds: int, crashed: str = "C") -> dict[str, Any]:
    with federation(root) as cluster:
        study = write_study(root, "crash", rounds)
        log = cluster.site_log(crashed)
        received = count_in_log(log, RECEIVING.format(kind="train"))
        result: dict[str, Any] = {}

        def run_study() -> None:
            result["completed"], _ = timed_run(cluster, study, "crash.log")

        worker = threading.Thread(target=run_study, daemon=True)
        worker.start()
        cluster.stop_site_in_round(crashed, 2, received, RUN_TIMEOUT_S, crash=True)
        killed = time.monotonic()
        activations = count_in_log(log, ACTIVATED)
        refusals = count_in_log(log, REFUSED)
        cluster.restart_site(crashed)
        wait_for_count(log, ACTIVATED, activations + 1, RUN_TIMEOUT_S)
        back_after = time.monotonic() - killed
        worker.join(RUN_TIMEOUT_S + 60.0)
        refused = count_in_log(log, REFUSED) - refusals
        entries = train_entries(root / "runs" / "crash")
    by_round = {
        n: sorted(e["site"] for e in entries if e["round"] == n)
        for n in range(1, rounds + 1)
    }
    rejoined = next((n for n in range(3, rounds + 1) if crashed in by_round[n]), None)
    return {
        "rounds": rounds,
        "completed": bool(result.get("completed")),
        "sites_per_round": by_round,
        "kill_to_activated_s": round(back_after, 1),
        "refused_attempts": refused,
        "rejoined_in_round": rejoined,
    }


def centre_restart(root: Path, rounds: int) -> dict[str, Any]:
    with federation(root) as cluster:
        study = write_study(root, "restart", rounds)
        runs_dir = root / "runs" / "restart"
        interrupted = cluster.start_run(study)
        deadline = time.monotonic() + RUN_TIMEOUT_S
        run_dir = None
        while run_dir is None and time.monotonic() < deadline:
            for candidate in runs_dir.glob("*"):
                state = load_checkpoint(candidate)
                if state and state.progress.get("federated", (0,))[0] >= 1:
                    run_dir = candidate
            time.sleep(0.2)
        assert run_dir is not None and cluster.superlink is not None
        kill_tree(cluster.superlink)
        kill_tree(interrupted)
        restarted = time.time()
        cluster.start_superlink()
        listening = time.time() - restarted
        cluster.restart_exited_sites()
        wait_for_online_nodes(cluster.centre_home, len(SITE_HOSTS), timeout_s=120.0)
        online = time.time() - restarted
        completed, starts = timed_run(
            cluster, study, "restart-resume.log", resume_run_dir=run_dir
        )
    return {
        "rounds": rounds,
        "completed": completed,
        "superlink_listening_s": round(listening, 1),
        "sites_online_s": round(online, 1),
        "restart_to_resumed_round_s": round(starts[0] - restarted, 1)
        if starts
        else None,
    }


def round_seconds(root: Path, rounds: int, insecure: bool) -> list[float]:
    with federation(root, insecure=insecure, sites_via_cli=False) as cluster:
        study = write_study(root, "tls" if not insecure else "plain", rounds)
        completed, marks = timed_run(cluster, study, "timing.log")
    if not completed:
        raise RuntimeError(f"timing run failed (insecure={insecure})")
    return [round(b - a, 2) for a, b in itertools.pairwise(marks)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/fedbone-bench-faults"))
    parser.add_argument("--dropout-rounds", type=int, default=4)
    parser.add_argument("--crash-rounds", type=int, default=4)
    parser.add_argument("--restart-rounds", type=int, default=3)
    parser.add_argument("--timing-rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = args.work / stamp
    began = time.monotonic()
    tls = round_seconds(work / "tls", args.timing_rounds, insecure=False)
    plain = round_seconds(work / "plain", args.timing_rounds, insecure=True)
    results: dict[str, Any] = {
        "machine": machine_info(),
        "tls_vs_plaintext": {
            "rounds": args.timing_rounds,
            "tls_round_s": tls,
            "plaintext_round_s": plain,
            "tls_median_s": statistics.median(tls),
            "plaintext_median_s": statistics.median(plain),
            "ratio": round(statistics.median(tls) / statistics.median(plain), 3),
        },
        "dropout_every_round": dropout_every_round(
            work / "dropout", args.dropout_rounds
        ),
        "site_crash": site_crash(work / "crash", args.crash_rounds),
        "centre_restart": centre_restart(work / "restart", args.restart_rounds),
    }
    results["bench_seconds"] = round(time.monotonic() - began, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "deployment_faults.json").write_text(json.dumps(results, indent=2))
    (args.out / "deployment_faults.md").write_text(markdown(results))
    print(markdown(results))
    return 0


def markdown(results: dict[str, Any]) -> str:
    timing = results["tls_vs_plaintext"]
    dropout = results["dropout_every_round"]
    restart = results["centre_restart"]
    crash = results["site_crash"]
    lines = [
        "# Deployment faults and TLS cost (loopback, real Flower processes)",
        "",
        f"Machine: `{json.dumps(results['machine'])}`",
        "",
        "| measure | value |",
        "|---|---|",
        f"| rounds completed / run, one of 3 sites stopped every round | "
        f"{dropout['rounds_completed']} / {dropout['rounds']} "
        f"(study completed: {dropout['completed']}) |",
        f"| sites per round | {dropout['sites_per_round']} |",
        f"| site C killed (SIGKILL) in round 2 of {crash['rounds']}: sites per "
        f"round | {crash['sites_per_round']} (study completed: "
        f"{crash['completed']}) |",
        f"| kill -> C activated again (s); refused attempts before | "
        f"{crash['kill_to_activated_s']}; {crash['refused_attempts']} |",
        f"| round C rejoined | {crash['rejoined_in_round']} |",
        f"| SuperLink restart -> first resumed round (s) | "
        f"{restart['restart_to_resumed_round_s']} |",
        f"| of which: SuperLink listening / 3 sites online (s) | "
        f"{restart['superlink_listening_s']} / {restart['sites_online_s']} |",
        f"| median s/round, TLS + auth | {timing['tls_median_s']} |",
        f"| median s/round, plaintext | {timing['plaintext_median_s']} |",
        f"| TLS / plaintext | {timing['ratio']} |",
        "",
        f"Total bench time: {results['bench_seconds']} s.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
