"""The enhancer speed benchmark (bench/bench_enhance_speed.py) at toy size.

Its figures need a real run (``--profile cpu``, or ``paper`` on a GPU from
bench/gpu_check.sh); these tests keep its code paths correct until then.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIGURES = (
    "train_patches_per_s",
    "train_images_per_s",
    "train_peak_gib",
    "inference_images_per_s",
    "inference_peak_gib",
)


@pytest.fixture
def speed_bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    monkeypatch.delenv("OUT", raising=False)
    return importlib.import_module("bench_enhance_speed")


def _smoke(bench: ModuleType, folder: Path, *extra: str) -> int:
    toy = ["--profile", "smoke", "--device", "cpu", "--results-dir", str(folder)]
    return int(bench.main([*toy, *extra]))


def test_smoke_run_records_every_method_and_figure(
    speed_bench: ModuleType, tmp_path: Path
) -> None:
    code = _smoke(
        speed_bench, tmp_path, "--stem", "speed", "--out", str(tmp_path / "o")
    )

    result = json.loads((tmp_path / "speed.json").read_text())
    page = (tmp_path / "speed.md").read_text()
    assert code == 0
    assert list(result["methods"]) == ["dncnn", "ddsrcnn", "rrdbnet"]
    for record in result["methods"].values():
        assert "error" not in record, record.get("error")
        assert set(FIGURES) <= set(record["figures"])
        assert record["figures"]["train_patches_per_s"] > 0
    assert result["device"] == "cpu"
    assert result["sizes"]["profile"] == "smoke"
    assert {"gpu", "torch", "git_commit", "date"} <= set(result["machine"])
    assert "| inference images/s (whole scans) |" in page
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "speed.json",
        "speed.md",
    ]


def test_a_tight_budget_times_fewer_steps(
    speed_bench: ModuleType, tmp_path: Path
) -> None:
    _smoke(speed_bench, tmp_path, "--budget-s", "0.001")

    result = json.loads((tmp_path / "enhance_speed.json").read_text())
    figures = result["methods"]["dncnn"]["figures"]
    assert figures["timed_steps"] == 2
    assert figures["inference_images"] == 2


def test_a_failed_method_is_recorded_and_the_others_still_run(
    speed_bench: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    measure = speed_bench.measure_method

    def out_of_memory(method: str, *args: Any) -> None:
        if method == "ddsrcnn":
            args[-1]["warmup_step_s"] = 2.0
            raise RuntimeError("CUDA out of memory")
        measure(method, *args)

    monkeypatch.setattr(speed_bench, "measure_method", out_of_memory)

    code = _smoke(speed_bench, tmp_path)

    result = json.loads((tmp_path / "enhance_speed.json").read_text())
    failed = result["methods"]["ddsrcnn"]
    assert code == 1
    assert failed["error"] == "RuntimeError: CUDA out of memory"
    assert failed["figures"] == {"warmup_step_s": 2.0}
    assert "error" not in result["methods"]["rrdbnet"]
    assert "**ddsrcnn failed**" in (tmp_path / "enhance_speed.md").read_text()
