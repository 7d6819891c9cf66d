"""What fedbone reads out of a whole-body bone scan: named views plus metadata.

These are plain value objects shared by the DICOM reader (which produces them),
the preprocessing (which consumes them) and the phantom writer (whose files the
reader must turn back into the same objects).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum

import numpy as np

from fedbone.errors import Problem

__all__ = ["NMScan", "ScanMetadata", "ScanView", "View", "ViewSource"]


class View(StrEnum):
    """A planar whole-body projection."""

    ANTERIOR = "anterior"
    POSTERIOR = "posterior"


class ViewSource(StrEnum):
    """How the reader decided which view a frame holds (kept for audit)."""

    VIEW_CODE = "view-code"  # ViewCodeSequence / DetectorInformationSequence
    DETECTOR_VECTOR = "detector-vector"  # NM multi-frame Detector/View vectors
    VENDOR_HINT = "vendor-hint"  # ImageID, SeriesDescription, ImageComments...
    SITE_DEFAULT = "site-default"  # the site config's explicit default view


@dataclass(frozen=True)
class ScanView:
    """One view of a scan, exactly as stored (not yet preprocessed).

    Parameters
    ----------
    view
        Which projection this is.
    counts
        2-D float32 array of photon counts, rows top to bottom as stored.
    spacing_mm
        ``(row_spacing, column_spacing)`` in millimetres.
    patient_orientation
        DICOM PatientOrientation ``(row direction, column direction)`` when the
        file gives it (e.g. ``("L", "F")``), else ``None``. Preprocessing uses it
        to put the head at the top and the patient's right on the image left.
    source
        How the view was identified.
    """

    view: View
    counts: np.ndarray
    spacing_mm: tuple[float, float]
    patient_orientation: tuple[str, str] | None = None
    source: ViewSource = ViewSource.VIEW_CODE

    @property
    def total_counts(self) -> float:
        """Sum of all pixel counts in this view."""
        return float(self.counts.sum(dtype=np.float64))

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, columns)`` as stored."""
        return (int(self.counts.shape[0]), int(self.counts.shape[1]))


@dataclass(frozen=True)
class ScanMetadata:
    """Study-relevant header fields; ``None`` where the file does not say.

    ``warnings`` lists header values the reader treated as missing (an
    ``absurd-age``, say): they do not keep the scan out, but the site sees them
    in ``fedbone inspect`` and in the prepare report.
    """

    patient_id: str
    source_path: str
    sop_class_uid: str
    transfer_syntax_uid: str
    age_years: float | None = None
    sex: str | None = None  # "M", "F" or "O"
    study_date: date | None = None
    manufacturer: str | None = None
    model: str | None = None
    tracer: str | None = None  # radiopharmaceutical, e.g. "DPD", "HMDP"
    counts_accumulated: int | None = None  # header's CountsAccumulated (0018,0070)
    acquisition_duration_s: float | None = None
    scan_velocity_cm_min: float | None = None
    warnings: tuple[Problem, ...] = ()


@dataclass(frozen=True)
class NMScan:
    """A whole-body bone scan: its views and its metadata."""

    metadata: ScanMetadata
    views: dict[View, ScanView] = field(default_factory=dict)

    def view(self, view: View) -> ScanView:
        """Return one view, or raise ``KeyError`` naming the views present."""
        try:
            return self.views[view]
        except KeyError:
            present = ", ".join(v.value for v in self.views) or "none"
            raise KeyError(
                f"{self.metadata.source_path}: no {view.value} view "
                f"(views present: {present})"
            ) from None
