"""DP-SGD overhead: time per epoch and peak memory, DP vs non-DP, same model, data.

Run with ``.venv/bin/python bench/dp_overhead.py``. Writes
``bench/results/dp_overhead.json`` and ``.md`` with machine info.

One cache of ``--scans`` canvases at the CPU profile (256 x 64, one channel;
random background, positives with a bright spot) is written once; every
variant trains on it in its own subprocess, so each peak memory figure (peak
RSS from ``resource.getrusage``, or ``torch.cuda.max_memory_allocated`` on
CUDA) belongs to that variant alone. Variants, per model (small CNN and
ResNet-18, both with group norm):

- ``non-dp``: :func:`~fedbone.classifier.local.train_local`, uniform sampling
  (``Sampling.NONE``), no augmentation, AMP off;
- ``dp-ghost``: :func:`~fedbone.classifier.dp_local.train_local_dp`, Opacus
  fast gradient / ghost clipping;
- ``dp-hooks``: the same with classic per-sample gradient hooks.

All use batch 16 and AdamW. An epoch visits ``scans / 16`` batches (Poisson
batches for DP). A variant first takes two warm-up steps, then is timed over
``--steps`` optimiser steps (default: a whole epoch for the small CNN, 4 for
ResNet-18 to stay within minutes on two cores); seconds per epoch are that
time scaled to the steps of a whole epoch, and the JSON says when it was.

Target (issue #5): DP / non-DP <= 2.5 per epoch.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_data import machine_info  # type: ignore[import-not-found]

from fedbone.classifier.augment import AugmentSpec
from fedbone.classifier.dp_local import train_local_dp
from fedbone.classifier.local import TrainSpec, train_local
from fedbone.classifier.sampling import Sampling
from fedbone.config.profiles import profile_spec
from fedbone.data.cache import SiteCache
from fedbone.data.spot_cache import SpotCacheRecipe, write_spot_cache
from fedbone.models import Architecture, ClassifierSpec, Norm, build_classifier
from fedbone.privacy.dp_sgd import DpSgdSpec

RESULTS = Path(__file__).resolve().parent / "results"
BATCH_SIZE = 16
MODES = ("non-dp", "dp-ghost", "dp-hooks")
MODELS = (Architecture.SMALL_CNN, Architecture.RESNET18)


def write_cache(folder: Path, scans: int) -> Path:
    """Write ``scans`` CPU-profile canvases (a third positive); return the cache."""
    recipe = SpotCacheRecipe(
        spec=profile_spec("cpu"),
        count=scans,
        seed=0,
        spot_half=2,
        margin=(8, 4),
        split=lambda i: "val" if i % 16 == 15 else "train",
    )
    return write_spot_cache(folder, recipe).cache_dir


def run_variant(cache_dir: Path, model_name: str, mode: str, steps: int | None) -> dict:
    """Time one variant in this process; return its figures."""
    cache = SiteCache.open(cache_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    spec = ClassifierSpec(architecture=Architecture(model_name), norm=Norm.GROUP)

    def train(max_steps: int | None) -> float:
        torch.manual_seed(0)
        model = build_classifier(spec)
        settings = TrainSpec(
            epochs=1,
            batch_size=BATCH_SIZE,
            sampling=Sampling.NONE,
            augment=AugmentSpec(enabled=False),
            device=device,
            amp=False,
            max_batches_per_epoch=max_steps,
        )
        started = time.perf_counter()
        if mode == "non-dp":
            train_local(model, cache, "bm", settings)
        else:
            dp = DpSgdSpec(
                noise_multiplier=1.0, delta=1e-5, clipping=mode.removeprefix("dp-")
            )
            train_local_dp(
                model, cache, "bm", settings, dp, state=None, planned_steps=None
            )
        return time.perf_counter() - started

    train(2)  # warm-up: kernels, allocator, page cache
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = train(steps)
    n_train = len(cache.indices("train"))
    epoch_steps = -(-n_train // BATCH_SIZE)
    timed_steps = epoch_steps if steps is None else min(steps, epoch_steps)
    if device == "cuda":
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "model": model_name,
        "mode": mode,
        "device": device,
        "timed_steps": timed_steps,
        "epoch_steps": epoch_steps,
        "extrapolated": timed_steps < epoch_steps,
        "timed_s": round(seconds, 3),
        "epoch_s": round(seconds * epoch_steps / timed_steps, 3),
        "peak_memory_mib": round(peak_mib, 1),
        "peak_memory_kind": "cuda max allocated" if device == "cuda" else "peak RSS",
    }


def markdown(result: dict) -> str:
    """Render the figures as a table."""
    lines = [
        "# DP-SGD overhead",
        "",
        f"{result['settings']['data']}; batch {BATCH_SIZE}; noise 1.0, clip 1.0.",
        "",
        "| model | mode | s/epoch | x non-DP | peak memory MiB | timed steps |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["variants"]:
        lines.append(
            f"| {row['model']} | {row['mode']} | {row['epoch_s']} | "
            f"{row['ratio_to_non_dp']} | {row['peak_memory_mib']} | "
            f"{row['timed_steps']}/{row['epoch_steps']}"
            + (" (extrapolated)" if row["extrapolated"] else "")
            + " |"
        )
    machine = ", ".join(f"{k} {v}" for k, v in result["machine"].items())
    lines += ["", f"Target: DP / non-DP <= 2.5. Machine: {machine}", ""]
    return "\n".join(lines)


def main() -> None:
    """Write the cache, run every variant in a subprocess, write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=256)
    parser.add_argument("--resnet-steps", type=int, default=4)
    parser.add_argument(
        "--variant", nargs=4, metavar=("CACHE", "MODEL", "MODE", "STEPS")
    )
    args = parser.parse_args()
    if args.variant:
        cache_dir, model_name, mode, steps = args.variant
        steps_cap = None if steps == "epoch" else int(steps)
        figures = run_variant(Path(cache_dir), model_name, mode, steps_cap)
        sys.stdout.write(json.dumps(figures) + "\n")
        return

    with tempfile.TemporaryDirectory(prefix="fedbone-dp-bench-") as work:
        cache_dir = write_cache(Path(work), args.scans)
        rows = []
        for model in MODELS:
            steps = (
                "epoch" if model is Architecture.SMALL_CNN else str(args.resnet_steps)
            )
            for mode in MODES:
                done = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--variant",
                        str(cache_dir),
                        model.value,
                        mode,
                        steps,
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    for row in rows:
        baseline = next(
            r for r in rows if r["model"] == row["model"] and r["mode"] == "non-dp"
        )
        row["ratio_to_non_dp"] = round(row["epoch_s"] / baseline["epoch_s"], 2)
        row["memory_ratio_to_non_dp"] = round(
            row["peak_memory_mib"] / baseline["peak_memory_mib"], 2
        )
    result = {
        "machine": machine_info(),
        "settings": {
            "data": f"{args.scans} synthetic canvases 256x64 (cpu profile), 1 channel",
            "batch_size": BATCH_SIZE,
            "norm": "group",
            "noise_multiplier": 1.0,
            "max_grad_norm": 1.0,
            "torch_threads": torch.get_num_threads(),
            "augmentation": "off",
            "amp": "off",
            "work": "one epoch of training + one validation pass per variant",
        },
        "variants": rows,
        "targets": {"dp_over_non_dp_epoch": "<= 2.5"},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "dp_overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "dp_overhead.md").write_text(markdown(result))
    sys.stdout.write(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
