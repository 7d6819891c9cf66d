"""Human-readable views of what fedbone read from a DICOM file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fedbone.data.scan import NMScan

__all__ = ["describe_scan", "views_preview", "write_views_png"]


def describe_scan(scan: NMScan) -> dict[str, Any]:
    """Flatten a scan's metadata and per-view facts into an ordered mapping.

    Parameters
    ----------
    scan
        A scan as :func:`~fedbone.data.dicom_read.read_nm_scan` returns it.

    Returns
    -------
    dict
        Header facts, then one ``"<view> view"`` line per view; header values
        the reader treated as missing are listed under ``"warnings"`` (a
        ``[code] where: message`` string each) when there are any.
    """
    meta = scan.metadata
    description: dict[str, Any] = {
        "file": meta.source_path,
        "sop class": meta.sop_class_uid,
        "transfer syntax": meta.transfer_syntax_uid,
        "patient id": meta.patient_id,
        "age (years)": meta.age_years,
        "sex": meta.sex,
        "study date": meta.study_date,
        "manufacturer": meta.manufacturer,
        "model": meta.model,
        "tracer": meta.tracer,
        "counts accumulated": meta.counts_accumulated,
        "acquisition (s)": meta.acquisition_duration_s,
        "scan speed (cm/min)": meta.scan_velocity_cm_min,
    }
    if meta.warnings:
        description["warnings"] = [str(warning) for warning in meta.warnings]
    for view in scan.views.values():
        rows, cols = view.shape
        dy, dx = view.spacing_mm
        description[f"{view.view.value} view"] = (
            f"{rows}x{cols} px at {dy:.3g}x{dx:.3g} mm, "
            f"{view.total_counts:,.0f} counts, max {float(view.counts.max()):.0f}, "
            f"identified by {view.source.value}"
        )
    return description


def views_preview(scan: NMScan, percentile: float = 99.5) -> np.ndarray:
    """Return all views side by side as an 8-bit image, each clipped at ``percentile``.

    Views are shown as stored (no mirroring), separated by a thin grey bar.
    """
    panels: list[np.ndarray] = []
    height = max(v.shape[0] for v in scan.views.values())
    for view in scan.views.values():
        counts = view.counts.astype(np.float32)
        top = float(np.percentile(counts, percentile)) or 1.0
        panel = np.clip(counts / top, 0.0, 1.0) * 255.0
        padded = np.zeros((height, panel.shape[1]), dtype=np.float32)
        padded[: panel.shape[0]] = panel
        panels.extend([padded, np.full((height, 4), 96.0, dtype=np.float32)])
    return np.concatenate(panels[:-1], axis=1).astype(np.uint8)


def write_views_png(scan: NMScan, path: str | Path) -> Path:
    """Write :func:`views_preview` of ``scan`` to ``path`` as PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(views_preview(scan)).save(path)
    return path
