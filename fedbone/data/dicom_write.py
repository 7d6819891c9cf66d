r"""Write whole-body bone scans as real DICOM NM files (phantoms, tests, exports).

``write_nm_whole_body`` writes an **NM Image Storage** multi-frame instance, one
frame per view, as a gamma camera does: ``ImageType``
``ORIGINAL\PRIMARY\WHOLE BODY\EMISSION``, frames indexed by the energy
window and detector vectors, and one ``DetectorInformationSequence`` item per
detector carrying the view code (CID 26) and the frame's orientation (see
:mod:`fedbone.data.view_identification` for the orientation convention).
``write_single_view`` writes one view as a single-frame NM image or as the
Secondary Capture many archives hold, with or without view evidence, so that
the reader's fallbacks can be tested.

Datasets are built element by element (no template copies) so that writing an
uncompressed 2 x 1024 x 256 scan takes milliseconds.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import pydicom.uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID

from fedbone.data.scan import View
from fedbone.data.view_identification import (
    PLANAR_ORIENTATION_COSINES,
    PLANAR_PATIENT_ORIENTATION,
    VIEW_CODES,
    CodedConcept,
)

__all__ = [
    "WRITABLE_TRANSFER_SYNTAXES",
    "NMHeader",
    "SingleViewStorage",
    "nm_whole_body_dataset",
    "single_view_dataset",
    "write_nm_whole_body",
    "write_single_view",
]

NM_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.20")
SECONDARY_CAPTURE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.7")

# Lossless syntaxes with an encoder installed (pydicom + pylibjpeg / pyjpegls).
# JPEG Lossless SV1 (the NEMA NM1 file's syntax) can be read but not written.
WRITABLE_TRANSFER_SYNTAXES: frozenset[str] = frozenset(
    {
        pydicom.uid.ExplicitVRLittleEndian,
        pydicom.uid.RLELossless,
        pydicom.uid.JPEGLSLossless,
        pydicom.uid.JPEG2000Lossless,
    }
)

# Radiopharmaceutical codes (DICOM CID 25; values as in pydicom.sr.codedict).
# Tc-99m DPD has no code in CID 25, so only its name is written.
_TRACER_CODES: dict[str, CodedConcept] = {
    "MDP": CodedConcept("96390006", "SCT", "Technetium Tc^99m^ medronate"),
    "HMDP": CodedConcept("53951001", "SCT", "Technetium Tc^99m^ oxidronate"),
    "HDP": CodedConcept("53951001", "SCT", "Technetium Tc^99m^ oxidronate"),
}
_TC99M = CodedConcept("72454006", "SCT", "^99m^Technetium")
_RECUMBENT = CodedConcept("102538003", "SCT", "recumbent")
_SUPINE = CodedConcept("40199007", "SCT", "supine")
# The Tc-99m photopeak window: 140 keV +/- 10 %.
_ENERGY_WINDOW_KEV = (126.0, 154.0)
_DETECTOR_ORDER = (View.ANTERIOR, View.POSTERIOR)
_MAX_UINT16 = 65535


class SingleViewStorage(StrEnum):
    """SOP class of a single-view file."""

    NM = "nm"  # NM Image Storage, one frame
    SECONDARY_CAPTURE = "secondary-capture"  # Secondary Capture, Modality NM


@dataclass(frozen=True)
class NMHeader:
    """Header content of a written scan.

    Parameters
    ----------
    patient_id
        PatientID (also used as PatientName).
    patient_age_years
        Written as an AS age string (``"071Y"``, ``"006M"``).
    patient_sex
        ``"M"``, ``"F"`` or ``"O"``.
    study_date
        StudyDate; also written as SeriesDate.
    manufacturer, model
        Manufacturer and ManufacturerModelName.
    tracer
        Radiopharmaceutical name (``"DPD"``, ``"HMDP"``, ``"MDP"``); coded when
        DICOM CID 25 has a code for it.
    acquisition_duration_s
        Written as ActualFrameDuration (ms).
    scan_velocity_cm_min
        Written as ScanVelocity (DICOM unit: mm/s).
    institution
        InstitutionName.
    series_description
        SeriesDescription.
    uid_seed
        When given, every UID is derived from it, so the same seed gives the
        same file byte for byte (reproducible phantoms). Otherwise random UIDs.
    """

    patient_id: str
    patient_age_years: float | None = None
    patient_sex: str | None = None
    study_date: datetime.date | None = None
    manufacturer: str = "fedbone phantom"
    model: str = "virtual camera"
    tracer: str | None = None
    acquisition_duration_s: float | None = None
    scan_velocity_cm_min: float | None = None
    institution: str | None = None
    series_description: str = "WB BONE"
    uid_seed: str | None = None


def write_nm_whole_body(
    path: str | Path,
    views: Mapping[View, np.ndarray],
    spacing_mm: tuple[float, float],
    header: NMHeader,
    *,
    transfer_syntax: str = pydicom.uid.ExplicitVRLittleEndian,
) -> Path:
    """Write a multi-frame NM Image Storage file, one frame per view.

    Parameters
    ----------
    path
        Output file; parent folders must exist.
    views
        Counts per view, 2-D, all the same shape, integers in 0..65535 (stored
        as uint16). Frames are written anterior first (detector 1).
    spacing_mm
        ``(row, column)`` PixelSpacing in millimetres.
    header
        Patient, study and acquisition fields.
    transfer_syntax
        One of :data:`WRITABLE_TRANSFER_SYNTAXES`.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    ValueError
        For an unsupported transfer syntax or pixel data that cannot be stored
        as uint16 counts.
    """
    ds = nm_whole_body_dataset(
        views, spacing_mm, header, transfer_syntax=transfer_syntax
    )
    return _save(ds, path)


def write_single_view(
    path: str | Path,
    counts: np.ndarray,
    spacing_mm: tuple[float, float],
    header: NMHeader,
    *,
    view: View | None = None,
    storage: SingleViewStorage = SingleViewStorage.NM,
    write_view_code: bool = True,
    vendor_hint: str | None = None,
    transfer_syntax: str = pydicom.uid.ExplicitVRLittleEndian,
) -> Path:
    """Write one view as a single-frame NM image or an NM Secondary Capture.

    Parameters
    ----------
    path
        Output file; parent folders must exist.
    counts
        2-D counts, integers in 0..65535.
    spacing_mm
        ``(row, column)`` PixelSpacing in millimetres.
    header
        Patient, study and acquisition fields.
    view
        The view the image holds; sets PatientOrientation and, with
        ``write_view_code``, the view code. ``None`` writes no view evidence.
    storage
        NM Image Storage or Secondary Capture (Modality NM).
    write_view_code
        Write a ``ViewCodeSequence`` (inside a ``DetectorInformationSequence``
        for NM, at the top level for Secondary Capture).
    vendor_hint
        Free text as scanners write it (``"WB ANT"``), put in ImageID (first 16
        characters) and SeriesDescription; ``None`` writes no ImageID and the
        header's ``series_description``.
    transfer_syntax
        One of :data:`WRITABLE_TRANSFER_SYNTAXES`.

    Returns
    -------
    Path
        The written file.
    """
    ds = single_view_dataset(
        counts,
        spacing_mm,
        header,
        view=view,
        storage=storage,
        write_view_code=write_view_code,
        vendor_hint=vendor_hint,
        transfer_syntax=transfer_syntax,
    )
    return _save(ds, path)


def nm_whole_body_dataset(
    views: Mapping[View, np.ndarray],
    spacing_mm: tuple[float, float],
    header: NMHeader,
    *,
    transfer_syntax: str = pydicom.uid.ExplicitVRLittleEndian,
) -> Dataset:
    """Build (without writing) the dataset :func:`write_nm_whole_body` writes.

    Useful to tests that break one element before saving.

    Parameters
    ----------
    views
        Counts per view, 2-D, all the same shape, integers in 0..65535 (stored
        as uint16). Frames are ordered anterior first (detector 1).
    spacing_mm
        ``(row, column)`` PixelSpacing in millimetres.
    header
        Patient, study and acquisition fields.
    transfer_syntax
        One of :data:`WRITABLE_TRANSFER_SYNTAXES`.

    Returns
    -------
    Dataset
        The encoded dataset, not yet saved.

    Raises
    ------
    ValueError
        For an unsupported transfer syntax, no views, views of different
        shapes, or pixel data that cannot be stored as uint16 counts.
    """
    _check_transfer_syntax(transfer_syntax)
    ordered = [view for view in _DETECTOR_ORDER if view in views]
    if not ordered:
        raise ValueError(
            "views is empty: pass at least one of View.ANTERIOR, View.POSTERIOR"
        )
    frames = [_as_uint16_counts(views[view], view.value) for view in ordered]
    shapes = {frame.shape for frame in frames}
    if len(shapes) != 1:
        raise ValueError(
            f"all views must have the same shape, got {sorted(shapes)}; "
            "pad or crop them to one shape"
        )
    pixels = np.stack(frames) if len(frames) > 1 else frames[0]
    ds = _base_dataset(header, NM_IMAGE_STORAGE, transfer_syntax)
    _set_pixels(ds, pixels, spacing_mm)
    ds.PatientOrientation = (
        list(PLANAR_PATIENT_ORIENTATION[ordered[0]]) if len(ordered) == 1 else ""
    )
    _set_nm_modules(ds, ordered, header)
    ds.CountsAccumulated = int(pixels.sum(dtype=np.int64))
    ds.SeriesDescription = header.series_description
    ds.ImageID = "WHOLE BODY"
    return _encode(ds, pixels, transfer_syntax)


def single_view_dataset(
    counts: np.ndarray,
    spacing_mm: tuple[float, float],
    header: NMHeader,
    *,
    view: View | None = None,
    storage: SingleViewStorage = SingleViewStorage.NM,
    write_view_code: bool = True,
    vendor_hint: str | None = None,
    transfer_syntax: str = pydicom.uid.ExplicitVRLittleEndian,
) -> Dataset:
    """Build (without writing) the dataset :func:`write_single_view` writes.

    Parameters
    ----------
    counts
        2-D counts, integers in 0..65535.
    spacing_mm
        ``(row, column)`` PixelSpacing in millimetres.
    header
        Patient, study and acquisition fields.
    view
        The view the image holds; sets PatientOrientation and, with
        ``write_view_code``, the view code. ``None`` writes no view evidence.
    storage
        NM Image Storage or Secondary Capture (Modality NM).
    write_view_code
        Write a ``ViewCodeSequence`` (inside a ``DetectorInformationSequence``
        for NM, at the top level for Secondary Capture).
    vendor_hint
        Free text as scanners write it (``"WB ANT"``), put in ImageID (first 16
        characters) and SeriesDescription; ``None`` writes no ImageID and the
        header's ``series_description``.
    transfer_syntax
        One of :data:`WRITABLE_TRANSFER_SYNTAXES`.

    Returns
    -------
    Dataset
        The encoded dataset, not yet saved.

    Raises
    ------
    ValueError
        For an unsupported transfer syntax or pixel data that cannot be stored
        as uint16 counts.
    """
    _check_transfer_syntax(transfer_syntax)
    pixels = _as_uint16_counts(counts, "counts")
    sop_class = (
        NM_IMAGE_STORAGE
        if storage is SingleViewStorage.NM
        else SECONDARY_CAPTURE_STORAGE
    )
    ds = _base_dataset(header, sop_class, transfer_syntax)
    _set_pixels(ds, pixels, spacing_mm)
    ds.PatientOrientation = (
        list(PLANAR_PATIENT_ORIENTATION[view]) if view is not None else ""
    )
    ds.CountsAccumulated = int(pixels.sum(dtype=np.int64))
    ds.SeriesDescription = (
        vendor_hint if vendor_hint is not None else header.series_description
    )
    if vendor_hint is not None:
        ds.ImageID = vendor_hint[:16]
    coded_view = view if write_view_code else None
    if storage is SingleViewStorage.NM:
        _set_nm_modules(ds, [coded_view], header)
    else:
        ds.ConversionType = "WSD"
        ds.ImageType = ["DERIVED", "SECONDARY", "WHOLE BODY", "EMISSION"]
        _set_acquisition(ds, header)
        if coded_view is not None:
            ds.ViewCodeSequence = Sequence([VIEW_CODES[coded_view].to_dataset()])
    return _encode(ds, pixels, transfer_syntax)


def _check_transfer_syntax(transfer_syntax: str) -> None:
    if transfer_syntax not in WRITABLE_TRANSFER_SYNTAXES:
        supported = ", ".join(
            f"{UID(uid).name} ({uid})" for uid in sorted(WRITABLE_TRANSFER_SYNTAXES)
        )
        raise ValueError(
            f"cannot write transfer syntax {UID(transfer_syntax).name} "
            f"({transfer_syntax}): no encoder is installed for it; "
            f"use one of: {supported}"
        )


def _as_uint16_counts(array: np.ndarray, name: str) -> np.ndarray:
    counts = np.asarray(array)
    if counts.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, columns), got {counts.shape}")
    if counts.dtype == np.uint16:
        return np.ascontiguousarray(counts)
    if counts.dtype.kind not in "uif":
        raise ValueError(f"{name} must be numeric counts, got dtype {counts.dtype}")
    if counts.size and not np.isfinite(counts).all():
        raise ValueError(f"{name} holds NaN or infinite values; counts must be finite")
    low, high = (counts.min(), counts.max()) if counts.size else (0, 0)
    if low < 0 or high > _MAX_UINT16:
        raise ValueError(
            f"{name} must lie in 0..{_MAX_UINT16} to be stored as uint16 counts, "
            f"got {low}..{high}"
        )
    if counts.dtype.kind == "f" and not np.array_equal(counts, np.round(counts)):
        raise ValueError(f"{name} must hold whole counts; round them first")
    return counts.astype(np.uint16)


def _uid(header: NMHeader, role: str) -> UID:
    if header.uid_seed is None:
        return pydicom.uid.generate_uid()
    return pydicom.uid.generate_uid(entropy_srcs=[header.uid_seed, role])


def _base_dataset(header: NMHeader, sop_class: UID, transfer_syntax: str) -> Dataset:
    sop_instance = _uid(header, "sop-instance")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    date = header.study_date.strftime("%Y%m%d") if header.study_date else ""
    ds.StudyDate = date
    ds.SeriesDate = date
    ds.StudyTime = ""
    ds.AccessionNumber = ""
    ds.Modality = "NM"
    ds.Manufacturer = header.manufacturer
    ds.ManufacturerModelName = header.model
    if header.institution is not None:
        ds.InstitutionName = header.institution
    ds.ReferringPhysicianName = ""
    ds.PatientName = header.patient_id
    ds.PatientID = header.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = header.patient_sex or ""
    ds.PatientAge = _age_string(header.patient_age_years)
    ds.BodyPartExamined = "WHOLE BODY"
    ds.StudyInstanceUID = _uid(header, "study")
    ds.SeriesInstanceUID = _uid(header, "series")
    ds.StudyID = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.FrameOfReferenceUID = _uid(header, "frame-of-reference")
    ds.PositionReferenceIndicator = ""
    return ds


def _set_pixels(
    ds: Dataset, pixels: np.ndarray, spacing_mm: tuple[float, float]
) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelSpacing = [float(spacing_mm[0]), float(spacing_mm[1])]
    ds.NumberOfFrames = pixels.shape[0] if pixels.ndim == 3 else 1


def _set_nm_modules(
    ds: Dataset, frame_views: list[View] | list[View | None], header: NMHeader
) -> None:
    """NM Image, NM Multi-frame, NM Detector, NM Isotope and orientation modules."""
    count = len(frame_views)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "WHOLE BODY", "EMISSION"]
    ds.FrameIncrementPointer = [0x00540010, 0x00540020]
    ds.NumberOfEnergyWindows = 1
    ds.EnergyWindowVector = [1] * count
    ds.NumberOfDetectors = count
    ds.DetectorVector = list(range(1, count + 1))
    ds.WholeBodyTechnique = "1PS"
    _set_acquisition(ds, header)
    detectors = []
    for view in frame_views:
        detector = Dataset()
        detector.CollimatorType = "PARA"
        detector.FocalDistance = ""
        detector.XFocusCenter = ""
        detector.YFocusCenter = ""
        detector.ZoomFactor = ""
        if view is not None:
            detector.ViewCodeSequence = Sequence([VIEW_CODES[view].to_dataset()])
            detector.ImageOrientationPatient = list(PLANAR_ORIENTATION_COSINES[view])
        detectors.append(detector)
    ds.DetectorInformationSequence = Sequence(detectors)
    position = _RECUMBENT.to_dataset()
    position.PatientOrientationModifierCodeSequence = Sequence([_SUPINE.to_dataset()])
    ds.PatientOrientationCodeSequence = Sequence([position])
    ds.PatientGantryRelationshipCodeSequence = Sequence()


def _set_acquisition(ds: Dataset, header: NMHeader) -> None:
    """Set timing, isotope and radiopharmaceutical (shared by NM and SC files)."""
    if header.acquisition_duration_s is not None:
        ds.ActualFrameDuration = round(header.acquisition_duration_s * 1000.0)
    if header.scan_velocity_cm_min is not None:
        # DICOM ScanVelocity is in mm/s: 1 cm/min = 10 mm / 60 s.
        ds.ScanVelocity = f"{header.scan_velocity_cm_min / 6.0:.6g}"
    window_range = Dataset()
    window_range.EnergyWindowLowerLimit = _ENERGY_WINDOW_KEV[0]
    window_range.EnergyWindowUpperLimit = _ENERGY_WINDOW_KEV[1]
    window = Dataset()
    window.EnergyWindowRangeSequence = Sequence([window_range])
    window.EnergyWindowName = "Tc99m 140 keV"
    ds.EnergyWindowInformationSequence = Sequence([window])
    radiopharmaceutical = Dataset()
    radiopharmaceutical.RadionuclideCodeSequence = Sequence([_TC99M.to_dataset()])
    if header.tracer is not None:
        radiopharmaceutical.Radiopharmaceutical = f"Tc99m {header.tracer}"
        code = _TRACER_CODES.get(header.tracer.upper())
        if code is not None:
            radiopharmaceutical.RadiopharmaceuticalCodeSequence = Sequence(
                [code.to_dataset()]
            )
    ds.RadiopharmaceuticalInformationSequence = Sequence([radiopharmaceutical])


def _age_string(years: float | None) -> str:
    """DICOM AS: three digits and a unit (D, W, M, Y); empty when unknown."""
    if years is None:
        return ""
    if years < 0:
        raise ValueError(f"patient_age_years must be >= 0, got {years}")
    if years >= 1:
        return f"{min(int(years), 999):03d}Y"
    months = int(years * 12)
    if months >= 1:
        return f"{months:03d}M"
    return f"{int(years * 365.25):03d}D"


def _encode(ds: Dataset, pixels: np.ndarray, transfer_syntax: str) -> Dataset:
    if transfer_syntax == pydicom.uid.ExplicitVRLittleEndian:
        ds.PixelData = pixels.tobytes()
        ds["PixelData"].VR = "OW"
    else:
        ds.compress(transfer_syntax, pixels, generate_instance_uid=False)
    return ds


def _save(ds: Dataset, path: str | Path) -> Path:
    target = Path(path)
    ds.save_as(target, enforce_file_format=True)
    return target
