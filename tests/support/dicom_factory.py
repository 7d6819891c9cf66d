"""Small NM DICOM files for tests: good ones, and ones broken on purpose."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from fedbone.data.dicom_write import (
    NMHeader,
    nm_whole_body_dataset,
    single_view_dataset,
)
from fedbone.data.scan import View

SHAPE = (96, 32)
SPACING_MM = (2.4, 2.4)
HEADER = NMHeader(
    patient_id="PHANTOM-001",
    patient_age_years=71.0,
    patient_sex="F",
    study_date=datetime.date(2021, 3, 4),
    manufacturer="Acme Gamma",
    model="WB-2",
    tracer="HMDP",
    acquisition_duration_s=1260.0,
    scan_velocity_cm_min=12.0,
    institution="Test Hospital",
    uid_seed="dicom-factory",
)


def counts(seed: int, shape: tuple[int, int] = SHAPE) -> np.ndarray:
    """Poisson counts with a bright 'spine', as uint16."""
    rng = np.random.default_rng(seed)
    mean = np.full(shape, 3.0)
    mean[:, shape[1] // 2 - 2 : shape[1] // 2 + 2] = 40.0
    return rng.poisson(mean).astype(np.uint16)


def two_views(seed: int = 0) -> dict[View, np.ndarray]:
    return {View.ANTERIOR: counts(seed), View.POSTERIOR: counts(seed + 1)}


def whole_body(**kwargs: Any) -> Dataset:
    """A good two-view NM Image Storage dataset (not yet saved)."""
    return nm_whole_body_dataset(two_views(), SPACING_MM, HEADER, **kwargs)


def single_view(**kwargs: Any) -> Dataset:
    """A good single-view dataset; keywords as in ``single_view_dataset``."""
    return single_view_dataset(counts(7), SPACING_MM, HEADER, **kwargs)


def save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def set_pixels(ds: Dataset, pixels: np.ndarray, *, signed: bool = False) -> None:
    """Replace the (uncompressed) pixel data, keeping the header consistent."""
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds.PixelRepresentation = 1 if signed else 0
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.NumberOfFrames = pixels.shape[0] if pixels.ndim == 3 else 1
