"""What makes a scan positive (or a hard negative): hot spots and the heart.

- Metastases: 1-15 focal hot spots, mostly in the axial skeleton, drawn on
  points the skeleton recorded while it was drawn.
- Benign degenerative uptake (knees, lumbar facets, acromioclavicular joints,
  feet, hands), present in positives and negatives alike, so a classifier
  cannot call every hot spot a metastasis.
- Cardiac uptake graded after Perugini: 0 none, 1 mild (< bone), 2 moderate
  (about bone), 3 strong with attenuated bone uptake.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from fedbone.data.phantom.anatomy import (
    BodyShape,
    arm_joints,
    body_thickness_mm,
    leg_columns,
)
from fedbone.data.phantom.canvas import ActivityCanvas, depth_weights
from fedbone.data.phantom.skeleton import SkeletonSites

__all__ = [
    "METASTASIS_REGION_WEIGHTS",
    "PlantedLesion",
    "add_cardiac_uptake",
    "add_degenerative_uptake",
    "apply_perugini_biodistribution",
    "heart_centre_mm",
    "plant_metastases",
]

#: Relative frequency of bone metastases by region (axial skeleton first).
METASTASIS_REGION_WEIGHTS: dict[str, float] = {
    "spine": 0.38,
    "pelvis": 0.2,
    "ribs": 0.16,
    "femur": 0.08,
    "skull": 0.05,
    "humerus": 0.05,
    "scapula": 0.04,
    "sternum": 0.04,
}

# Heart uptake relative to a lumbar vertebra, per Perugini grade (low, high).
_CARDIAC_UPTAKE = {0: (0.0, 0.0), 1: (0.12, 0.22), 2: (0.35, 0.5), 3: (0.6, 0.9)}


@dataclass(frozen=True)
class PlantedLesion:
    """A metastasis as drawn: region, position (mm and pixels), size, uptake."""

    region: str
    x_mm: float
    y_mm: float
    column: float
    row: float
    sigma_mm: float
    uptake: float


def plant_metastases(
    canvas: ActivityCanvas,
    body: BodyShape,
    sites: SkeletonSites,
    count: int,
    rng: np.random.Generator,
) -> list[PlantedLesion]:
    """Draw ``count`` metastatic hot spots on the skeleton.

    Parameters
    ----------
    canvas
        Activity maps of the scan.
    body
        The patient (for bone uptake and thickness).
    sites
        Candidate points recorded by :func:`~.skeleton.draw_skeleton`.
    count
        Number of lesions (0 draws nothing).
    rng
        Source of randomness.

    Returns
    -------
    list of PlantedLesion
        The lesions drawn, in anterior image coordinates.
    """
    regions = [r for r in METASTASIS_REGION_WEIGHTS if sites.regions.get(r)]
    weights = np.array([METASTASIS_REGION_WEIGHTS[r] for r in regions])
    # Widespread disease clusters in the spine and pelvis: draw a home region.
    home = regions[int(rng.choice(len(regions), p=weights / weights.sum()))]
    planted: list[PlantedLesion] = []
    for _ in range(count):
        region = (
            home
            if rng.random() < 0.4
            else regions[int(rng.choice(len(regions), p=weights / weights.sum()))]
        )
        candidates = sites.regions[region]
        site = candidates[int(rng.integers(len(candidates)))]
        x = site.x + float(rng.normal(0.0, 5.0))
        y = site.y + float(rng.normal(0.0, 8.0))
        # Metastases on bone scans are mostly 1-3 cm and several times as
        # avid as normal bone; smaller, fainter ones vanish in camera blur.
        sigma = float(rng.uniform(6.0, 14.0))
        uptake = float(rng.lognormal(np.log(3.0), 0.45)) * body.bone_uptake
        weight = depth_weights(site.depth, site.thickness)
        canvas.blob((x, y), sigma, uptake, weight)
        column, row = canvas.pose.to_pixels(np.array(x), np.array(y))
        planted.append(
            PlantedLesion(region, x, y, float(column), float(row), sigma, uptake)
        )
    return planted


def add_degenerative_uptake(
    canvas: ActivityCanvas, body: BodyShape, rng: np.random.Generator
) -> int:
    """Draw 0-4 benign joint and facet hot spots; return how many.

    The count is Poisson (mean 1.2) capped at 4; each spot sits on a knee, a
    lumbar facet, a shoulder, a foot or a wrist, at 0.3-0.8 times bone uptake.

    Parameters
    ----------
    canvas
        Activity maps of the scan.
    body
        The patient (for joint positions, bone uptake and thickness).
    rng
        Source of randomness.
    """
    h = body.height_mm
    legs = leg_columns(body)
    count = int(rng.poisson(1.2))
    for _ in range(min(count, 4)):
        kind = rng.choice(
            ["knee", "facet", "shoulder", "foot", "hand"], p=[0.35, 0.3, 0.15, 0.1, 0.1]
        )
        side = int(rng.choice([-1, 1]))
        if kind == "knee":
            point = (side * (legs["knee"] - 0.01 * h), 0.725 * h)
            sigma, depth = 6.0, 0.4
        elif kind == "facet":
            y = float(rng.uniform(0.39, 0.445)) * h
            point = (side * 0.014 * h, y)
            sigma, depth = 5.5, 0.85
        elif kind == "shoulder":
            point = (side * 0.094 * h, 0.181 * h)
            sigma, depth = 6.0, 0.4
        elif kind == "foot":
            point = (side * legs["ankle"], 0.99 * h)
            sigma, depth = 6.0, 0.5
        else:
            point = arm_joints(body, side)["wrist"]
            sigma, depth = 5.0, 0.5
        uptake = float(rng.uniform(0.3, 0.8)) * body.bone_uptake
        weights = depth_weights(depth, body_thickness_mm(body, point[1]))
        canvas.blob(point, sigma, uptake, weights)
    return min(count, 4)


def apply_perugini_biodistribution(body: BodyShape, grade: int) -> BodyShape:
    """Return ``body`` with the bone/soft-tissue shift of cardiac amyloidosis.

    In grade 3 the myocardium competes for the tracer, so the skeleton is
    faint and the soft tissue (blood pool) brighter.
    """
    if grade >= 3:
        return dataclasses.replace(
            body,
            bone_uptake=body.bone_uptake * 0.55,
            soft_tissue=body.soft_tissue * 1.35,
        )
    if grade == 2:
        return dataclasses.replace(body, soft_tissue=body.soft_tissue * 1.1)
    return body


def heart_centre_mm(body: BodyShape) -> tuple[float, float]:
    """Centre of the heart: left of the midline (image right, anterior view)."""
    return (0.03 * body.height_mm, 0.29 * body.height_mm)


def add_cardiac_uptake(
    canvas: ActivityCanvas, body: BodyShape, grade: int, rng: np.random.Generator
) -> None:
    """Draw myocardial uptake for a Perugini ``grade`` (0 draws nothing).

    Parameters
    ----------
    canvas
        Activity maps of the scan.
    body
        The patient (for heart position and body thickness).
    grade
        Perugini grade 0-3; sets the range the heart's uptake is drawn from,
        relative to a lumbar vertebra.
    rng
        Source of randomness.
    """
    low, high = _CARDIAC_UPTAKE[grade]
    if high <= 0.0:
        return
    h = body.height_mm
    centre = heart_centre_mm(body)
    uptake = float(rng.uniform(low, high))
    weights = depth_weights(0.35, body_thickness_mm(body, centre[1]))
    canvas.ellipse(
        centre,
        (0.043 * h, 0.034 * h),
        uptake,
        weights,
        angle_deg=float(rng.uniform(25.0, 45.0)),
        shell=0.3,
    )
