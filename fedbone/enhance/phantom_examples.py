"""Example triplets for the centre's report, from phantom scans the centre makes.

The centre never holds a site's scan, so its report shows the enhancers at
work on phantom patients it renders itself (the same generator as the
simulated sites, with a seed of its own): each row is one patient at one
level, with the fast scan, every method's enhanced scan and the standard scan,
all on the standard scan's intensity range. The fast scans are binomially
thinned from the phantom's raw counts, as the sites make their pairs.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from fedbone.config.enhance import EnhanceSettings
from fedbone.data.phantom import SITE_PROFILES, synthesize_views
from fedbone.data.preprocess import counts_on_canvas
from fedbone.data.scan import NMScan, ScanMetadata, ScanView
from fedbone.data.spec import PreprocessSpec
from fedbone.enhance.gaussian import gaussian_enhance
from fedbone.enhance.inference import enhance
from fedbone.enhance.scaling import (
    intensity_level,
    network_input,
    to_counts,
    unit_range,
)
from fedbone.enhance.specs import (
    GAUSSIAN,
    enhancer_spec,
    gaussian_key,
    simulated_levels,
)
from fedbone.enhance.thinning import binomial_thin, parse_level

__all__ = ["phantom_scan", "write_phantom_triplets"]

_METASTASES = 4


def phantom_scan(rng: np.random.Generator, profile: str = "A") -> NMScan:
    """Render one BM-positive phantom patient as an :class:`NMScan` (in memory).

    Parameters
    ----------
    rng
        The scan's generator.
    profile
        Phantom site profile whose first camera records it.
    """
    scanner = SITE_PROFILES[profile].scanners[0]
    rendered = synthesize_views(
        rng,
        scanner=scanner,
        female=bool(rng.integers(2)),
        age_years=float(rng.uniform(55, 80)),
        n_metastases=_METASTASES,
    )
    metadata = ScanMetadata(
        patient_id="centre-phantom",
        source_path="centre-phantom",
        sop_class_uid="",
        transfer_syntax_uid="",
        study_date=date(2026, 1, 1),
    )
    views = {
        view: ScanView(view=view, counts=counts, spacing_mm=rendered.spacing_mm)
        for view, counts in rendered.views.items()
    }
    return NMScan(metadata=metadata, views=views)


def _thinned(scan: NMScan, p: float, rng: np.random.Generator) -> NMScan:
    views = {
        view: ScanView(
            view=view,
            counts=binomial_thin(v.counts, p, rng),
            spacing_mm=v.spacing_mm,
            patient_orientation=v.patient_orientation,
            source=v.source,
        )
        for view, v in scan.views.items()
    }
    return NMScan(metadata=scan.metadata, views=views)


def _enhanced(
    method: str,
    arrays: Mapping[str, np.ndarray],
    settings: EnhanceSettings,
    level: str,
    inputs: np.ndarray,
) -> np.ndarray:
    if method == GAUSSIAN:
        sigma = float(np.asarray(arrays[gaussian_key(level)]).reshape(-1)[0])
        return gaussian_enhance(inputs, sigma)
    return enhance(enhancer_spec(method, settings), dict(arrays), inputs)


def write_phantom_triplets(
    enhancers: Mapping[str, Mapping[str, np.ndarray]],
    settings: EnhanceSettings,
    spec: PreprocessSpec,
    out: Path,
    *,
    seed: int = 0,
    patients: int = 1,
) -> Path | None:
    """Write a PNG grid: fast / each method / standard, per patient and level.

    Parameters
    ----------
    enhancers
        The study's trained enhancers by method (as the sites got them).
    settings
        The study's ``enhance`` settings.
    spec
        The canvas the sites prepared (the simulation's profile).
    out
        The PNG to write.
    seed
        Seed of the centre's phantom patients and their thinning.
    patients
        How many phantom patients (0: nothing is written).

    Returns
    -------
    Path or None
        ``out``, or ``None`` when no patient was asked for.
    """
    if patients <= 0:
        return None
    rng = np.random.default_rng([seed, 1806])
    methods = [m for m in settings.methods if m in enhancers]
    columns = ["fast", *methods, "standard"]
    rows = []
    for _ in range(patients):
        scan = phantom_scan(rng)
        standard = counts_on_canvas(scan, spec)
        level_std = intensity_level(standard.image)
        for level in simulated_levels(settings):
            count_level = parse_level(level)
            total = sum(v.total_counts for v in scan.views.values()) / len(scan.views)
            p = count_level.probability(total)
            fast = counts_on_canvas(
                _thinned(scan, p, rng), spec, placements=standard.placements
            ).image
            inputs, level_in = network_input(fast, 1.0 / p)
            panels = [unit_range(fast / p, level_std)]
            for method in methods:
                output = _enhanced(
                    method, enhancers[method], settings, level, inputs[None]
                )
                panels.append(unit_range(to_counts(output[0], level_in), level_std))
            panels.append(unit_range(standard.image, level_std))
            rows.append((level, panels))
    height, width = rows[0][1][0].shape
    gap = 4
    grid = np.ones(
        (len(rows) * (height + gap) - gap, len(columns) * (width + gap) - gap),
        dtype=np.float32,
    )
    for r, (_, panels) in enumerate(rows):
        for c, panel in enumerate(panels):
            top, left = r * (height + gap), c * (width + gap)
            grid[top : top + height, left : left + width] = 1.0 - panel
    inches = 9.0 / max(grid.shape) * np.array(grid.shape[::-1])
    fig, ax = plt.subplots(figsize=(inches[0] + 0.6, inches[1] + 0.8))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([c * (width + gap) + width / 2 for c in range(len(columns))])
    ax.set_xticklabels(columns, fontsize=8)
    ax.xaxis.tick_top()
    ax.set_yticks([r * (height + gap) + height / 2 for r in range(len(rows))])
    ax.set_yticklabels([level for level, _ in rows], fontsize=8)
    ax.set_title(
        "Centre's phantom patients (no site's scan): fast / enhanced / standard",
        fontsize=9,
        pad=18,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
