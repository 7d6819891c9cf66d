"""The phantom enhancement study (CPU profile) and its figures, with machine info.

Runs ``fedbone simulate configs/enhance.yaml`` in-process (phantom sites A and
B train, C validates only; every enhancer at 2x and 3x, plus real 2x/3x
phantom acquisitions), times it, and writes the pooled tables::

    .venv/bin/python bench/enhance_study.py [configs/enhance.yaml]

Writes ``bench/results/enhance.json`` (the run's ``enhance.json`` plus timing
and machine info) and ``bench/results/enhance.md`` (tables). The phantom
sites are reused when they exist (``simulation.sites_dir``); the first run
also generates and prepares them, and its time is the one a fresh clone sees.
"""

from __future__ import annotations

import json
import math
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_data import machine_info

from fedbone.config.study import load_study_config
from server.simulation import simulate_study

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def _f(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "-"


def _quality(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| image set | n | PSNR (dB) | SSIM | MS-SSIM | perceptual | FD |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['image_set']} | {row['n']} | {_f(row['psnr'], 2)} ± "
            f"{_f(row['psnr_sd'], 2)} | {_f(row['ssim'], 4)} | "
            f"{_f(row['ms-ssim'], 4)} | {_f(row['perceptual'], 4)} | "
            f"{row['fd']:.3g} |"
        )
    return lines


def _agreement(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| image set | n | bias (counts) | 95% limits | Pearson r |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['image_set']} | {row['n']} | {_f(row['bias'], 1)} | "
            f"{_f(row['lower'], 1)} to {_f(row['upper'], 1)} | "
            f"{_f(row['pearson_r'], 4)} |"
        )
    return lines


def _equivalence(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| image set | n +/- | AUC (95% CI) | standard AUC | difference | "
        "one-sided 95% lower bound | non-inferior (margin) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['image_set']} | {row['n_positive']}/{row['n_negative']} | "
            f"{_f(row['auc'], 3)} ({_f(row['auc_low'], 3)}-{_f(row['auc_high'], 3)})"
            f" | {_f(row['auc_standard'], 3)} | {row['difference']:+.3f} | "
            f"{row['lower_bound']:+.3f} | "
            f"{'yes' if row['non_inferior'] else 'no'} ({row['margin']:.2f}) |"
        )
    return lines


def main(argv: list[str]) -> int:
    """Run the study and write the figures."""
    config = Path(argv[0]) if argv else ROOT / "configs" / "enhance.yaml"
    study = load_study_config(config, base_dir=ROOT)
    started = time.perf_counter()
    outcome = simulate_study(study)
    seconds = time.perf_counter() - started
    run_dir = outcome.run_dir
    enhance = json.loads((run_dir / "enhance" / "enhance.json").read_text())
    timings = json.loads((run_dir / "results.json").read_text()).get("timings", {})
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    payload = {
        "date": when,
        "config": str(config.relative_to(ROOT) if config.is_absolute() else config),
        "run": run_dir.name,
        "seconds": seconds,
        "phase_seconds": timings,
        "machine": machine_info(),
        **enhance,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "enhance.json").write_text(json.dumps(payload, indent=2) + "\n")
    phases = ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
    lines = [
        "# Fast-scan enhancement on the phantom study (CPU profile)",
        "",
        f"Measured {when} with `python bench/enhance_study.py` "
        f"(`{payload['config']}`, run `{run_dir.name}`).",
        f"Whole command {seconds:.0f} s (phases: {phases}).",
        f"Machine: {json.dumps(payload['machine'])}",
        "",
        "Pooled over the sites that evaluated each set "
        f"({', '.join(enhance['sites'])}); '-real' levels are the phantom's "
        "real fast acquisitions, the others binomially thinned standard scans; "
        "'fast' is the unenhanced fast scan scaled to the standard acquisition.",
        "",
        "## Image quality (mean ± SD over scans; FD: scan-weighted mean of the "
        "sites' own FDs)",
        "",
        *_quality(enhance["quality"]),
        "",
        "## Count-level consistency of the hottest focus (positive patients)",
        "",
        *_agreement(enhance["agreement"]),
        "",
        "## Diagnostic equivalence (federated classifier; paired DeLong vs standard)",
        "",
        *_equivalence(enhance["equivalence"]),
        "",
    ]
    (RESULTS / "enhance.md").write_text("\n".join(lines))
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
