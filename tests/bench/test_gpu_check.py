"""The GPU check (bench/gpu_check.sh): its code paths at toy size on the CPU,
the recording of a failed measurement, and its exit where there is no GPU.

The GPU figures themselves need a GPU; these tests keep the script correct
until one runs it.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def gpu_check(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    monkeypatch.delenv("OUT", raising=False)
    return importlib.import_module("gpu_benchmarks")


def _results(folder: Path) -> tuple[dict[str, Any], str]:
    return (
        json.loads((folder / "gpu_smoke.json").read_text()),
        (folder / "gpu_smoke.md").read_text(),
    )


def test_smoke_run_records_every_figure(gpu_check: ModuleType, tmp_path: Path) -> None:
    required = importlib.import_module("gpu_measurements").REQUIRED_FIGURES

    code = gpu_check.main(["--smoke", "--results-dir", str(tmp_path)])

    result, page = _results(tmp_path)
    assert code == 0
    assert set(result["measurements"]) == set(required)
    for name, figures in required.items():
        record = result["measurements"][name]
        assert "error" not in record, record.get("error")
        assert set(figures) <= set(record["figures"])
        assert f"## {name}" in page
    assert "extrapolated linearly" in result["measurements"]["audit"]["figures"]["note"]
    assert {"gpu", "torch", "git_commit", "date"} <= set(result["machine"])


def test_a_failed_measurement_is_recorded_and_the_others_still_run(
    gpu_check: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def measured(sizes: object, budget_s: float, figures: dict[str, Any]) -> None:
        figures["images_per_s"] = 1.0

    def out_of_memory(sizes: object, budget_s: float, figures: dict[str, Any]) -> None:
        figures["warmup_step_s"] = 2.0
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setitem(gpu_check.MEASUREMENTS, "classifier", measured)
    monkeypatch.setitem(gpu_check.MEASUREMENTS, "gan", out_of_memory)
    monkeypatch.setitem(gpu_check.MEASUREMENTS, "audit", measured)

    code = gpu_check.main(["--smoke", "--results-dir", str(tmp_path)])

    result, page = _results(tmp_path)
    gan = result["measurements"]["gan"]
    assert code == 1
    assert gan["error"] == "RuntimeError: CUDA out of memory"
    assert gan["figures"] == {"warmup_step_s": 2.0}
    assert result["measurements"]["classifier"]["figures"] == {"images_per_s": 1.0}
    assert result["measurements"]["audit"]["figures"] == {"images_per_s": 1.0}
    assert "**Failed**" in page


def test_without_cuda_the_benchmark_skips_and_writes_nothing(
    gpu_check: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: False)

    skipped = gpu_check.main(["--results-dir", str(tmp_path)])
    required = gpu_check.main(["--results-dir", str(tmp_path), "--require-gpu"])

    assert skipped == 0
    assert capsys.readouterr().out.strip() == gpu_check.SKIPPED
    assert required == 2
    assert list(tmp_path.iterdir()) == []


def test_gpu_check_script_exits_cleanly_without_a_gpu(tmp_path: Path) -> None:
    env = {**os.environ, "FEDBONE_GPU_CHECK_NO_GPU": "1", "OUT": str(tmp_path)}

    done = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "no CUDA GPU: skipped"
    assert list(tmp_path.iterdir()) == []
