"""GPU check: classifier, GAN and privacy-audit throughput at 1024 x 256.

Run ``bash bench/gpu_check.sh`` on a machine with a CUDA GPU (under 8 minutes
on one H100). It runs this script, which takes the paper's sizes from
``configs/paper.yaml`` and runs the measurements of
``bench/gpu_measurements.py`` (DenseNet121 training through the project's loop
against a bare loop, the conditional GAN's training kimg/s and generation
images/s, the privacy audit timed on a slice and extrapolated), each in its own
process under a time cap so that the whole run stays within ``--budget-s``. A
measurement that fails or runs out of time is recorded with its error, and the
others still are. Writes ``bench/results/gpu.json`` and ``.md`` with the
machine's details, and copies both to ``$OUT`` when it is set.

Without a CUDA GPU it prints "no CUDA GPU: skipped" and writes nothing.
``--smoke`` runs every measurement at toy size on the CPU, in this process, in
seconds: it checks the code paths and gives no GPU figure. Its files
(``gpu_smoke.*``) go to a temporary folder unless ``--results-dir`` is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_data import machine_info
from gpu_measurements import MEASUREMENTS, CheckSizes, paper_sizes, smoke_sizes

from fedbone.classifier.runtime import torch_threads
from fedbone.config.study import load_study_config

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
logger = logging.getLogger("gpu-check")

SKIPPED = "no CUDA GPU: skipped"
STUDY = ROOT / "configs" / "paper.yaml"
#: Most seconds each measurement may take, its process's start included;
#: ``None``: whatever the budget has left (the audit runs last).
CAPS: dict[str, float | None] = {"classifier": 90.0, "gan": 120.0, "audit": None}
#: Below this many seconds a measurement is not started.
MIN_CAP_S = 20.0
#: Seconds a measurement stopped at its cap has to record what it measured.
GRACE_S = 15.0


def check_sizes(smoke: bool, audit_slice: int | None) -> CheckSizes:
    """Return the sizes of this run from the paper's study file."""
    study = load_study_config(STUDY, base_dir=ROOT)
    sizes = smoke_sizes(study) if smoke else paper_sizes(study)
    if audit_slice is not None:
        sizes = dataclasses.replace(sizes, audit_slice=audit_slice)
    return sizes


class CapReached(BaseException):
    """Raised in a measurement's process when its parent stops it at the cap.

    A ``BaseException``, like ``KeyboardInterrupt``, so that no ``except
    Exception`` on the way swallows it.
    """


def _stop_at_cap(signum: int, frame: object) -> None:
    raise CapReached("stopped at its time cap; figures so far are kept")


def run_inline(name: str, sizes: CheckSizes, budget_s: float) -> dict[str, Any]:
    """Run one measurement in this process; record its figures and any error.

    A measurement that fails keeps the figures it had recorded.
    """
    started = time.perf_counter()
    figures: dict[str, Any] = {}
    record: dict[str, Any] = {"figures": figures}
    try:
        MEASUREMENTS[name](sizes, budget_s, figures)
    except (Exception, CapReached) as error:
        traceback.print_exc()
        record["error"] = f"{type(error).__name__}: {error}"
    return {"seconds": round(time.perf_counter() - started, 1), **record}


def run_isolated(
    name: str, cap_s: float, smoke: bool, audit_slice: int | None
) -> dict[str, Any]:
    """Run one measurement in a fresh process stopped after ``cap_s`` seconds.

    A fresh process gives each measurement a clean GPU (no memory left over by
    the previous one) and lets an overrun or a crash be recorded as an error.
    At ``cap_s - GRACE_S`` the process is asked to stop (SIGTERM) and records
    what it has; at ``cap_s`` it is killed.
    """
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fedbone-gpu-check-") as folder:
        result_file = Path(folder) / f"{name}.json"
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            name,
            "--child-result",
            str(result_file),
            "--cap-s",
            f"{cap_s - GRACE_S:.0f}",
        ]
        if smoke:
            command.append("--smoke")
        if audit_slice is not None:
            command += ["--audit-slice", str(audit_slice)]
        process = subprocess.Popen(command)
        try:
            process.wait(timeout=cap_s - GRACE_S)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(timeout=GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if result_file.exists():
            record: dict[str, Any] = json.loads(result_file.read_text())
        else:
            record = {
                "error": f"its process ended with code {process.returncode} "
                f"before recording a result (cap {cap_s:.0f} s; see the log)"
            }
    record["seconds"] = round(time.perf_counter() - started, 1)
    record["cap_s"] = round(cap_s)
    return record


def run_capped(
    name: str,
    left_s: float,
    sizes: CheckSizes,
    args: argparse.Namespace,
    isolate: bool,
) -> dict[str, Any]:
    """Run one measurement within its cap and what the budget has left.

    Parameters
    ----------
    name
        Which measurement.
    left_s
        Seconds left of the whole run's budget.
    sizes
        This run's sizes (used in this process only).
    args
        The command line (smoke, audit slice).
    isolate
        Run it in a fresh process, stopped at the cap.
    """
    cap = min(CAPS[name] or left_s, left_s)
    if cap < MIN_CAP_S:
        return {"seconds": 0.0, "error": f"not started: {left_s:.0f} s left"}
    logger.info("%s: started (cap %.0f s)", name, cap)
    if isolate:
        record = run_isolated(name, cap, args.smoke, args.audit_slice)
    else:
        record = run_inline(name, sizes, cap)
    logger.info("%s: %s", name, record)
    return record


def _threads(smoke: bool) -> int | None:
    """One torch thread for the toy sizes: spinning threads swamp tiny kernels."""
    return 1 if smoke else None


def child_main(args: argparse.Namespace) -> int:
    """Run the one measurement a parent process asked for; write its record."""
    started = time.perf_counter()
    signal.signal(signal.SIGTERM, _stop_at_cap)
    sizes = check_sizes(args.smoke, args.audit_slice)
    budget = args.cap_s - (time.perf_counter() - started)
    with torch_threads(_threads(args.smoke)):
        record = run_inline(args.child, sizes, budget)
    Path(args.child_result).write_text(json.dumps(record) + "\n")
    return 0


def gpu_info() -> dict[str, Any]:
    """Describe the GPU, its driver and the CUDA build of torch."""
    if not torch.cuda.is_available():
        return {"gpu": "none", "torch_cuda": torch.version.cuda}
    properties = torch.cuda.get_device_properties(0)
    try:
        listed = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
    except OSError:
        listed = ""
    driver = listed.split("\n")[0].strip()
    return {
        "gpu": properties.name,
        "gpu_count": torch.cuda.device_count(),
        "gpu_memory_gib": round(properties.total_memory / 2**30, 1),
        "compute_capability": f"{properties.major}.{properties.minor}",
        "driver": driver or "unknown",
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
    }


def machine() -> dict[str, Any]:
    """Return the machine info of ``bench_data`` with the GPU's added."""
    info: dict[str, Any] = {**machine_info(), **gpu_info()}
    if not info.get("git_commit"):
        # The GPU machine may get the working tree without its .git folder.
        info["git_commit"] = os.environ.get("FEDBONE_GIT_COMMIT", "unknown")
    return info


def _value(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:,.4g}"


def render_markdown(result: dict[str, Any]) -> str:
    """Return the results as the Markdown page ``bench/results/gpu.md``."""
    sizes = result["sizes"]
    gan = sizes["gan"]
    lines = [
        "# GPU check",
        "",
        result["note"],
        "",
        f"Canvas {sizes['height']}x{sizes['width']} on {sizes['device']}; "
        f"budget {result['budget_s']:.0f} s, whole run {result['wall_s']:.0f} s.",
        f"Classifier {sizes['classifier']}, batch {sizes['classifier_batch']}, "
        f"{sizes['classifier_warmup']} warm-up + {sizes['classifier_steps']} timed "
        f"steps. GAN base/max channels {gan['base_channels']}/"
        f"{gan['max_channels']}, latent {gan['latent_dim']}, batch "
        f"{gan['batch_size']}, {sizes['gan_warmup']} warm-up steps. Audit: "
        f"{sizes['audit_slice']} synthetic x {sizes['audit_training']} training, "
        f"{sizes['audit_held_out']} held-out, extrapolated to "
        f"{sizes['audit_target']} synthetic.",
        "",
    ]
    for name, record in result["measurements"].items():
        figures = record.get("figures", {})
        lines += [f"## {name}", ""]
        if "error" in record:
            lines += [f"**Failed** after {record['seconds']} s: {record['error']}", ""]
            if figures:
                lines += ["Figures recorded before it stopped:", ""]
        else:
            lines += [f"Measured in {record['seconds']} s.", ""]
        if figures:
            lines += ["| figure | value |", "|---|---|"]
            lines += [
                f"| {key} | {_value(value)} |"
                for key, value in figures.items()
                if key != "note"
            ]
            lines.append("")
        if "note" in figures:
            lines += [f"Note: {figures['note']}.", ""]
    lines += ["## Machine", ""]
    lines += [f"- {key}: {value}" for key, value in result["machine"].items()]
    return "\n".join(lines) + "\n"


def write_results(
    result: dict[str, Any],
    folder: Path,
    stem: str,
    out: str | None,
    render: Callable[[dict[str, Any]], str] | None = None,
) -> list[Path]:
    """Write ``<stem>.json`` and ``.md`` to ``folder`` (and copy them to ``out``).

    ``render`` turns the result into the Markdown (default: this check's).
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{stem}.json", folder / f"{stem}.md"]
    paths[0].write_text(json.dumps(result, indent=2) + "\n")
    paths[1].write_text((render or render_markdown)(result))
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        for path in paths:
            shutil.copy(path, Path(out) / path.name)
    return paths


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--smoke", action="store_true", help="toy sizes on the CPU, in seconds"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=list(MEASUREMENTS),
        help="run only this measurement (repeatable)",
    )
    parser.add_argument("--results-dir", type=Path, default=None)
    parser.add_argument(
        "--out", default=os.environ.get("OUT"), help="also copy the files here"
    )
    parser.add_argument(
        "--budget-s", type=float, default=None, help="whole run (default 450; 120)"
    )
    parser.add_argument("--audit-slice", type=int, default=None)
    isolation = parser.add_mutually_exclusive_group()
    isolation.add_argument(
        "--isolate",
        dest="isolate",
        action="store_true",
        default=None,
        help="each measurement in its own capped process (default without --smoke)",
    )
    isolation.add_argument(
        "--inline",
        dest="isolate",
        action="store_false",
        help="every measurement in this process (default with --smoke)",
    )
    parser.add_argument(
        "--require-gpu",
        action="store_true",
        help="fail (code 2) instead of skipping when torch sees no CUDA GPU",
    )
    parser.add_argument("--child", choices=list(MEASUREMENTS), help=argparse.SUPPRESS)
    parser.add_argument("--child-result", help=argparse.SUPPRESS)
    parser.add_argument("--cap-s", type=float, default=0.0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Measure, write the results; return 0 when every measurement succeeded."""
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    if not args.smoke and not torch.cuda.is_available():
        if args.require_gpu:
            print(
                f"torch {torch.__version__} (CUDA build: {torch.version.cuda}) "
                "sees no CUDA GPU; where nvidia-smi lists one, install the CUDA "
                "build of torch (rm -rf .venv && make install there) and run again",
                file=sys.stderr,
            )
            return 2
        print(SKIPPED)
        return 0
    started = time.perf_counter()
    budget = args.budget_s or (120.0 if args.smoke else 450.0)
    isolate = (not args.smoke) if args.isolate is None else args.isolate
    sizes = check_sizes(args.smoke, args.audit_slice)
    measurements: dict[str, dict[str, Any]] = {}
    with torch_threads(_threads(args.smoke)):
        for name in args.only or list(MEASUREMENTS):
            left = budget - (time.perf_counter() - started)
            measurements[name] = run_capped(name, left, sizes, args, isolate)
    result = {
        "note": (
            "Smoke run: toy sizes on the CPU, to check the code paths; no GPU figure."
            if args.smoke
            else "Measured on the GPU named under Machine."
        ),
        "sizes": sizes.describe(),
        "budget_s": budget,
        "wall_s": round(time.perf_counter() - started, 1),
        "measurements": measurements,
        "machine": machine(),
    }
    if args.smoke:
        folder = args.results_dir or Path(tempfile.mkdtemp(prefix="fedbone-gpu-smoke-"))
    else:
        folder = args.results_dir or BENCH / "results"
    stem = "gpu_smoke" if args.smoke else "gpu"
    for path in write_results(result, folder, stem, args.out):
        print(f"wrote {path}")
    return 1 if any("error" in record for record in measurements.values()) else 0


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", force=True
    )
    sys.exit(main())
