"""A tiny prepared cache with both labels, for the generative workflow."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from fedbone.data.cache import CacheRecord, CacheWriter, SiteCache, install_cache
from fedbone.data.spec import PreprocessSpec

SPEC = PreprocessSpec(spacing_mm=8.0, canvas_height=64, canvas_width=32)
SPLITS = ("train",) * 7 + ("val", "test", "test")


def build_labelled_cache(folder: Path, count: int = 60) -> SiteCache:
    """``count`` 64 x 32 images; bm positives carry a hot spot; 2 scans/patient."""
    rng = np.random.default_rng(3)
    staging = folder / ".cache.partial"
    writer = CacheWriter(staging, count, SPEC.output_shape)
    for i in range(count):
        bm, ca = int(i % 3 == 0), int(i % 4 == 1)
        image = 0.2 + 0.2 * rng.random(SPEC.output_shape, dtype=np.float32)
        if bm:
            row, column = int(rng.integers(8, 56)), int(rng.integers(4, 28))
            image[row - 2 : row + 2, column - 2 : column + 2] = 1.0
        record = CacheRecord(
            scan_id=f"s{i}",
            patient_id=f"P{i // 2}",
            split=SPLITS[i % len(SPLITS)],
            label_bm=bm,
            label_ca=ca,
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
        writer.append(image, record)
    writer.finish({"spec": dataclasses.asdict(SPEC)})
    install_cache(staging, folder / "cache")
    return SiteCache.open(folder / "cache")
