"""The skeleton of a phantom bone scan, drawn bone by bone.

Amplitudes are relative to a lumbar vertebral body (1.0): joints and the axial
skeleton take up more tracer than long-bone shafts, ribs are thin and faint.
Each bone is placed at its depth in the body so the two camera heads see it
with the right attenuation. While drawing, candidate points for metastases are
recorded per skeletal region (:class:`BoneSite`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedbone.data.phantom.anatomy import (
    BodyShape,
    arm_joints,
    body_thickness_mm,
    leg_columns,
)
from fedbone.data.phantom.canvas import ActivityCanvas, depth_weights

__all__ = ["BoneSite", "SkeletonSites", "draw_skeleton"]


def _arc_centre(
    start: tuple[float, float], drop: float, angle_deg: float
) -> tuple[float, float]:
    """Centre of a rotated rib ellipse whose top point lies at ``start``."""
    angle = np.radians(angle_deg)
    # The top point (0, -drop) rotated clockwise by angle on the image.
    return (
        float(start[0] - drop * np.sin(angle)),
        float(start[1] + drop * np.cos(angle)),
    )


# Vertebral levels (fractions of height) of C1 top, C7/T1, T12/L1 and L5/S1.
_CERVICAL = (0.105, 0.185)
_THORACIC = (0.185, 0.355)
_LUMBAR = (0.355, 0.448)
# Posterior rib reach from the midline (fraction of height), ribs 1..12.
_RIB_REACH = (
    0.042,
    0.058,
    0.068,
    0.075,
    0.08,
    0.083,
    0.084,
    0.083,
    0.08,
    0.075,
    0.064,
    0.05,
)


@dataclass(frozen=True)
class BoneSite:
    """A point on a bone where a lesion may sit (mm, depth 0..1, body mm)."""

    x: float
    y: float
    depth: float
    thickness: float


@dataclass
class SkeletonSites:
    """Candidate lesion points per skeletal region, filled while drawing."""

    regions: dict[str, list[BoneSite]] = field(default_factory=dict)

    def add(
        self, region: str, x: float, y: float, depth: float, body: BodyShape
    ) -> None:
        """Record one candidate point.

        Parameters
        ----------
        region
            Skeletal region, e.g. ``spine``, ``pelvis``, ``ribs`` (keys of
            :data:`~.lesions.METASTASIS_REGION_WEIGHTS`).
        x, y
            Position in patient millimetres (``x`` towards the patient's left,
            ``y`` down from the vertex).
        depth
            Position between the anterior (0) and posterior (1) body surface.
        body
            The patient; gives the body thickness at ``y``.
        """
        site = BoneSite(x, y, depth, body_thickness_mm(body, y))
        self.regions.setdefault(region, []).append(site)


class _Painter:
    """Draws one skeleton; holds the canvas, the body and the sites found."""

    def __init__(self, canvas: ActivityCanvas, body: BodyShape) -> None:
        self.canvas = canvas
        self.body = body
        self.h = body.height_mm
        self.uptake = body.bone_uptake
        self.sites = SkeletonSites()

    def weights(self, depth: float, y: float) -> tuple[float, float]:
        return depth_weights(depth, body_thickness_mm(self.body, y))

    def spine_x(self, y: float) -> float:
        """Midline of the spine (a scoliosis bends the thoracolumbar part)."""
        t = np.clip((y / self.h - 0.2) / 0.25, 0.0, 1.0)
        return float(self.body.scoliosis_mm * np.sin(np.pi * t))

    # -- axial skeleton ------------------------------------------------
    def skull(self) -> None:
        h, a = self.h, self.uptake
        head = self.weights(0.5, 0.06 * h)
        self.canvas.ellipse(
            (0, 0.058 * h), (0.043 * h, 0.057 * h), 0.8 * a, head, shell=0.86
        )
        self.canvas.ellipse((0, 0.086 * h), (0.038 * h, 0.009 * h), 0.35 * a, head)
        face = self.weights(0.15, 0.08 * h)
        self.canvas.ellipse((0, 0.092 * h), (0.028 * h, 0.019 * h), 0.45 * a, face)
        self.canvas.blob((0, 0.08 * h), 0.006 * h, 0.3 * a, face)
        for side in (-1, 1):
            self.canvas.ellipse(
                (side * 0.017 * h, 0.073 * h),
                (0.011 * h, 0.009 * h),
                0.2 * a,
                face,
                shell=0.65,
            )
            self.canvas.blob((side * 0.036 * h, 0.09 * h), 0.006 * h, 0.45 * a, head)
        self.canvas.arc(
            (0, 0.095 * h),
            (0.03 * h, 0.027 * h),
            (10, 170),
            5.0,
            (0.35 * a, 0.35 * a),
            self.weights(0.3, 0.11 * h),
        )
        for angle in np.linspace(-160, -20, 8):
            rad = np.radians(angle)
            self.sites.add(
                "skull",
                0.043 * h * np.cos(rad),
                0.058 * h + 0.055 * h * np.sin(rad),
                0.5,
                self.body,
            )

    def spine(self) -> None:
        h, a = self.h, self.uptake
        sections = (
            (_CERVICAL, 7, (0.007, 0.01), 0.55, 0.6),
            (_THORACIC, 12, (0.011, 0.016), 0.8, 0.74),
            (_LUMBAR, 5, (0.017, 0.021), 1.0, 0.62),
        )
        for (top, bottom), count, (hw_top, hw_bottom), amp, depth in sections:
            edges = np.linspace(top * h, bottom * h, count + 1)
            body_knots, arch_knots = [], []
            for i in range(count):
                y0, y1 = edges[i], edges[i + 1]
                hw = (hw_top + (hw_bottom - hw_top) * i / max(count - 1, 1)) * h
                step = (y1 - y0) * 0.22
                for y, level in ((y0, 0.6), (y0 + step, 1.0), (y1 - step, 1.0)):
                    body_knots.append(
                        (
                            y,
                            self.spine_x(y),
                            hw * (0.85 + 0.15 * level),
                            amp * a * level,
                        )
                    )
                    arch_knots.append((y, hw, level))
                self.sites.add(
                    "spine",
                    self.spine_x((y0 + y1) / 2),
                    (y0 + y1) / 2,
                    depth,
                    self.body,
                )
            knots = np.array(body_knots)
            mid = (top + bottom) / 2 * h
            self.canvas.tube(knots, self.weights(depth, mid))
            arch = self.weights(min(depth + 0.15, 0.95), mid)
            for side in (-1, 1):
                pedicles = np.array(
                    [
                        (
                            y,
                            self.spine_x(y) + side * 0.8 * hw,
                            0.28 * hw,
                            0.45 * amp * a * level,
                        )
                        for (y, hw, level) in arch_knots
                    ]
                )
                self.canvas.tube(pedicles, arch)

    def sternum_and_clavicles(self) -> None:
        h, a = self.h, self.uptake
        front = self.weights(0.05, 0.25 * h)
        self.canvas.tube(
            np.array(
                [
                    [0.19 * h, 0, 0.013 * h, 0.4 * a],
                    [0.212 * h, 0, 0.012 * h, 0.4 * a],
                    [0.222 * h, 0, 0.008 * h, 0.25 * a],
                    [0.3 * h, 0, 0.009 * h, 0.27 * a],
                    [0.315 * h, 0, 0.003 * h, 0.15 * a],
                ]
            ),
            front,
            flat=True,
        )
        for y in (0.2, 0.24, 0.28):
            self.sites.add("sternum", 0.0, y * h, 0.05, self.body)
        clavicle = self.weights(0.1, 0.19 * h)
        for side in (-1, 1):
            medial = (side * 0.013 * h, 0.188 * h)
            middle = (side * 0.055 * h, 0.184 * h)
            lateral = (side * 0.094 * h, 0.179 * h)
            self.canvas.blob(medial, 0.006 * h, 0.5 * a, clavicle)
            self.canvas.capsule(
                medial, middle, (6.5, 5.5), (0.35 * a, 0.3 * a), clavicle
            )
            self.canvas.capsule(
                middle, lateral, (5.5, 6.0), (0.3 * a, 0.4 * a), clavicle
            )

    def ribs(self) -> None:
        h, a = self.h, self.uptake
        edges = np.linspace(_THORACIC[0] * h, _THORACIC[1] * h, 13)
        for index, reach in enumerate(_RIB_REACH):
            y = (edges[index] + edges[index + 1]) / 2
            reach_mm = reach * h * (self.body.build**0.3)
            drop = (0.02 + 0.0015 * index) * h
            back = self.weights(0.85, y)
            front = self.weights(0.15, y + drop)
            floating = index >= 10
            for side in (-1, 1):
                origin = (self.spine_x(y) + side * 0.012 * h, y)
                slope = side * (14.0 + 1.2 * index)
                span = (-90.0, -20.0 if floating else 15.0)
                if side < 0:
                    span = (-90.0, -160.0 if floating else -195.0)
                centre = _arc_centre(origin, drop, slope)
                self.canvas.arc(
                    centre,
                    (reach_mm, drop),
                    span,
                    5.5,
                    (0.24 * a, 0.16 * a),
                    back,
                    angle_deg=slope,
                )
                self.sites.add(
                    "ribs",
                    origin[0] + side * 0.5 * reach_mm,
                    y + 0.5 * drop,
                    0.85,
                    self.body,
                )
                if floating or index == 0:
                    continue
                front_drop = (0.05 + 0.002 * index) * h
                lateral = (origin[0] + side * reach_mm * 0.98, y + 0.7 * drop)
                front_span = (0.0, 65.0) if side > 0 else (180.0, 115.0)
                self.canvas.arc(
                    (lateral[0] - side * reach_mm * 0.98, lateral[1]),
                    (reach_mm * 0.98, front_drop),
                    front_span,
                    5.0,
                    (0.2 * a, 0.14 * a),
                    front,
                    angle_deg=-side * 8.0,
                )

    def scapulae(self) -> None:
        h, a = self.h, self.uptake
        back = self.weights(0.88, 0.25 * h)
        for side in (-1, 1):
            self.canvas.tube(
                np.array(
                    [
                        [0.187 * h, side * 0.072 * h, 0.028 * h, 0.3 * a],
                        [0.21 * h, side * 0.071 * h, 0.03 * h, 0.28 * a],
                        [0.27 * h, side * 0.066 * h, 0.019 * h, 0.28 * a],
                        [0.315 * h, side * 0.06 * h, 0.008 * h, 0.35 * a],
                        [0.322 * h, side * 0.059 * h, 0.003 * h, 0.3 * a],
                    ]
                ),
                back,
                flat=True,
            )
            self.canvas.capsule(
                (side * 0.045 * h, 0.212 * h),
                (side * 0.095 * h, 0.186 * h),
                (5.0, 7.0),
                (0.3 * a, 0.55 * a),
                back,
            )
            self.sites.add("scapula", side * 0.07 * h, 0.23 * h, 0.88, self.body)
            self.sites.add("scapula", side * 0.062 * h, 0.3 * h, 0.88, self.body)

    def pelvis(self) -> None:
        h, a = self.h, self.uptake
        hip_x = leg_columns(self.body)["hip"]
        wing = self.weights(0.55, 0.45 * h)
        sacral = self.weights(0.85, 0.48 * h)
        self.canvas.tube(
            np.array(
                [
                    [0.448 * h, 0, 0.027 * h, 0.85 * a],
                    [0.49 * h, 0, 0.019 * h, 0.7 * a],
                    [0.525 * h, 0, 0.005 * h, 0.35 * a],
                ]
            ),
            sacral,
        )
        self.sites.add("pelvis", 0.0, 0.47 * h, 0.85, self.body)
        for side in (-1, 1):
            flare = 1.06 if self.body.female else 1.0
            self.canvas.tube(
                np.array(
                    [
                        [
                            0.418 * h,
                            side * 0.056 * h * flare,
                            0.026 * h * flare,
                            0.2 * a,
                        ],
                        [
                            0.435 * h,
                            side * 0.057 * h * flare,
                            0.032 * h * flare,
                            0.3 * a,
                        ],
                        [0.47 * h, side * 0.052 * h * flare, 0.022 * h, 0.35 * a],
                        [0.495 * h, side * 0.054 * h, 0.01 * h, 0.45 * a],
                    ]
                ),
                wing,
                flat=True,
            )
            self.canvas.arc(
                (side * 0.053 * h * flare, 0.45 * h),
                (0.034 * h * flare, 0.034 * h),
                (-120.0, -10.0) if side > 0 else (-60.0, -170.0),
                6.0,
                (0.35 * a, 0.5 * a),
                wing,
            )
            self.canvas.capsule(
                (side * 0.022 * h, 0.452 * h),
                (side * 0.03 * h, 0.49 * h),
                (9.0, 8.0),
                (0.7 * a, 0.55 * a),
                sacral,
            )
            joint = (side * hip_x, 0.502 * h)
            self.canvas.blob(joint, 0.009 * h, 0.85 * a, self.weights(0.5, joint[1]))
            front = self.weights(0.2, 0.51 * h)
            self.canvas.capsule(
                joint,
                (side * 0.008 * h, 0.514 * h),
                (9.0, 9.0),
                (0.45 * a, 0.55 * a),
                front,
            )
            self.canvas.capsule(
                (side * 0.008 * h, 0.522 * h),
                (side * 0.045 * h, 0.533 * h),
                (8.0, 10.0),
                (0.4 * a, 0.55 * a),
                self.weights(0.6, 0.53 * h),
            )
            for point, depth in (
                ((side * 0.06 * h, 0.43 * h), 0.55),
                ((side * 0.027 * h, 0.47 * h), 0.8),
                (joint, 0.5),
                ((side * 0.035 * h, 0.52 * h), 0.4),
            ):
                self.sites.add("pelvis", point[0], point[1], depth, self.body)

    # -- limbs ---------------------------------------------------------
    def arms(self) -> None:
        h, a = self.h, self.uptake
        limb = depth_weights(0.5, 90.0)
        for side in (-1, 1):
            joints = arm_joints(self.body, side)
            shoulder, elbow = joints["shoulder"], joints["elbow"]
            wrist, hand = joints["wrist"], joints["hand"]
            self.canvas.ellipse(shoulder, (0.014 * h, 0.015 * h), 0.7 * a, limb)
            self.canvas.capsule(
                shoulder, elbow, (11.0, 9.0), (0.22 * a, 0.18 * a), limb
            )
            self.canvas.blob(elbow, 0.007 * h, 0.25 * a, limb)
            for offset, radius in ((-4.0, 6.0), (4.0, 5.0)):
                self.canvas.capsule(
                    (elbow[0] + side * offset, elbow[1]),
                    (wrist[0] + side * offset, wrist[1]),
                    (radius, radius * 0.9),
                    (0.13 * a, 0.15 * a),
                    limb,
                )
            self.canvas.blob(wrist, 0.006 * h, 0.3 * a, limb)
            self.canvas.ellipse(hand, (0.013 * h, 0.028 * h), 0.25 * a, limb)
            upper = (
                shoulder[0] + 0.25 * (elbow[0] - shoulder[0]),
                shoulder[1] + 0.25 * (elbow[1] - shoulder[1]),
            )
            self.sites.add("humerus", shoulder[0], shoulder[1], 0.5, self.body)
            self.sites.add("humerus", upper[0], upper[1], 0.5, self.body)

    def legs(self) -> None:
        h, a = self.h, self.uptake
        columns = leg_columns(self.body)
        for side in (-1, 1):
            hip = (side * columns["hip"], 0.502 * h)
            trochanter = (side * (columns["hip"] + 0.028 * h), 0.515 * h)
            knee = (side * columns["knee"], 0.715 * h)
            ankle = (side * columns["ankle"], 0.955 * h)
            thigh = self.weights(0.5, 0.6 * h)
            self.canvas.blob(trochanter, 0.007 * h, 0.5 * a, thigh)
            self.canvas.capsule(hip, trochanter, (9.0, 9.0), (0.45 * a, 0.4 * a), thigh)
            self.canvas.capsule(
                (trochanter[0] - side * 0.006 * h, 0.525 * h),
                (knee[0], 0.7 * h),
                (14.0, 15.0),
                (0.26 * a, 0.25 * a),
                thigh,
            )
            front = self.weights(0.3, 0.72 * h)
            self.canvas.ellipse(
                (knee[0], 0.714 * h), (0.024 * h, 0.017 * h), 0.45 * a, front
            )
            self.canvas.ellipse(
                (knee[0], 0.729 * h), (0.022 * h, 0.012 * h), 0.35 * a, front
            )
            self.canvas.blob(
                (knee[0], 0.713 * h), 0.006 * h, 0.3 * a, self.weights(0.08, 0.72 * h)
            )
            shin = self.weights(0.3, 0.85 * h)
            self.canvas.capsule(
                (knee[0], 0.74 * h),
                (ankle[0], 0.945 * h),
                (12.5, 9.5),
                (0.25 * a, 0.24 * a),
                shin,
            )
            self.canvas.capsule(
                (knee[0] + side * 0.018 * h, 0.74 * h),
                (ankle[0] + side * 0.015 * h, 0.95 * h),
                (5.0, 5.0),
                (0.15 * a, 0.15 * a),
                self.weights(0.6, 0.85 * h),
            )
            self.canvas.ellipse(ankle, (0.018 * h, 0.012 * h), 0.45 * a, shin)
            self.canvas.ellipse(
                (ankle[0] + side * 0.005 * h, 0.978 * h),
                (0.018 * h, 0.03 * h),
                0.3 * a,
                shin,
                angle_deg=-side * 12.0,
            )
            self.sites.add("femur", hip[0], hip[1] + 0.005 * h, 0.5, self.body)
            self.sites.add("femur", trochanter[0], trochanter[1], 0.5, self.body)
            self.sites.add(
                "femur", trochanter[0] - side * 0.008 * h, 0.56 * h, 0.5, self.body
            )


def draw_skeleton(canvas: ActivityCanvas, body: BodyShape) -> SkeletonSites:
    """Draw every bone of ``body`` and return the candidate lesion sites.

    Parameters
    ----------
    canvas
        Where the activity is accumulated.
    body
        The patient.

    Returns
    -------
    SkeletonSites
        Points per region (``spine``, ``pelvis``, ``ribs``, ``skull``,
        ``femur``, ``humerus``, ``sternum``, ``scapula``).
    """
    painter = _Painter(canvas, body)
    painter.skull()
    painter.spine()
    painter.sternum_and_clavicles()
    painter.ribs()
    painter.scapulae()
    painter.pelvis()
    painter.arms()
    painter.legs()
    return painter.sites
