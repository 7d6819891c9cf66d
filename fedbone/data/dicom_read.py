"""Read a whole-body bone scan from a DICOM file and say everything wrong with it.

``read_nm_scan`` turns an NM file -- NM Image Storage (one frame per view) or
a single-view NM / Secondary Capture image, uncompressed or in any lossless
syntax pydicom can decode (JPEG Lossless, JPEG-LS, JPEG 2000, RLE) -- into an
:class:`~fedbone.data.scan.NMScan`. Files that cannot be used raise one
:class:`~fedbone.errors.DicomError` listing *every* problem, each with a
stable code, so a site quarantines a file with its full diagnosis:

``unreadable-file``, ``wrong-modality``, ``no-pixel-data``,
``tomographic-data``, ``rgb-screen-capture``, ``missing-spacing``,
``absurd-spacing``, ``non-finite-pixels``, ``negative-counts``,
``undecodable-pixels``, ``unknown-view``, ``duplicate-view``.

Views are identified as described in :mod:`fedbone.data.view_identification`.
A frame's PatientOrientation comes from its detector's
``ImageOrientationPatient`` or, for a single frame, from ``PatientOrientation``;
when neither is present it is ``None`` and preprocessing assumes fedbone's
convention (posterior not mirrored).
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from datetime import date
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID

from fedbone.data.dicom_values import as_list
from fedbone.data.scan import NMScan, ScanMetadata, ScanView, View
from fedbone.data.view_identification import FrameView, identify_frame_views
from fedbone.errors import DicomError, Problem

__all__ = ["SPACING_RANGE_MM", "check_nm_dataset", "read_nm_scan"]

logger = logging.getLogger(__name__)

# Gamma-camera whole-body pixels are ~1-5 mm; outside this range the spacing
# is a unit error (cm, um) or a placeholder, not a camera.
SPACING_RANGE_MM = (0.5, 10.0)
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_TOMO_VECTORS = ("RotationVector", "AngularViewVector", "SliceVector")
_AGE = re.compile(r"^(\d{1,3})([DWMY])$")
_DAYS_PER_UNIT = {"D": 1.0, "W": 7.0, "M": 365.25 / 12.0, "Y": 365.25}
# Tracer names as fedbone reports them, by words found in the header's
# radiopharmaceutical name or code meaning.
_TRACER_WORDS = (
    ("DPD", ("DPD", "DICARBOXYPROPANE", "DIPHOSPHONOPROPANEDICARBOXYLIC")),
    ("HMDP", ("HMDP", "HDP", "OXIDRONATE")),
    ("MDP", ("MDP", "MEDRONATE")),
)


def read_nm_scan(path: str | Path, *, default_view: View | None = None) -> NMScan:
    """Read a whole-body bone scan, or raise listing every problem.

    Parameters
    ----------
    path
        The DICOM file.
    default_view
        The site's view for single-view files that name no view (the site
        config's ``default_view``); ``None`` makes such files an error.

    Returns
    -------
    NMScan
        Views as float32 counts with spacing, orientation and how each view
        was identified, plus the header metadata.

    Raises
    ------
    DicomError
        With every problem found (``error.codes`` lists their codes).
    """
    ds, problems = _read_dataset(path)
    if ds is None:
        raise DicomError(path, problems)
    problems, frames, pixels = _examine(ds, default_view)
    spacing = _spacing(ds)
    if problems or pixels is None or spacing is None:
        # _examine reports a problem whenever pixels or spacing are missing.
        raise DicomError(path, problems)
    stack = pixels.reshape((len(frames), *pixels.shape[-2:]))
    views = {
        frame.view: ScanView(
            view=frame.view,
            counts=stack[index].astype(np.float32),
            spacing_mm=spacing,
            patient_orientation=frame.orientation,
            source=frame.source,
        )
        for index, frame in enumerate(frames)
        if frame.view is not None
    }
    logger.debug(
        "%s: %s",
        path,
        ", ".join(
            f"{view.value} by {scan_view.source}" for view, scan_view in views.items()
        ),
    )
    return NMScan(metadata=_metadata(ds, path), views=views)


def check_nm_dataset(ds: Dataset, *, default_view: View | None = None) -> list[Problem]:
    """Return every problem that keeps ``ds`` from being a usable scan.

    Decodes the pixel data to check it; never raises for a bad dataset.

    Parameters
    ----------
    ds
        A dataset as read by ``pydicom.dcmread``.
    default_view
        As in :func:`read_nm_scan`.
    """
    problems, _, _ = _examine(ds, default_view)
    return problems


def _read_dataset(path: str | Path) -> tuple[Dataset | None, list[Problem]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(path)
        except Exception as err:  # whatever the parser trips on, the file is bad
            return None, [
                Problem(
                    "unreadable-file",
                    f"not a readable DICOM file ({err}); expected a DICOM Part 10 "
                    "file: re-export it from the archive",
                )
            ]
    if any("end of file" in str(warning.message).lower() for warning in caught):
        return None, [_truncated("the encapsulated pixel data ends early")]
    return ds, []


def _examine(
    ds: Dataset, default_view: View | None
) -> tuple[list[Problem], list[FrameView], np.ndarray | None]:
    problems = _check_header(ds)
    codes = {problem.code for problem in problems}
    frames: list[FrameView] = []
    if "tomographic-data" not in codes:
        frames, view_problems = identify_frame_views(ds, default_view=default_view)
        problems += view_problems
    pixels = None
    if "no-pixel-data" not in codes:
        pixels, pixel_problems = _decode(ds)
        problems += pixel_problems
        if pixels is not None and "rgb-screen-capture" not in codes:
            problems += _check_pixel_values(pixels)
    return problems, frames, pixels


def _check_header(ds: Dataset) -> list[Problem]:
    problems = []
    modality = str(ds.get("Modality", "") or "")
    if modality != "NM":
        problems.append(
            Problem(
                "wrong-modality",
                f"Modality is {modality or 'missing'!r}, expected 'NM' (a nuclear "
                "medicine whole-body scan); remove this file from the site's data",
                "Modality",
            )
        )
    if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
        problems.append(
            Problem(
                "no-pixel-data",
                "the file has no Pixel Data; expected the whole-body image: "
                "export the images, not only the report or header",
            )
        )
    problems += _check_planar(ds)
    samples = _header_int(ds, "SamplesPerPixel", 1)
    photometric = str(ds.get("PhotometricInterpretation", "") or "MONOCHROME2")
    if samples != 1 or not photometric.startswith("MONOCHROME"):
        problems.append(
            Problem(
                "rgb-screen-capture",
                f"{samples} samples per pixel, {photometric}: a colour screen "
                "capture, not counts; expected MONOCHROME2 counts: export the "
                "original NM acquisition instead",
                "PhotometricInterpretation",
            )
        )
    spacing_value = ds.get("PixelSpacing")
    spacing = _spacing(ds)
    if spacing is None:
        problems.append(
            Problem(
                "missing-spacing",
                f"PixelSpacing is {spacing_value or 'missing'!r}; expected two "
                "values in mm: export with pixel spacing or fix the header",
                "PixelSpacing",
            )
        )
    elif not all(
        SPACING_RANGE_MM[0] <= value <= SPACING_RANGE_MM[1] for value in spacing
    ):
        problems.append(
            Problem(
                "absurd-spacing",
                f"PixelSpacing {spacing} mm is outside {SPACING_RANGE_MM[0]}-"
                f"{SPACING_RANGE_MM[1]} mm expected of a gamma camera; check the "
                "header's units",
                "PixelSpacing",
            )
        )
    return problems


def _check_planar(ds: Dataset) -> list[Problem]:
    image_type = [str(value).upper() for value in ds.get("ImageType", []) or []]
    frames = _header_int(ds, "NumberOfFrames", 1)
    detectors = _header_int(ds, "NumberOfDetectors", 0) or min(frames, 2)
    reasons = []
    if len(image_type) > 2 and "TOMO" in image_type[2]:
        reasons.append(f"ImageType {'/'.join(image_type)}")
    reasons += [f"{keyword} present" for keyword in _TOMO_VECTORS if keyword in ds]
    if frames > detectors:
        reasons.append(f"{frames} frames for {detectors} detector(s)")
    if not reasons:
        return []
    return [
        Problem(
            "tomographic-data",
            f"SPECT, dynamic or 3-D data ({'; '.join(reasons)}); expected a planar "
            "whole-body scan with one frame per view: export the whole-body series",
            "ImageType",
        )
    ]


def _decode(ds: Dataset) -> tuple[np.ndarray | None, list[Problem]]:
    if "PixelData" in ds and not _transfer_syntax(ds).is_compressed:
        bytes_per_pixel = _header_int(ds, "BitsAllocated", 16) // 8
        expected = (
            _header_int(ds, "Rows", 0)
            * _header_int(ds, "Columns", 0)
            * _header_int(ds, "NumberOfFrames", 1)
            * _header_int(ds, "SamplesPerPixel", 1)
            * bytes_per_pixel
        )
        if len(ds.PixelData) < expected:
            return None, [
                _truncated(f"{len(ds.PixelData)} of {expected} pixel bytes present")
            ]
    try:
        pixels = ds.pixel_array
    except Exception as err:  # every decoder failure is a diagnosis, not a crash
        return None, [
            Problem(
                "undecodable-pixels",
                f"pixel data could not be decoded ({type(err).__name__}: {err}) "
                f"with transfer syntax {_transfer_syntax(ds).name}; re-export "
                "uncompressed or check the pylibjpeg/pyjpegls plugins are installed",
                "PixelData",
            )
        ]
    slope = _number(ds.get("RescaleSlope")) or 1.0
    intercept = _number(ds.get("RescaleIntercept")) or 0.0
    if slope != 1.0 or intercept != 0.0:
        pixels = pixels * slope + intercept
    return pixels, []


def _check_pixel_values(pixels: np.ndarray) -> list[Problem]:
    if pixels.dtype.kind == "f" and not np.isfinite(pixels).all():
        bad = int(np.count_nonzero(~np.isfinite(pixels)))
        return [
            Problem(
                "non-finite-pixels",
                f"{bad} pixels are NaN or infinite; expected finite counts: "
                "re-export the original acquisition",
                "PixelData",
            )
        ]
    if pixels.dtype.kind in "if" and pixels.size and pixels.min() < 0:
        return [
            Problem(
                "negative-counts",
                f"minimum pixel value {pixels.min()} is negative; photon counts "
                "are >= 0: check PixelRepresentation and rescale, or re-export",
                "PixelData",
            )
        ]
    return []


def _metadata(ds: Dataset, path: str | Path) -> ScanMetadata:
    duration = _number(ds.get("ActualFrameDuration"))
    velocity = _number(ds.get("ScanVelocity"))
    counts = _number(ds.get("CountsAccumulated"))
    sex = str(ds.get("PatientSex", "") or "").upper()
    return ScanMetadata(
        patient_id=str(ds.get("PatientID", "") or ""),
        source_path=str(path),
        sop_class_uid=str(ds.get("SOPClassUID", "") or ""),
        transfer_syntax_uid=str(_transfer_syntax(ds)),
        age_years=_age_years(str(ds.get("PatientAge", "") or "")),
        sex=sex if sex in ("M", "F", "O") else None,
        study_date=_date(str(ds.get("StudyDate", "") or "")),
        manufacturer=str(ds.get("Manufacturer", "") or "") or None,
        model=str(ds.get("ManufacturerModelName", "") or "") or None,
        tracer=_tracer(ds),
        counts_accumulated=int(counts) if counts is not None else None,
        # ActualFrameDuration is in ms, ScanVelocity in mm/s (= cm/min / 6).
        acquisition_duration_s=duration / 1000.0 if duration is not None else None,
        scan_velocity_cm_min=velocity * 6.0 if velocity is not None else None,
    )


def _tracer(ds: Dataset) -> str | None:
    for item in ds.get("RadiopharmaceuticalInformationSequence", []) or []:
        texts = [str(item.get("Radiopharmaceutical", "") or "")]
        texts += [
            str(code.get("CodeMeaning", "") or "")
            for code in item.get("RadiopharmaceuticalCodeSequence", []) or []
        ]
        words = set(re.findall(r"[A-Z0-9]+", " ".join(texts).upper()))
        for tracer, names in _TRACER_WORDS:
            if words.intersection(names):
                return tracer
        if texts[0].strip():
            return texts[0].strip()
    return None


def _spacing(ds: Dataset) -> tuple[float, float] | None:
    values = as_list(ds.get("PixelSpacing"))
    try:
        spacing = tuple(float(value) for value in values)
    except (TypeError, ValueError):
        return None
    if len(spacing) != 2 or not all(math.isfinite(value) for value in spacing):
        return None
    return (spacing[0], spacing[1])


def _age_years(text: str) -> float | None:
    match = _AGE.match(text.strip().upper())
    if match is None:
        return None
    return int(match.group(1)) * _DAYS_PER_UNIT[match.group(2)] / 365.25


def _date(text: str) -> date | None:
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return None


def _number(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _header_int(ds: Dataset, keyword: str, default: int) -> int:
    """Return an integer element, or ``default`` when absent or malformed."""
    number = _number(ds.get(keyword))
    return int(number) if number else default


def _transfer_syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    return UID(str(meta.get("TransferSyntaxUID", "") or "")) if meta else UID("")


def _truncated(detail: str) -> Problem:
    return Problem(
        "unreadable-file",
        f"the file is truncated ({detail}); copy it again from the archive",
    )
