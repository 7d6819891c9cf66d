"""Data-layer benchmark: phantom, prepare, cache reads, peak memory.

Run with ``make bench`` (or ``.venv/bin/python bench/bench_data.py``). Writes
``bench/results/data.json`` and ``bench/results/data.md`` with machine info.

Measured, all at paper scale (two-frame 1024x256 uncompressed NM DICOM in,
1024x256 anterior canvas out):

- phantom scans/s: ``generate_site_cohort`` writing DICOM + manifest;
- prepare scans/s: ``prepare_site_cache`` from those files;
- cache random reads images/s: ``SiteCache[i]`` for random ``i``;
- peak memory of preparing ``--big`` scans (default 5,000): resident memory of
  the whole process tree (parent + workers), sampled every 50 ms.

Targets (issue #2, 2-core machine): phantom >= 50/s, prepare >= 40/s,
cache reads >= 2,000/s, peak memory < 1 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from fedbone import __version__
from fedbone.config.profiles import profile_spec
from fedbone.data.cache import SiteCache
from fedbone.data.phantom import generate_site_cohort
from fedbone.data.phantom.profiles import SITE_PROFILES
from fedbone.data.prepare import prepare_site_cache

RESULTS = Path(__file__).resolve().parent / "results"


def machine_info() -> dict[str, object]:
    """Describe the machine and software the figures were measured on."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    import torch

    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "torch": torch.__version__,
        "fedbone": __version__,
        "git_commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


class PeakMemory:
    """Sample the resident memory of this process and its children."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    continue
            self.peak_bytes = max(self.peak_bytes, total)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def scale_for(site: str, n_scans: int) -> float:
    """The ``scale`` that gives ``n_scans`` scans for a site profile."""
    return n_scans / SITE_PROFILES[site].n_scans


def bench_phantom(out: Path, n: int, workers: int) -> tuple[float, Path]:
    """Return phantom scans/s and the cohort folder."""
    folder = out / f"phantom-{n}-w{workers}"
    started = time.perf_counter()
    summary = generate_site_cohort(
        "A",
        folder,
        scale=scale_for("A", n),
        min_scans=n,
        seed=1,
        workers=workers,
        previews=0,
    )
    elapsed = time.perf_counter() - started
    return summary.n_scans / elapsed, folder


def bench_prepare(cohort: Path, workers: int) -> tuple[float, Path, float]:
    """Return prepare scans/s, the cache folder and the peak memory in MiB."""
    cache_dir = cohort / f"cache-w{workers}"
    with PeakMemory() as memory:
        started = time.perf_counter()
        report = prepare_site_cache(
            cohort / "manifest.csv",
            cache_dir,
            profile_spec("paper"),
            workers=workers,
            force=True,
        )
        elapsed = time.perf_counter() - started
    if report.n_quarantined:
        raise RuntimeError(f"phantom scans were quarantined: {report.quarantine}")
    return report.n_cached / elapsed, cache_dir, memory.peak_bytes / 2**20


def bench_cache_reads(cache_dir: Path, n_reads: int) -> float:
    """Return random single-image reads per second from a cold-opened cache."""
    cache = SiteCache.open(cache_dir)
    order = np.random.default_rng(0).integers(0, len(cache), size=n_reads)
    checksum = 0.0
    started = time.perf_counter()
    for i in order:
        checksum += float(cache[int(i)][0, 0])
    elapsed = time.perf_counter() - started
    return n_reads / elapsed


def main() -> None:
    """Run every measurement and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="scans for throughput")
    parser.add_argument("--big", type=int, default=5000, help="scans for memory")
    parser.add_argument("--reads", type=int, default=5000)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="fedbone-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    figures: dict[str, float] = {}
    try:
        for workers in (1, 2):
            rate, cohort = bench_phantom(work, args.n, workers)
            figures[f"phantom_scans_per_s_w{workers}"] = rate
            rate, cache_dir, peak = bench_prepare(cohort, workers)
            figures[f"prepare_scans_per_s_w{workers}"] = rate
            figures[f"prepare_peak_mib_n{args.n}_w{workers}"] = peak
        figures["cache_random_reads_per_s"] = bench_cache_reads(cache_dir, args.reads)
        if args.big:
            rate, big_cohort = bench_phantom(work, args.big, 2)
            figures[f"phantom_scans_per_s_n{args.big}_w2"] = rate
            rate, _, peak = bench_prepare(big_cohort, 2)
            figures[f"prepare_scans_per_s_n{args.big}_w2"] = rate
            figures[f"prepare_peak_mib_n{args.big}_w2"] = peak
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    targets = {
        "phantom_scans_per_s_w2": (">=", 50.0),
        "prepare_scans_per_s_w2": (">=", 40.0),
        "cache_random_reads_per_s": (">=", 2000.0),
        f"prepare_peak_mib_n{args.big}_w2": ("<", 1024.0),
    }
    result = {
        "machine": machine_info(),
        "settings": {
            "n": args.n,
            "big": args.big,
            "reads": args.reads,
            "geometry": "2-frame 1024x256 uncompressed NM -> 1024x256",
        },
        "figures": {k: round(v, 1) for k, v in figures.items()},
        "targets": {k: f"{op} {v:g}" for k, (op, v) in targets.items()},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "data.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Data-layer benchmark",
        "",
        "| figure | value | target |",
        "|---|---|---|",
    ]
    for key, value in result["figures"].items():
        target = result["targets"].get(key, "")
        lines.append(f"| {key} | {value} | {target} |")
    lines += ["", "Machine:", ""]
    lines += [f"- {k}: {v}" for k, v in result["machine"].items()]
    (RESULTS / "data.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
