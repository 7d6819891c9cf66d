"""A tiny prepared cache whose positives carry a bright spot (fast to learn)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from fedbone.data.cache import CacheRecord, CacheWriter, SiteCache, install_cache
from fedbone.data.spec import PreprocessSpec

SPEC = PreprocessSpec(spacing_mm=8.0, canvas_height=32, canvas_width=16)
SPLITS = ("train",) * 6 + ("val", "val", "test", "test")


def toy_record(i: int, split: str, label_bm: int | None) -> CacheRecord:
    return CacheRecord(
        scan_id=f"s{i}",
        patient_id=f"P{i}",
        split=split,
        label_bm=label_bm,
        label_ca=None,
        perugini_grade=None,
        age=None,
        sex=None,
        study_date=None,
        tracer=None,
        scanner=None,
        endpoints={},
        scan_file=f"s{i}.dcm",
        row_number=i + 2,
    )


def toy_label(i: int) -> int | None:
    """Every third scan positive; every 13th unlabelled."""
    if i % 13 == 5:
        return None
    return int(i % 3 == 0)


def build_toy_cache(folder: Path, count: int = 60, width: int = 16) -> SiteCache:
    """Write and open a cache of ``count`` 32 x ``width`` images."""
    spec = dataclasses.replace(SPEC, canvas_width=width)
    rng = np.random.default_rng(7)
    staging = folder / ".cache.partial"
    writer = CacheWriter(staging, count, spec.output_shape)
    for i in range(count):
        label = toy_label(i)
        image = 0.3 * rng.random(spec.output_shape, dtype=np.float32)
        if label == 1:
            row = int(rng.integers(4, 28))
            column = int(rng.integers(2, width - 2))
            image[row - 1 : row + 1, column - 1 : column + 1] = 1.0
        writer.append(image, toy_record(i, SPLITS[i % len(SPLITS)], label))
    writer.finish({"spec": dataclasses.asdict(spec)})
    install_cache(staging, folder / "cache")
    return SiteCache.open(folder / "cache")
