"""The paper's Fig. 1b on phantom data: external AUC against the real:synthetic mix.

Runs ``configs/ratio-sweep.yaml`` (B trained alone, with A's synthetic images
at 1:1 ... 1:100, and on synthetic images only) through Flower's simulation
runtime and copies the run's Fig. 1b (``ratio_sweep.png``) and table
(``ratio_sweep.csv``) to ``bench/results/``, with ``ratio_sweep.md``: the
pooled external AUC per model and its paired DeLong test against B alone.
About 20 minutes on the 2-core CPU machine::

    .venv/bin/python bench/ratio_sweep.py
"""

from __future__ import annotations

import csv
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_data import machine_info

from fedbone.config.study import load_study_config
from server.simulation import simulate_study

RESULTS = Path(__file__).resolve().parent / "results"
CONFIG = Path("configs/ratio-sweep.yaml")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def write_markdown(run_dir: Path, minutes: float) -> str:
    """Render the pooled external table of one sweep run."""
    sweep = [
        r for r in _rows(run_dir / "ratio_sweep.csv") if r["scope"] == "pooled-external"
    ]
    tests = {
        r["model_a"]: r
        for r in _rows(run_dir / "comparisons.csv")
        if r["scope"] == "external" and r["model_b"] == "local-B"
    }
    lines = [
        "# Ratio sweep (Fig. 1b) on phantom data",
        "",
        f"`{CONFIG}`, run {run_dir.name}, {minutes:.1f} min. Pooled AUC over the "
        "validation-only sites C-F; DeLong: paired test against B alone.",
        "",
        "![Fig. 1b](ratio_sweep.png)",
        "",
        "| model | kind | ratio | external AUC (95% CI) | vs B alone | DeLong p |",
        "|---|---|---|---|---|---|",
    ]
    for r in sweep:
        test = tests.get(r["model"], {})
        diff = f"{float(test['difference']):+.3f}" if test else ""
        p = f"{float(test['p-value']):.3g}" if test else ""
        lines.append(
            f"| {r['model']} | {r['kind']} | {r['ratio'] or '-'} | "
            f"{float(r['auc']):.3f} ({float(r['low']):.3f}-{float(r['high']):.3f}) | "
            f"{diff} | {p} |"
        )
    info = machine_info()
    lines += ["", "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items())]
    return "\n".join(lines) + "\n"


def main() -> int:
    """Run the sweep and copy its figure and table."""
    started = time.perf_counter()
    outcome = simulate_study(load_study_config(CONFIG))
    minutes = (time.perf_counter() - started) / 60
    run_dir = Path(outcome.run_dir)
    RESULTS.mkdir(exist_ok=True)
    for name in ("ratio_sweep.png", "ratio_sweep.csv"):
        shutil.copy(run_dir / name, RESULTS / name)
    (RESULTS / "ratio_sweep.md").write_text(write_markdown(run_dir, minutes))
    print((RESULTS / "ratio_sweep.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
