"""Tiny phantom sites with real fast scans, prepared, for phase ``enhance``.

Phase ``enhance`` reads a site's raw counts again (its DICOM files), so its
tests need a phantom cohort, not a written cache: every visit is acquired a
second time at 2x speed (``fast_scans.csv``). A 128 x 32 canvas at 16 mm and
a dozen scans prepare in about a second. :func:`tiny_enhance_settings` is the
smallest study block the site accepts (width 8, 2 steps, 32 x 16 patches).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from fedbone.config.enhance import EnhanceSettings
from fedbone.data.cache import SiteCache
from fedbone.data.phantom import generate_site_cohort
from fedbone.data.prepare import prepare_site_cache
from fedbone.data.spec import PreprocessSpec

FAST_SCAN_SPEC = PreprocessSpec(spacing_mm=16.0, canvas_height=128, canvas_width=32)
FAST_SCANS = "fast_scans.csv"


def build_fast_scan_site(
    folder: Path, *, site: str = "B", scans: int = 12, seed: int = 3
) -> SiteCache:
    """Generate and prepare a phantom site whose every visit has a 2x scan.

    Profile ``B`` with 12 scans (seed 3) has 8 ``train`` scans, 3 of them
    ca-positive; profile ``C`` puts every scan on ``test`` (12 scans, seed 3:
    6 ca-positive, 6 ca-negative). The fast-scan manifest is
    ``folder / FAST_SCANS``.
    """
    generate_site_cohort(
        site,
        folder,
        scale=0.0,
        min_scans=scans,
        seed=seed,
        previews=0,
        fast_speeds=(2,),
    )
    prepare_site_cache(folder / "manifest.csv", folder / "cache", FAST_SCAN_SPEC)
    return SiteCache.open(folder / "cache")


def tiny_enhance_settings(**changes: Any) -> EnhanceSettings:
    """The smallest ``enhance`` block a site accepts (Gaussian and DnCNN, 2x)."""
    tiny = EnhanceSettings(
        methods=("gaussian", "dncnn"),
        levels=("2x",),
        rounds=1,
        steps_per_epoch=2,
        batch_size=2,
        patch_height=32,
        patch_width=16,
        width=8,
        dncnn_depth=3,
        encoder_epochs=1,
        examples=2,
    )
    return dataclasses.replace(tiny, **changes)
