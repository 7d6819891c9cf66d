"""The two tiny caches unit tests train on, as recipes of one builder.

``toy``: 32 x W noise, every third scan bm-positive with a 2 x 2 spot, every
13th unlabelled, one scan per patient. ``labelled``: 64 x 32, both tasks
labelled, a 4 x 4 spot, two scans per patient (for the generative workflow).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fedbone.data.cache import SiteCache
from fedbone.data.spec import PreprocessSpec
from fedbone.data.spot_cache import SpotCacheRecipe, write_spot_cache

TOY_SPEC = PreprocessSpec(spacing_mm=8.0, canvas_height=32, canvas_width=16)
TOY_SPLITS = ("train",) * 6 + ("val", "val", "test", "test")
LABELLED_SPEC = PreprocessSpec(spacing_mm=8.0, canvas_height=64, canvas_width=32)
LABELLED_SPLITS = ("train",) * 7 + ("val", "test", "test")


def toy_label(i: int) -> int | None:
    """Every third scan positive; every 13th unlabelled."""
    if i % 13 == 5:
        return None
    return int(i % 3 == 0)


def toy_split(i: int) -> str:
    return TOY_SPLITS[i % len(TOY_SPLITS)]


def build_toy_cache(folder: Path, count: int = 60, width: int = 16) -> SiteCache:
    """Write and open a cache of ``count`` 32 x ``width`` images."""
    recipe = SpotCacheRecipe(
        spec=dataclasses.replace(TOY_SPEC, canvas_width=width),
        count=count,
        seed=7,
        split=toy_split,
        label_bm=toy_label,
    )
    return write_spot_cache(folder, recipe)


def build_labelled_cache(folder: Path, count: int = 60) -> SiteCache:
    """``count`` 64 x 32 images; bm positives carry a hot spot; 2 scans/patient."""
    recipe = SpotCacheRecipe(
        spec=LABELLED_SPEC,
        count=count,
        seed=3,
        background=0.2,
        amplitude=0.2,
        spot_half=2,
        margin=(8, 4),
        split=lambda i: LABELLED_SPLITS[i % len(LABELLED_SPLITS)],
        label_bm=lambda i: int(i % 3 == 0),
        label_ca=lambda i: int(i % 4 == 1),
        patient=lambda i: f"P{i // 2}",
    )
    return write_spot_cache(folder, recipe)
