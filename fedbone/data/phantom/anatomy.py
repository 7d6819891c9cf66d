"""Patient build and the non-bone activity of a bone scan.

A :class:`BodyShape` holds everything that makes one phantom patient look
different from the next (height, build, arm position, tracer biodistribution).
Landmarks are fractions of standing height (anthropometric proportions), so a
tall patient is a scaled-up short one plus independent width and pose.

Soft tissue, kidneys, bladder and an injection site are drawn here; bones live
in :mod:`fedbone.data.phantom.skeleton`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedbone.data.phantom.canvas import ActivityCanvas, depth_weights

__all__ = [
    "BodyShape",
    "arm_joints",
    "body_thickness_mm",
    "draw_organs",
    "draw_soft_tissue",
    "leg_columns",
    "sample_body_shape",
]


@dataclass(frozen=True)
class BodyShape:
    """One patient's geometry and tracer biodistribution.

    Parameters
    ----------
    height_mm
        Standing height.
    build
        Width and depth factor of the trunk (1 = average, > 1 obese).
    female
        Narrower shoulders, wider pelvis.
    arms_folded
        Forearms resting on the lower abdomen instead of along the body.
    arm_abduction_mm
        How far the elbows sit out from the trunk.
    scoliosis_mm
        Amplitude of a lateral curve of the spine.
    bone_uptake
        Skeletal uptake scale (lower in a Perugini 3 heart, higher in a
        young patient).
    soft_tissue
        Soft-tissue (blood pool, poor renal clearance) activity scale.
    kidney_uptake
        Renal activity relative to the lumbar spine.
    bladder_radius_mm
        ``(lateral, vertical)`` semi-axes of the filled bladder.
    bladder_uptake
        Bladder activity relative to the lumbar spine.
    injection
        ``(side, fraction along the forearm, uptake)`` of a paravenous
        injection spot, or ``None``.
    """

    height_mm: float
    build: float
    female: bool
    arms_folded: bool
    arm_abduction_mm: float
    scoliosis_mm: float
    bone_uptake: float
    soft_tissue: float
    kidney_uptake: float
    bladder_radius_mm: tuple[float, float]
    bladder_uptake: float
    injection: tuple[int, float, float] | None

    def y(self, fraction: float) -> float:
        """Millimetres below the vertex of a landmark at ``fraction`` of height."""
        return fraction * self.height_mm

    def x(self, fraction: float) -> float:
        """Millimetres from the midline of a lateral ``fraction`` of height."""
        return fraction * self.height_mm

    def trunk_half_width(self, fraction: float) -> float:
        """Half width (mm) of the trunk's soft tissue at a height fraction."""
        levels, widths = _trunk_profile(self)
        return float(np.interp(fraction, levels, widths)) * self.height_mm


def sample_body_shape(
    rng: np.random.Generator, *, female: bool, age_years: float
) -> BodyShape:
    """Draw a plausible bone-scan patient (an older, often ill population).

    Parameters
    ----------
    rng
        Source of randomness.
    female
        Sex of the patient.
    age_years
        Age; older patients get less bone and more soft-tissue uptake.
    """
    mean_height = 1625.0 if female else 1750.0
    height = float(np.clip(rng.normal(mean_height, 70.0), 1450.0, 1980.0))
    build = float(np.clip(rng.lognormal(0.05, 0.13), 0.8, 1.5))
    youth = float(np.clip((75.0 - age_years) / 40.0, -0.5, 1.0))
    bladder_lateral = float(rng.uniform(15.0, 45.0))
    injection = None
    if rng.random() < 0.25:
        injection = (
            int(rng.choice([-1, 1])),
            float(rng.uniform(0.05, 1.0)),
            float(rng.lognormal(1.0, 0.7)),
        )
    return BodyShape(
        height_mm=height,
        build=build,
        female=female,
        arms_folded=bool(rng.random() < 0.15),
        arm_abduction_mm=float(rng.uniform(0.0, 35.0)),
        scoliosis_mm=float(rng.choice([0.0, rng.uniform(-12.0, 12.0)], p=[0.6, 0.4])),
        bone_uptake=float(rng.lognormal(0.1 * youth, 0.12)),
        soft_tissue=float(rng.lognormal(-0.1 * youth, 0.22)),
        kidney_uptake=float(rng.lognormal(np.log(0.35), 0.45)),
        bladder_radius_mm=(bladder_lateral, bladder_lateral * rng.uniform(0.65, 0.95)),
        bladder_uptake=float(rng.lognormal(np.log(2.5), 0.5)),
        injection=injection,
    )


def _trunk_profile(body: BodyShape) -> tuple[np.ndarray, np.ndarray]:
    """Height fractions and half widths (fractions of height) of the trunk."""
    shoulder = -0.007 if body.female else 0.0
    hip = 0.008 if body.female else 0.0
    levels = np.array([0.175, 0.19, 0.21, 0.26, 0.32, 0.38, 0.43, 0.49, 0.52, 0.54])
    widths = np.array(
        [
            0.045,
            0.092 + shoulder,
            0.1 + shoulder,
            0.094,
            0.088,
            0.084,
            0.088 + hip,
            0.094 + hip,
            0.088 + hip,
            0.05,
        ]
    )
    return levels, widths * np.array([1.0, 1.0] + [body.build] * 8)


def body_thickness_mm(body: BodyShape, y_mm: float) -> float:
    """Antero-posterior thickness of the body at ``y_mm`` below the vertex."""
    fraction = y_mm / body.height_mm
    levels = [0.0, 0.12, 0.15, 0.19, 0.3, 0.42, 0.52, 0.6, 0.72, 0.85, 1.0]
    depth = [150, 190, 120, 190, 215, 225, 205, 150, 105, 100, 80]
    trunk = 1.0 if fraction < 0.17 or fraction > 0.56 else body.build
    return float(np.interp(fraction, levels, depth)) * trunk


def arm_joints(body: BodyShape, side: int) -> dict[str, tuple[float, float]]:
    """Shoulder, elbow, wrist and hand centres (mm) of one arm."""
    h = body.height_mm
    shoulder_x = (0.098 - (0.006 if body.female else 0.0)) * h
    shoulder = (side * shoulder_x, 0.195 * h)
    elbow_y = 0.37 * h
    elbow_x = body.trunk_half_width(0.37) + 0.018 * h + body.arm_abduction_mm
    elbow = (side * max(elbow_x, shoulder_x + 0.01 * h), elbow_y)
    if body.arms_folded:
        wrist = (side * 0.035 * h, 0.45 * h)
        hand = (side * 0.005 * h, 0.47 * h)
    else:
        wrist_x = body.trunk_half_width(0.5) + 0.02 * h + body.arm_abduction_mm
        wrist = (side * wrist_x, 0.5 * h)
        hand = (side * (wrist_x + 0.004 * h), 0.55 * h)
    return {"shoulder": shoulder, "elbow": elbow, "wrist": wrist, "hand": hand}


def leg_columns(body: BodyShape) -> dict[str, float]:
    """Lateral positions (mm) of hip, knee and ankle joint centres."""
    h = body.height_mm
    return {
        "hip": (0.054 + (0.004 if body.female else 0.0)) * h,
        "knee": 0.047 * h * min(body.build, 1.15),
        "ankle": 0.043 * h,
    }


def draw_soft_tissue(canvas: ActivityCanvas, body: BodyShape) -> None:
    """Blood-pool and soft-tissue haze over the body outline."""
    h = body.height_mm
    level = 0.5 * body.soft_tissue

    def weights(y: float) -> tuple[float, float]:
        return depth_weights(0.5, body_thickness_mm(body, y))

    canvas.ellipse((0.0, 0.062 * h), (0.048 * h, 0.064 * h), level * 0.35, weights(0))
    canvas.tube(
        np.array(
            [
                [0.115 * h, 0, 0.028 * h, level * 0.3],
                [0.18 * h, 0, 0.036 * h, level * 0.45],
            ]
        ),
        weights(0.15 * h),
        soft=True,
    )
    levels, widths = _trunk_profile(body)
    thickness = [body_thickness_mm(body, f * h) / 220.0 for f in levels]
    trunk = np.column_stack(
        [levels * h, np.zeros_like(levels), widths * h, level * np.array(thickness)]
    )
    canvas.tube(trunk, weights(0.35 * h), soft=True)
    legs = leg_columns(body)
    for side in (-1, 1):
        thigh = body.build**0.7
        canvas.tube(
            np.array(
                [
                    [0.5 * h, side * 0.052 * h, 0.05 * h * thigh, level * 0.8],
                    [0.6 * h, side * 0.05 * h, 0.045 * h * thigh, level * 0.75],
                    [0.72 * h, side * legs["knee"], 0.03 * h, level * 0.45],
                    [0.8 * h, side * legs["knee"], 0.033 * h, level * 0.45],
                    [0.95 * h, side * legs["ankle"], 0.017 * h, level * 0.3],
                    [0.975 * h, side * legs["ankle"], 0.016 * h, level * 0.3],
                ]
            ),
            weights(0.7 * h),
            soft=True,
        )
        canvas.ellipse(
            (side * (legs["ankle"] + 0.006 * h), 0.978 * h),
            (0.017 * h, 0.028 * h),
            level * 0.3,
            weights(0.95 * h),
            angle_deg=-side * 12.0,
        )
        joints = arm_joints(body, side)
        limb = depth_weights(0.5, 90.0)
        arm_radius = 0.027 * h * body.build**0.7
        canvas.capsule(
            joints["shoulder"],
            joints["elbow"],
            (arm_radius, arm_radius * 0.85),
            (level * 0.6, level * 0.55),
            limb,
        )
        canvas.capsule(
            joints["elbow"],
            joints["wrist"],
            (arm_radius * 0.85, 0.014 * h),
            (level * 0.55, level * 0.4),
            limb,
        )
        canvas.ellipse(joints["hand"], (0.016 * h, 0.035 * h), level * 0.3, limb)


def draw_organs(canvas: ActivityCanvas, body: BodyShape) -> None:
    """Kidneys, bladder and a paravenous injection spot, when present."""
    h = body.height_mm
    bone = body.bone_uptake
    renal = depth_weights(0.78, body_thickness_mm(body, 0.37 * h))
    for side in (-1, 1):
        # The right kidney sits lower (under the liver); upper poles tilt medially.
        centre = (side * 0.047 * h, (0.36 + (0.012 if side < 0 else 0.0)) * h)
        canvas.ellipse(
            centre,
            (0.018 * h, 0.032 * h),
            body.kidney_uptake * bone,
            renal,
            angle_deg=side * 14.0,
        )
        canvas.blob(
            (centre[0] - side * 0.008 * h, centre[1]),
            0.007 * h,
            0.6 * body.kidney_uptake * bone,
            renal,
        )
    bladder_y = 0.505 * h - body.bladder_radius_mm[1] * 0.6
    canvas.ellipse(
        (0.0, bladder_y),
        body.bladder_radius_mm,
        body.bladder_uptake * bone,
        depth_weights(0.35, body_thickness_mm(body, bladder_y)),
    )
    if body.injection is not None:
        side, along, uptake = body.injection
        joints = arm_joints(body, side)
        (x0, y0), (x1, y1) = joints["elbow"], joints["wrist"]
        spot = (x0 + along * (x1 - x0), y0 + along * (y1 - y0))
        canvas.blob(spot, 6.0, uptake * bone, depth_weights(0.3, 90.0))
