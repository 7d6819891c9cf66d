"""Drawing smooth activity primitives into an anterior/posterior pair of maps.

Everything is drawn in patient millimetres (``x`` towards the patient's left,
``y`` down from the vertex) and placed on the camera's pixel grid by a
:class:`Pose` (shift, small rotation). Each primitive is computed only inside
its bounding box, which is what keeps a whole body under a few milliseconds.

Both views are accumulated in *anterior orientation* (patient's right on the
image left); the posterior map is mirrored only when the camera reads it out.
A primitive's depth in the body decides how strongly each view sees it
(:func:`depth_weights`), which is why the spine is brighter posteriorly and the
sternum anteriorly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["ActivityCanvas", "Pose", "depth_weights"]

# Effective broad-beam attenuation of 140 keV photons in soft tissue (1/mm);
# lower than the narrow-beam 0.015 because scattered photons still count.
_MU_PER_MM = 0.011


def depth_weights(depth: float, thickness_mm: float) -> tuple[float, float]:
    """Return the ``(anterior, posterior)`` transmission of a source.

    Parameters
    ----------
    depth
        Position between the anterior (0) and posterior (1) body surface.
    thickness_mm
        Antero-posterior body thickness at that level.
    """
    anterior = math.exp(-_MU_PER_MM * depth * thickness_mm)
    posterior = math.exp(-_MU_PER_MM * (1.0 - depth) * thickness_mm)
    return anterior, posterior


@dataclass(frozen=True)
class Pose:
    """Where the patient lies on the camera grid.

    Parameters
    ----------
    shape
        ``(rows, columns)`` of the view.
    spacing_mm
        Pixel size (square pixels).
    top_mm
        Distance from the first row to the vertex.
    shift_mm
        Lateral offset of the midline (positive: towards image right).
    tilt_rad
        In-plane rotation about ``pivot_y_mm`` (the pelvis).
    pivot_y_mm
        Height of the rotation centre below the vertex.
    """

    shape: tuple[int, int]
    spacing_mm: float
    top_mm: float
    shift_mm: float = 0.0
    tilt_rad: float = 0.0
    pivot_y_mm: float = 900.0

    def to_pixels(
        self, x_mm: np.ndarray, y_mm: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Map patient millimetres to ``(column, row)`` pixel coordinates."""
        cos, sin = math.cos(self.tilt_rad), math.sin(self.tilt_rad)
        dy = np.asarray(y_mm, dtype=np.float64) - self.pivot_y_mm
        x = np.asarray(x_mm, dtype=np.float64)
        x_rot = x * cos - dy * sin
        y_rot = x * sin + dy * cos + self.pivot_y_mm
        column = (self.shape[1] - 1) / 2 + (x_rot + self.shift_mm) / self.spacing_mm
        row = (y_rot + self.top_mm) / self.spacing_mm
        return column, row


class ActivityCanvas:
    """Accumulates tracer activity seen by the anterior and posterior heads.

    Parameters
    ----------
    pose
        Patient placement; lengths passed to the drawing methods are in mm.
    """

    def __init__(self, pose: Pose) -> None:
        self.pose = pose
        rows, columns = pose.shape
        self.anterior = np.zeros(pose.shape, dtype=np.float32)
        self.posterior = np.zeros(pose.shape, dtype=np.float32)
        self._rows = np.arange(rows, dtype=np.float32)
        self._columns = np.arange(columns, dtype=np.float32)
        self._px = 1.0 / pose.spacing_mm

    # -- placement -------------------------------------------------------
    def _point(self, x_mm: float, y_mm: float) -> tuple[float, float]:
        column, row = self.pose.to_pixels(np.array(x_mm), np.array(y_mm))
        return float(column), float(row)

    def _window(
        self, col_lo: float, col_hi: float, row_lo: float, row_hi: float
    ) -> tuple[slice, slice] | None:
        rows, columns = self.pose.shape
        r0, r1 = max(int(row_lo), 0), min(math.ceil(row_hi) + 1, rows)
        c0, c1 = max(int(col_lo), 0), min(math.ceil(col_hi) + 1, columns)
        if r0 >= r1 or c0 >= c1:
            return None
        return slice(r0, r1), slice(c0, c1)

    def _add(
        self,
        window: tuple[slice, slice],
        patch: np.ndarray,
        weights: tuple[float, float],
    ) -> None:
        self.anterior[window] += np.float32(weights[0]) * patch
        self.posterior[window] += np.float32(weights[1]) * patch

    # -- primitives ------------------------------------------------------
    def ellipse(
        self,
        centre_mm: tuple[float, float],
        semi_axes_mm: tuple[float, float],
        amplitude: float,
        weights: tuple[float, float],
        *,
        angle_deg: float = 0.0,
        shell: float = 0.0,
        gaussian: bool = False,
    ) -> None:
        """Draw a projected ellipsoid (solid, hollow shell, or Gaussian blob).

        ``semi_axes_mm`` are ``(lateral, vertical)`` before rotation by
        ``angle_deg`` (clockwise on the image); for a Gaussian they are the
        standard deviations. ``shell`` in (0, 1) is the inner/outer radius ratio
        of a hollow shell (the calvarium, the myocardium), which projects with
        a bright rim. The peak value is ``amplitude``.

        Parameters
        ----------
        centre_mm
            ``(x, y)`` centre in patient millimetres.
        semi_axes_mm
            ``(lateral, vertical)`` semi-axes in mm, or standard deviations in
            mm with ``gaussian``.
        amplitude
            Peak activity, relative to a lumbar vertebral body (1.0).
        weights
            ``(anterior, posterior)`` view transmissions from
            :func:`depth_weights`.
        angle_deg
            Rotation in degrees, clockwise on the image, added to the pose's
            tilt.
        shell
            Inner/outer radius ratio in (0, 1) of a hollow shell; 0 draws a
            solid ellipsoid. Ignored with ``gaussian``.
        gaussian
            Draw a Gaussian blob (cut at 3 standard deviations) instead.
        """
        cx, cy = self._point(*centre_mm)
        a, b = semi_axes_mm[0] * self._px, semi_axes_mm[1] * self._px
        reach = max(a, b) * (3.0 if gaussian else 1.0) + 1.0
        window = self._window(cx - reach, cx + reach, cy - reach, cy + reach)
        if window is None:
            return
        angle = math.radians(angle_deg) + self.pose.tilt_rad
        cos, sin = math.cos(angle), math.sin(angle)
        dy = (self._rows[window[0]] - cy)[:, None]
        dx = (self._columns[window[1]] - cx)[None, :]
        u = (dx * cos + dy * sin) / a
        v = (dy * cos - dx * sin) / b
        r2 = u * u + v * v
        if gaussian:
            patch = np.exp(-0.5 * r2)
        elif shell > 0.0:
            outer = np.sqrt(np.maximum(1.0 - r2, 0.0))
            inner = shell * np.sqrt(np.maximum(1.0 - r2 / (shell * shell), 0.0))
            patch = (outer - inner) / math.sqrt(1.0 - shell * shell)
        else:
            patch = np.sqrt(np.maximum(1.0 - r2, 0.0))
        self._add(window, np.float32(amplitude) * patch, weights)

    def blob(
        self,
        centre_mm: tuple[float, float],
        sigma_mm: float,
        amplitude: float,
        weights: tuple[float, float],
    ) -> None:
        """Draw a round Gaussian hot spot (a lesion, a joint, an injection).

        Parameters
        ----------
        centre_mm
            ``(x, y)`` centre in patient millimetres.
        sigma_mm
            Standard deviation in mm.
        amplitude
            Peak activity, relative to a lumbar vertebral body (1.0).
        weights
            ``(anterior, posterior)`` view transmissions from
            :func:`depth_weights`.
        """
        self.ellipse(centre_mm, (sigma_mm, sigma_mm), amplitude, weights, gaussian=True)

    def capsule(
        self,
        start_mm: tuple[float, float],
        end_mm: tuple[float, float],
        radii_mm: tuple[float, float],
        amplitudes: tuple[float, float],
        weights: tuple[float, float],
    ) -> None:
        """Draw a projected cylinder with rounded ends (a long bone, a limb).

        Radius and amplitude change linearly from ``start_mm`` to ``end_mm``.

        Parameters
        ----------
        start_mm, end_mm
            ``(x, y)`` centres of the two ends in patient millimetres.
        radii_mm
            Radius in mm at the start and at the end.
        amplitudes
            Peak activity at the start and at the end, relative to a lumbar
            vertebral body (1.0).
        weights
            ``(anterior, posterior)`` view transmissions from
            :func:`depth_weights`.
        """
        x0, y0 = self._point(*start_mm)
        x1, y1 = self._point(*end_mm)
        r0, r1 = radii_mm[0] * self._px, radii_mm[1] * self._px
        reach = max(r0, r1) + 1.0
        window = self._window(
            min(x0, x1) - reach,
            max(x0, x1) + reach,
            min(y0, y1) - reach,
            max(y0, y1) + reach,
        )
        if window is None:
            return
        ex, ey = x1 - x0, y1 - y0
        length2 = max(ex * ex + ey * ey, 1e-6)
        dy = (self._rows[window[0]] - y0)[:, None]
        dx = (self._columns[window[1]] - x0)[None, :]
        t = np.clip((dx * ex + dy * ey) / length2, 0.0, 1.0)
        ox, oy = dx - t * ex, dy - t * ey
        radius = r0 + t * (r1 - r0)
        across = np.sqrt(np.maximum(1.0 - (ox * ox + oy * oy) / (radius * radius), 0))
        amplitude = amplitudes[0] + t * (amplitudes[1] - amplitudes[0])
        self._add(window, (amplitude * across).astype(np.float32), weights)

    def tube(
        self,
        knots_mm: np.ndarray,
        weights: tuple[float, float],
        *,
        flat: bool = False,
        soft: bool = False,
    ) -> None:
        """Draw a vertical body part whose centre, width and uptake vary by row.

        Parameters
        ----------
        knots_mm
            ``(n, 4)`` rows of ``(y, x_centre, half_width, amplitude)`` with
            increasing ``y``; values in between are interpolated linearly.
        weights
            View transmissions from :func:`depth_weights`.
        flat
            Uniform plate with soft edges (scapula, sternum) instead of the
            rounded profile of a cylinder (limb bone, vertebral column).
        soft
            Parabolic profile fading gently to the edge (soft tissue, whose
            rim is thin and seen through scatter).
        """
        knots = np.asarray(knots_mm, dtype=np.float64)
        columns, rows = self.pose.to_pixels(knots[:, 1], knots[:, 0])
        half = knots[:, 2] * self._px
        window = self._window(
            float(np.min(columns - half)) - 1,
            float(np.max(columns + half)) + 1,
            float(rows.min()),
            float(rows.max()),
        )
        if window is None:
            return
        row_axis = self._rows[window[0]]
        order = np.argsort(rows)
        centre = np.interp(row_axis, rows[order], columns[order])[:, None]
        width = np.interp(row_axis, rows[order], half[order])[:, None]
        amplitude = np.interp(row_axis, rows[order], knots[order, 3])[:, None]
        offset = np.abs(self._columns[window[1]][None, :] - centre) / np.maximum(
            width, 0.5
        )
        if flat:
            edge = np.maximum(width, 0.5) * 0.25
            profile = np.clip((1.0 - offset) * width / edge, 0.0, 1.0)
        elif soft:
            profile = np.maximum(1.0 - offset * offset, 0.0)
        else:
            profile = np.sqrt(np.maximum(1.0 - offset * offset, 0.0))
        self._add(window, (amplitude * profile).astype(np.float32), weights)

    def arc(
        self,
        centre_mm: tuple[float, float],
        semi_axes_mm: tuple[float, float],
        span_deg: tuple[float, float],
        half_width_mm: float,
        amplitudes: tuple[float, float],
        weights: tuple[float, float],
        *,
        angle_deg: float = 0.0,
    ) -> None:
        """Draw a thin curved bone along part of an ellipse (a rib, a mandible).

        ``span_deg`` is the parametric angle range (0 = patient's left, 90 =
        down) on the ellipse before its rotation by ``angle_deg`` (clockwise on
        the image); the amplitude changes linearly from the first to the second
        end.

        Parameters
        ----------
        centre_mm
            ``(x, y)`` centre of the ellipse in patient millimetres.
        semi_axes_mm
            ``(lateral, vertical)`` semi-axes of the ellipse in mm.
        span_deg
            ``(start, stop)`` parametric angles in degrees; the span must be
            under 180 degrees.
        half_width_mm
            Half the bone's thickness across the curve, in mm.
        amplitudes
            Peak activity at the start and at the stop end, relative to a
            lumbar vertebral body (1.0).
        weights
            ``(anterior, posterior)`` view transmissions from
            :func:`depth_weights`.
        angle_deg
            Rotation of the ellipse in degrees, clockwise on the image, added
            to the pose's tilt.
        """
        cx, cy = self._point(*centre_mm)
        a, b = semi_axes_mm[0] * self._px, semi_axes_mm[1] * self._px
        tilt = self.pose.tilt_rad + math.radians(angle_deg)
        start, stop = math.radians(span_deg[0]), math.radians(span_deg[1])
        samples = np.linspace(start, stop, 9)
        xs = a * np.cos(samples)
        ys = b * np.sin(samples)
        px = cx + xs * math.cos(tilt) - ys * math.sin(tilt)
        py = cy + xs * math.sin(tilt) + ys * math.cos(tilt)
        reach = half_width_mm * self._px + 1.5
        window = self._window(
            float(px.min()) - reach,
            float(px.max()) + reach,
            float(py.min()) - reach,
            float(py.max()) + reach,
        )
        if window is None:
            return
        dy = (self._rows[window[0]] - cy)[:, None]
        dx = (self._columns[window[1]] - cx)[None, :]
        cos, sin = math.cos(tilt), math.sin(tilt)
        u = (dx * cos + dy * sin) / a
        v = (dy * cos - dx * sin) / b
        rho = np.sqrt(u * u + v * v) + np.float32(1e-6)
        gradient = np.sqrt((u / a) ** 2 + (v / b) ** 2) / rho
        distance = (rho - 1.0) / gradient
        hw = half_width_mm * self._px
        across = np.sqrt(np.maximum(1.0 - (distance / hw) ** 2, 0.0))
        # Angular window from the two end rays (spans are < 180 degrees), which
        # is far cheaper than an arctangent per pixel.
        sense = 1.0 if stop > start else -1.0
        taper = np.float32(0.12)
        inside_start = sense * (math.cos(start) * v - math.sin(start) * u)
        inside_stop = sense * (math.sin(stop) * u - math.cos(stop) * v)
        window_weight = np.clip(inside_start / taper, 0.0, 1.0) * np.clip(
            inside_stop / taper, 0.0, 1.0
        )
        chord_u, chord_v = (
            math.cos(stop) - math.cos(start),
            math.sin(stop) - math.sin(start),
        )
        fraction = np.clip(
            ((u - math.cos(start)) * chord_u + (v - math.sin(start)) * chord_v)
            / max(chord_u * chord_u + chord_v * chord_v, 1e-6),
            0.0,
            1.0,
        )
        amplitude = amplitudes[0] + fraction * (amplitudes[1] - amplitudes[0])
        taper_weight = window_weight
        self._add(
            window, (amplitude * across * taper_weight).astype(np.float32), weights
        )
