"""The preprocessing specification: target spacing, canvas and views."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from enum import StrEnum

__all__ = ["PreprocessSpec", "ViewMode"]


class ViewMode(StrEnum):
    """Which views end up on the canvas."""

    ANTERIOR = "anterior"  # default, as in Haberl et al.
    POSTERIOR = "posterior"  # mirrored into anterior orientation
    BOTH = "both"  # anterior left, mirrored posterior right (H x 2W)


@dataclass(frozen=True)
class PreprocessSpec:
    """How every scan of a site is put on a common canvas (SCIENCE.md).

    Parameters
    ----------
    spacing_mm
        Target isotropic pixel spacing; default 2 mm.
    canvas_height, canvas_width
        Canvas of one view in pixels; default 1024 x 256 (paper scale). CPU
        profiles use e.g. 256 x 64 (with ``spacing_mm = 8``).
    views
        Anterior only (default), posterior only, or both side by side.
    clip_percentile
        Intensities are clipped at this percentile and scaled to [0, 1].
    """

    spacing_mm: float = 2.0
    canvas_height: int = 1024
    canvas_width: int = 256
    views: ViewMode = ViewMode.ANTERIOR
    clip_percentile: float = 99.5

    @property
    def output_shape(self) -> tuple[int, int]:
        """``(height, width)`` of the preprocessed image."""
        factor = 2 if self.views is ViewMode.BOTH else 1
        return (self.canvas_height, self.canvas_width * factor)

    def fingerprint(self) -> str:
        """Short stable hash of the spec, part of every cache's identity."""
        payload = json.dumps(asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]
