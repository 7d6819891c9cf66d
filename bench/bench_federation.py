"""Federation benchmark: fedbone's per-round overhead and bytes on the wire.

Both measured in one run, through the same Flower simulation runtime, the same
FedAvg strategy, the same model and the same number of rounds:

(a) per-round overhead: a fedbone round (real ``sites.app`` ClientApp: egress
    guard and log, site config, cache, model build and load, reply packing,
    server-side screening) minus the sites' local-training seconds, vs a bare
    Flower ClientApp that echoes the received model. Medians over rounds 2..N
    (round 1 is a warm-up with actor start-up). Target ratio <= 1.15.
(c) bytes a site sends per round (egress log, and Flower's Array payloads) vs
    the fp32 size of the model. Target <= 1.05.

Writes ``bench/results/federation.json`` and ``.md`` with machine info.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_data import machine_info

from fedbone.config.study import load_study_config
from fedbone.federation.egress.guard import EgressLog
from fedbone.federation.records import array_signature, arrays_to_record
from fedbone.federation.study_messages import metric_floats
from fedbone.simulation.sites import prepare_simulated_sites
from server.phases.census import run_census
from server.phases.train import initial_arrays, train_config
from server.study_grid import StudyGrid
from server.study_run import StudyRun
from sites.app import app as fedbone_client

RESULTS = Path(__file__).resolve().parent / "results"

bare_client = ClientApp()


@bare_client.train()
def echo(message: Message, context: Context) -> Message:
    """Return the received model unchanged: Flower's exchange and nothing else."""
    content = RecordDict(
        {
            "arrays": message.content["arrays"],
            "metrics": MetricRecord({"num-examples": 1}),
        }
    )
    return Message(content, reply_to=message)


def _strategy() -> FedAvg:
    return FedAvg(fraction_evaluate=0.0, min_train_nodes=2, min_available_nodes=2)


def run_rounds(study_path: Path, rounds: int, *, bare: bool) -> dict[str, float]:
    """Time ``rounds`` FedAvg rounds over two simulated sites."""
    study = load_study_config(study_path)
    configs = prepare_simulated_sites(study)
    timing: dict[str, float] = {}
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        run = StudyRun(study, grid, Path(tempfile.mkdtemp()), [str(p) for p in configs])
        start = arrays_to_record(initial_arrays(run))
        if not bare:
            run_census(run)
        ends: list[float] = []
        train_seconds: list[float] = []

        def record(replies: list[Message]) -> None:
            if not replies:  # the (skipped) evaluate step of each round
                return
            ends.append(time.perf_counter())
            seconds = [
                metric_floats(r.content.metric_records["metrics"]).get("seconds", 0.0)
                for r in replies
                if not r.has_error()
            ]
            train_seconds.append(max(seconds, default=0.0))

        nodes = list(grid.get_node_ids())
        study_grid = StudyGrid(
            grid,
            nodes,
            expected=None if bare else array_signature(start),
            on_replies=record,
        )
        config = train_config(run) if not bare else ConfigRecord({})
        started = time.perf_counter()
        _strategy().start(
            grid=study_grid,
            initial_arrays=start,
            num_rounds=rounds,
            train_config=config,
        )
        durations = np.diff([started, *ends])
        # Round 1 carries actor start-up and imports: a warm-up, left out.
        steady = durations[1:]
        timing["per_round_s"] = float(np.median(steady))
        timing["per_round_training_s"] = float(np.median(train_seconds[1:]))
        timing["per_round_overhead_s"] = float(
            np.median(steady - np.asarray(train_seconds[1:]))
        )

    run_simulation(
        server_app=server,
        client_app=bare_client if bare else fedbone_client,
        num_supernodes=len(configs),
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )
    return timing


def bytes_per_round(sites_dir: Path, model: dict[str, np.ndarray]) -> dict[str, float]:
    """Bytes of each site's train replies vs the model's fp32 size."""
    fp32 = sum(int(np.prod(a.shape)) * 4 for a in model.values())
    logged = [
        e["bytes"]
        for log in sites_dir.glob("site-*/egress-log.jsonl")
        for e in EgressLog(log).entries()
        if e["kind"] == "train" and e["verdict"] == "passed"
    ]
    record = arrays_to_record(model)
    payload = sum(len(array.data) for array in record.values())
    return {
        "model_fp32_bytes": fp32,
        "egress_logged_bytes_per_round": statistics.mean(logged),
        "flower_array_payload_bytes": payload,
        "ratio_logged_to_fp32": statistics.mean(logged) / fp32,
        "ratio_payload_to_fp32": payload / fp32,
    }


def main() -> None:
    """Measure and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--architecture", default="small-cnn")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fedbone-bench-fed-"))
    study = {
        "study": {"name": "bench", "task": "bm"},
        "model": {"architecture": args.architecture},
        "training": {
            "rounds": args.rounds,
            "local_epochs": 1,
            "batch_size": 8,
            "augment": False,
            "min_train_sites": 2,
        },
        "simulation": {
            "sites_dir": str(work / "sites"),
            "sites": ["A", "B"],
            "scale": 0.0001,
            "min_scans": 12,
            "workers": 1,
        },
        "output": {"runs_dir": str(work / "runs")},
    }
    path = work / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    bare = run_rounds(path, args.rounds, bare=True)
    fedbone = run_rounds(path, args.rounds, bare=False)
    run = StudyRun(load_study_config(path), None, work)  # type: ignore[arg-type]
    sizes = bytes_per_round(work / "sites", initial_arrays(run))
    figures = {
        "rounds": args.rounds,
        "architecture": args.architecture,
        "bare_flower_per_round_s": round(bare["per_round_s"], 4),
        "fedbone_per_round_s": round(fedbone["per_round_s"], 4),
        "fedbone_local_training_per_round_s": round(fedbone["per_round_training_s"], 4),
        "fedbone_per_round_overhead_s": round(fedbone["per_round_overhead_s"], 4),
        "overhead_ratio_vs_bare": round(
            fedbone["per_round_overhead_s"] / bare["per_round_s"], 3
        ),
        **{k: round(v, 4) for k, v in sizes.items()},
    }
    result = {
        "machine": machine_info(),
        "figures": figures,
        "targets": {
            "overhead_ratio_vs_bare": "<= 1.15",
            "ratio_logged_to_fp32": "<= 1.05",
        },
        "method": __doc__,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "federation.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Federation benchmark", "", "| figure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in figures.items()]
    lines += ["", "Machine:", ""] + [f"- {k}: {v}" for k, v in machine_info().items()]
    (RESULTS / "federation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
