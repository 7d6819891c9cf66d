"""One phantom scan in memory: body, skeleton, findings, camera.

Everything random about a scan comes from the generator passed in, so a scan
is a pure function of its seed (what makes cohorts reproducible and
independent of the number of worker processes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedbone.data.phantom.anatomy import (
    BodyShape,
    draw_organs,
    draw_soft_tissue,
    sample_body_shape,
)
from fedbone.data.phantom.camera import read_out
from fedbone.data.phantom.canvas import ActivityCanvas, Pose
from fedbone.data.phantom.lesions import (
    PlantedLesion,
    add_cardiac_uptake,
    add_degenerative_uptake,
    apply_perugini_biodistribution,
    plant_metastases,
)
from fedbone.data.phantom.profiles import Scanner
from fedbone.data.phantom.skeleton import draw_skeleton
from fedbone.data.scan import View

__all__ = ["MAX_COUNTS", "MIN_COUNTS", "SyntheticScan", "synthesize_views"]

#: Range of total counts per view (a diagnostic whole-body view has > 1.5 M).
MIN_COUNTS = 1.5e6
MAX_COUNTS = 4.0e6


@dataclass(frozen=True)
class SyntheticScan:
    """A rendered phantom scan and what was planted in it.

    Attributes
    ----------
    views
        ``uint16`` counts: anterior as seen from the front, posterior as the
        posterior head sees it (patient's left on the image left).
    spacing_mm
        ``(row, column)`` pixel spacing.
    body
        The patient's build and biodistribution.
    pose
        Placement on the anterior grid (maps mm to anterior pixels).
    lesions
        Metastases drawn, in anterior pixel coordinates.
    degenerative_spots
        Number of benign hot spots drawn.
    """

    views: dict[View, np.ndarray]
    spacing_mm: tuple[float, float]
    body: BodyShape
    pose: Pose
    lesions: tuple[PlantedLesion, ...]
    degenerative_spots: int


def _sample_pose(rng: np.random.Generator, body: BodyShape, scanner: Scanner) -> Pose:
    field_mm = scanner.shape[0] * scanner.spacing_mm
    latest_top = max(field_mm - body.height_mm * 1.01 - 15.0, 20.0)
    top = float(rng.uniform(20.0, min(latest_top, 200.0)))
    return Pose(
        shape=scanner.shape,
        spacing_mm=scanner.spacing_mm,
        top_mm=top,
        shift_mm=float(rng.normal(0.0, 8.0)),
        tilt_rad=math.radians(float(rng.normal(0.0, 1.0))),
        pivot_y_mm=0.5 * body.height_mm,
    )


def synthesize_views(
    rng: np.random.Generator,
    *,
    scanner: Scanner,
    female: bool,
    age_years: float,
    perugini_grade: int = 0,
    n_metastases: int = 0,
) -> SyntheticScan:
    """Render one whole-body scan (anterior and posterior) in memory.

    Parameters
    ----------
    rng
        The scan's own generator; the same state gives the same pixels.
    scanner
        Camera: matrix, pixel size, resolution, count level.
    female, age_years
        Patient demographics (shape the body and the uptake).
    perugini_grade
        Cardiac uptake grade 0-3.
    n_metastases
        Number of metastatic hot spots (0 for a negative scan).

    Returns
    -------
    SyntheticScan
        The two count images and what was planted.
    """
    if perugini_grade not in (0, 1, 2, 3):
        raise ValueError(f"perugini_grade must be 0..3, got {perugini_grade}")
    body = sample_body_shape(rng, female=female, age_years=age_years)
    body = apply_perugini_biodistribution(body, perugini_grade)
    pose = _sample_pose(rng, body, scanner)
    canvas = ActivityCanvas(pose)
    draw_soft_tissue(canvas, body)
    draw_organs(canvas, body)
    sites = draw_skeleton(canvas, body)
    degenerative = add_degenerative_uptake(canvas, body, rng)
    lesions = plant_metastases(canvas, body, sites, n_metastases, rng)
    add_cardiac_uptake(canvas, body, perugini_grade, rng)
    anterior_total = float(
        np.clip(
            rng.lognormal(np.log(scanner.median_counts), 0.2), MIN_COUNTS, MAX_COUNTS
        )
    )
    posterior_total = float(
        np.clip(anterior_total * rng.uniform(0.95, 1.12), MIN_COUNTS, MAX_COUNTS)
    )
    anterior, posterior = read_out(
        canvas.anterior,
        canvas.posterior,
        fwhm_mm=scanner.fwhm_mm,
        spacing_mm=scanner.spacing_mm,
        total_counts=(anterior_total, posterior_total),
        rng=rng,
    )
    return SyntheticScan(
        views={View.ANTERIOR: anterior, View.POSTERIOR: posterior},
        spacing_mm=(scanner.spacing_mm, scanner.spacing_mm),
        body=body,
        pose=pose,
        lesions=tuple(lesions),
        degenerative_spots=degenerative,
    )
