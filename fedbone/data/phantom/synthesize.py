"""One phantom scan in memory: body, skeleton, findings, camera.

Everything random about a scan comes from the generator passed in, so a scan
is a pure function of its seed (what makes cohorts reproducible and
independent of the number of worker processes).

The activity the camera saw is kept with the scan, so the same patient and
visit can be read out again as a fast acquisition (:func:`fast_acquisition`):
``1/speed`` of the expected counts, an independent Poisson draw and a small
shift of the patient on the table.
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

__all__ = [
    "MAX_COUNTS",
    "MAX_FAST_SHIFT_PX",
    "MIN_COUNTS",
    "ActivityMaps",
    "FastAcquisition",
    "SyntheticScan",
    "fast_acquisition",
    "synthesize_views",
]

#: Range of total counts per view (a diagnostic whole-body view has > 1.5 M).
MIN_COUNTS = 1.5e6
MAX_COUNTS = 4.0e6
#: Largest shift (native pixels, per axis) of a fast acquisition's patient.
MAX_FAST_SHIFT_PX = 2


@dataclass(frozen=True)
class ActivityMaps:
    """What the camera heads saw of one scan, before blur and noise.

    Attributes
    ----------
    anterior, posterior
        Activity seen by each head, both in anterior orientation.
    total_counts
        Expected total counts of the standard anterior and posterior views.
    fwhm_mm
        System resolution of the camera.
    spacing_mm
        Pixel size.
    """

    anterior: np.ndarray
    posterior: np.ndarray
    total_counts: tuple[float, float]
    fwhm_mm: float
    spacing_mm: float

    def read_out(
        self, rng: np.random.Generator, *, count_fraction: float = 1.0
    ) -> dict[View, np.ndarray]:
        """Blur, scale to ``count_fraction`` of the total counts, draw Poisson."""
        anterior, posterior = read_out(
            self.anterior,
            self.posterior,
            fwhm_mm=self.fwhm_mm,
            spacing_mm=self.spacing_mm,
            total_counts=(
                self.total_counts[0] * count_fraction,
                self.total_counts[1] * count_fraction,
            ),
            rng=rng,
        )
        return {View.ANTERIOR: anterior, View.POSTERIOR: posterior}


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
    activity
        The activity read out, for further acquisitions of the same visit.
    """

    views: dict[View, np.ndarray]
    spacing_mm: tuple[float, float]
    body: BodyShape
    pose: Pose
    lesions: tuple[PlantedLesion, ...]
    degenerative_spots: int
    activity: ActivityMaps | None = None


@dataclass(frozen=True)
class FastAcquisition:
    """A fast acquisition of a phantom scan's visit.

    Attributes
    ----------
    views
        ``uint16`` counts, oriented as :attr:`SyntheticScan.views`.
    speed
        Table speed over the standard's: the expected counts are ``1/speed``
        of the standard acquisition's.
    shift_px
        ``(rows, columns)`` the patient lay shifted by, in native pixels of
        the anterior view (positive: towards the feet, towards the image right).
    """

    views: dict[View, np.ndarray]
    speed: float
    shift_px: tuple[int, int]


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
    activity = ActivityMaps(
        anterior=canvas.anterior,
        posterior=canvas.posterior,
        total_counts=(anterior_total, posterior_total),
        fwhm_mm=scanner.fwhm_mm,
        spacing_mm=scanner.spacing_mm,
    )
    return SyntheticScan(
        views=activity.read_out(rng),
        spacing_mm=(scanner.spacing_mm, scanner.spacing_mm),
        body=body,
        pose=pose,
        lesions=tuple(lesions),
        degenerative_spots=degenerative,
        activity=activity,
    )


def _overlap(offset: int, size: int) -> tuple[slice, slice]:
    """Target and source of a move by ``offset`` pixels along one axis."""
    kept = size - abs(offset)
    return (
        slice(max(offset, 0), max(offset, 0) + kept),
        slice(max(-offset, 0), max(-offset, 0) + kept),
    )


def _shifted(image: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """``image`` moved by whole pixels; what enters from the edge is empty."""
    target_rows, source_rows = _overlap(rows, image.shape[0])
    target_columns, source_columns = _overlap(columns, image.shape[1])
    moved = np.zeros_like(image)
    moved[target_rows, target_columns] = image[source_rows, source_columns]
    return moved


def fast_acquisition(
    scan: SyntheticScan,
    speed: float,
    rng: np.random.Generator,
    *,
    max_shift_px: int = MAX_FAST_SHIFT_PX,
) -> FastAcquisition:
    """Acquire the visit of ``scan`` again, ``speed`` times faster.

    The patient and the tracer are those of the standard acquisition (the
    same activity maps); the patient lies up to ``max_shift_px`` native
    pixels off in each direction, the expected counts are ``1/speed`` of the
    standard's and the Poisson noise is drawn anew.

    Parameters
    ----------
    scan
        A scan made by :func:`synthesize_views` (it carries its activity).
    speed
        Table speed over the standard's (2 for a 2x scan); at least 1.
    rng
        Source of the shift and the noise; independent of the scan's own.
    max_shift_px
        Largest misregistration per axis, in native pixels.

    Returns
    -------
    FastAcquisition
        The fast views and the shift drawn.
    """
    if scan.activity is None:
        raise ValueError(
            "the scan carries no activity maps; render it with synthesize_views"
        )
    if not speed >= 1.0:
        raise ValueError(f"speed must be at least 1 (2 for a 2x scan), got {speed}")
    rows, columns = (int(v) for v in rng.integers(-max_shift_px, max_shift_px + 1, 2))
    activity = scan.activity
    moved = ActivityMaps(
        anterior=_shifted(activity.anterior, rows, columns),
        posterior=_shifted(activity.posterior, rows, columns),
        total_counts=activity.total_counts,
        fwhm_mm=activity.fwhm_mm,
        spacing_mm=activity.spacing_mm,
    )
    return FastAcquisition(
        views=moved.read_out(rng, count_fraction=1.0 / speed),
        speed=float(speed),
        shift_px=(rows, columns),
    )
