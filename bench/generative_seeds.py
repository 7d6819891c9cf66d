"""The demo's generative part for several seeds: does the synthetic gain hold?

For each seed (study seed: GAN, curation, classifier and synthesis draws; the
phantom sites stay those of ``configs/simulation.yaml``) this runs the demo's
phases ``census, gan, synthesize, train, validate`` through Flower's
simulation runtime and records, from the run's own result files:

* fidelity per class (FD, KID, precision, recall) of synthetic vs held-out real
  scans next to real vs real (site A's training vs held-out scans);
* images released per class, shortfalls, curation classifier AUC, unrealistic
  images flagged by the audit;
* B alone vs B with A's synthetic images (each ratio) on the external sites'
  pooled scans: AUCs and the paired DeLong p-value;
* minutes per seed.

Usage::

    .venv/bin/python bench/generative_seeds.py --seeds 0 1 2

``--from-run 0=runs/demo-bm-...`` takes a seed's figures from a finished
demo run of the same config instead of running it again (the demo runs the
same phases plus ``outcomes`` and ``report``, and also trains the pooled
baseline, which none of these figures depends on).

Writes ``bench/results/generative_seeds.json`` and ``generative_seeds.md``.
About 8 minutes per seed on the 2-core CPU machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_data import machine_info

from fedbone.config.study import load_study_config
from server.simulation import simulate_study

RESULTS = Path(__file__).resolve().parent / "results"
PHASES = ("census", "gan", "synthesize", "train", "validate", "report")
FIDELITY = ("fd", "kid", "precision", "recall")


def run_seed(config: Path, seed: int) -> dict[str, Any]:
    """Run the generative part of the demo for one seed; return its figures."""
    study = load_study_config(config)
    study = replace(
        study,
        seed=seed,
        name=f"generative-seed{seed}",
        phases=PHASES,
        baselines=("local",),
    )
    started = time.perf_counter()
    outcome = simulate_study(study)
    minutes = (time.perf_counter() - started) / 60
    return {
        "seed": seed,
        "minutes": round(minutes, 2),
        "run_dir": str(outcome.run_dir),
        **figures(Path(outcome.run_dir)),
    }


def figures(run_dir: Path) -> dict[str, Any]:
    """Read one run's fidelity, release and gain figures from its files."""
    results = json.loads((run_dir / "results.json").read_text())
    gan = json.loads((run_dir / "gan.json").read_text())
    metrics = next(iter(gan.get("sites", {}).values()), {}).get("metrics", {})
    fidelity = {
        f"{name}-{kind}-{cls}": metrics.get(f"{name}-{kind}-{cls}", math.nan)
        for name in FIDELITY
        for kind in ("synthetic", "real")
        for cls in ("neg", "pos")
    }
    audit = next(iter(results["synthesis"].get("audits", {}).values()), {})
    released = {
        k: v
        for k, v in audit.items()
        if k.startswith(("n-released-class-", "n-shortfall-class-"))
    }
    external = results["pooled_external"]
    base = external.get("local-B", {}).get("auc", math.nan)
    gains = []
    for name, row in external.items():
        if not name.startswith("local-B-syn"):
            continue
        test = _comparison(run_dir, name)
        gains.append(
            {
                "model": name,
                "auc": row.get("auc", math.nan),
                "b-alone-auc": base,
                "difference": test.get("difference"),
                "p": test.get("p-value"),
            }
        )
    return {
        "fidelity": fidelity,
        "released": released,
        "curation-val-auc": audit.get("curation-val-auc", math.nan),
        "n-unrealistic": audit.get("n-unrealistic", math.nan),
        "external": gains,
    }


def _run_minutes(run_dir: Path) -> float:
    """Minutes of a finished run's phases, from its results file."""
    timings = json.loads((run_dir / "results.json").read_text()).get("timings", {})
    seconds = sum(float(v) for k, v in timings.items() if k in PHASES)
    return round(seconds / 60, 2)


def _comparison(run_dir: Path, model: str) -> dict[str, float]:
    """The pooled external paired DeLong test of ``model`` vs ``local-B``."""
    with (run_dir / "comparisons.csv").open() as handle:
        for row in csv.DictReader(handle):
            if (row["scope"], row["model_a"], row["model_b"]) == (
                "external",
                model,
                "local-B",
            ):
                return {
                    "difference": float(row["difference"]),
                    "p-value": float(row["p-value"]),
                }
    return {}


def write_markdown(rows: list[dict[str, Any]], info: dict[str, Any]) -> str:
    """Render the per-seed table."""
    lines = [
        "# Generative part of the demo, per seed",
        "",
        f"Config configs/simulation.yaml, phases {', '.join(PHASES)}.",
        "",
        "| seed | min | FD syn/real neg | FD syn/real pos | P/R syn pos | "
        "released per class | curation AUC | B alone | best B+syn (model) | "
        "DeLong p |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        f = row["fidelity"]
        best = max(row["external"], key=lambda g: g["auc"], default=None)
        released = ", ".join(
            f"{k.rsplit('-', 1)[1]}: {v}"
            for k, v in sorted(row["released"].items())
            if "released" in k
        )
        lines.append(
            f"| {row['seed']} | {row['minutes']:.1f} | "
            f"{f['fd-synthetic-neg']:.3g}/{f['fd-real-neg']:.3g} | "
            f"{f['fd-synthetic-pos']:.3g}/{f['fd-real-pos']:.3g} | "
            f"{f['precision-synthetic-pos']:.2f}/{f['recall-synthetic-pos']:.2f} | "
            f"{released} | {row['curation-val-auc']:.3f} | "
            + (
                f"{best['b-alone-auc']:.3f} | {best['auc']:.3f} ({best['model']}) | "
                f"{best['p']:.3g} |"
                if best
                else "n/a | n/a | n/a |"
            )
        )
    held = sum(
        1
        for row in rows
        for g in row["external"][:1]
        if max(row["external"], key=lambda x: x["auc"])["p"] is not None
        and max(row["external"], key=lambda x: x["auc"])["p"] < 0.05
        and max(row["external"], key=lambda x: x["auc"])["difference"] > 0
    )
    lines += [
        "",
        f"Gain with p < 0.05 in {held} of {len(rows)} seeds.",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()),
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    """Run the seeds and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--config", type=Path, default=Path("configs/simulation.yaml"))
    parser.add_argument(
        "--from-run",
        action="append",
        default=[],
        metavar="SEED=RUN_DIR",
        help="use a finished run's files for this seed",
    )
    args = parser.parse_args()
    done = {int(k): Path(v) for k, v in (item.split("=", 1) for item in args.from_run)}
    rows = [
        {
            "seed": seed,
            "minutes": _run_minutes(done[seed]),
            "run_dir": str(done[seed]),
            **figures(done[seed]),
        }
        if seed in done
        else run_seed(args.config, seed)
        for seed in args.seeds
    ]
    info = machine_info()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "generative_seeds.json").write_text(
        json.dumps({"rows": rows, "machine": info}, indent=2, default=str) + "\n"
    )
    (RESULTS / "generative_seeds.md").write_text(write_markdown(rows, info))
    print((RESULTS / "generative_seeds.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
