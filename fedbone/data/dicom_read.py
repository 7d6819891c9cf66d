"""Read a whole-body bone scan from a DICOM file and say everything wrong with it.

``read_nm_scan`` turns an NM file -- NM Image Storage (one frame per view) or
a single-view NM / Secondary Capture image, uncompressed or in any lossless
syntax pydicom can decode (JPEG Lossless, JPEG-LS, JPEG 2000, RLE) -- into an
:class:`~fedbone.data.scan.NMScan`. Files that cannot be used raise one
:class:`~fedbone.errors.DicomError` listing *every* problem, each with a
stable code, so a site quarantines a file with its full diagnosis:

``unreadable-file``, ``oversized-file``, ``wrong-modality``,
``no-pixel-data``, ``missing-transfer-syntax``, ``unknown-transfer-syntax``,
``tomographic-data``, ``rgb-screen-capture``, ``unsupported-bit-depth``,
``absurd-image-size``, ``oversized-image``, ``missing-spacing``,
``absurd-spacing``, ``wrong-frame-count``, ``non-finite-pixels``,
``negative-counts``, ``undecodable-pixels``, ``unknown-view``,
``duplicate-view``; ``unexpected-error`` when the reader itself trips (a bug
to report), so that even then the caller gets a typed error, not a traceback.

Bounded inputs. A site reads files it did not write, so nothing in a file may
make the reader allocate without limit. Before anything is decoded:

- a file larger than :data:`MAX_FILE_BYTES` on disk is ``oversized-file``;
- a Deflated Explicit VR Little Endian file (1.2.840.10008.1.2.1.99) is first
  inflated in bounded steps without keeping the output; one that inflates
  beyond :data:`MAX_FILE_BYTES` (a "deflate bomb") is ``oversized-file`` and is
  never handed to pydicom, which would inflate it whole;
- the decoded pixel size the header declares (Rows x Columns x frames x
  samples x BitsAllocated) above :data:`MAX_DECODED_PIXEL_BYTES` is
  ``oversized-image``; Rows or Columns outside :data:`IMAGE_SIDE_RANGE` or
  NumberOfFrames above :data:`MAX_FRAMES` is ``absurd-image-size``;
  BitsAllocated other than 8, 16, 32 (or 64 for double-float pixels) is
  ``unsupported-bit-depth``. Such files are never decoded.

The decoded frames must then match NumberOfFrames (``wrong-frame-count``).

Header values that only describe the patient do not keep a scan out: a
PatientAge outside :data:`AGE_RANGE_YEARS` (``999Y`` is a common placeholder)
is treated as missing and reported as an ``absurd-age`` warning in
``ScanMetadata.warnings``; ``fedbone prepare`` lists such warnings in its
report and ``fedbone inspect`` prints them. The manifest's age, when given,
is used instead.

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
import zlib
from datetime import date
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pydicom
import pydicom.filereader
import pydicom.uid
from pydicom.dataset import Dataset
from pydicom.uid import UID

from fedbone.data.dicom_values import as_list
from fedbone.data.scan import NMScan, ScanMetadata, ScanView, View
from fedbone.data.view_identification import FrameView, identify_frame_views
from fedbone.errors import DicomError, Problem

__all__ = [
    "AGE_RANGE_YEARS",
    "IMAGE_SIDE_RANGE",
    "MAX_DECODED_PIXEL_BYTES",
    "MAX_FILE_BYTES",
    "MAX_FRAMES",
    "SPACING_RANGE_MM",
    "check_nm_dataset",
    "read_nm_scan",
]

logger = logging.getLogger(__name__)

# Gamma-camera whole-body pixels are ~1-5 mm; outside this range the spacing
# is a unit error (cm, um) or a placeholder, not a camera.
SPACING_RANGE_MM = (0.5, 10.0)
# The largest planar whole-body scan is 2 views x 2048 x 1024 x 16 bit = 8 MiB.
# 256 MiB decoded is 32 times that, yet keeps one worker's peak (decoded +
# float32 views + rescale) near 1-2 GiB, so several workers fit a site machine.
MAX_DECODED_PIXEL_BYTES = 256 * 2**20
# On disk, and for a deflated dataset once inflated: the pixels plus a header.
MAX_FILE_BYTES = MAX_DECODED_PIXEL_BYTES + 64 * 2**20
# Rows and Columns: below 16 px a "scan" is a placeholder or icon, above 8192 px
# no gamma camera (whole-body matrices are <= 2048 x 1024).
IMAGE_SIDE_RANGE = (16, 8192)
# A planar scan has one frame per view; SPECT and dynamic series (rejected as
# tomographic) have at most a few hundred. More is a corrupt header.
MAX_FRAMES = 1024
# PatientAge (AS, up to "999Y") in years; outside it the age is treated as
# missing and reported as an ``absurd-age`` warning.
AGE_RANGE_YEARS = (0.0, 130.0)
_BITS_ALLOCATED = {"PixelData": (8, 16, 32), "FloatPixelData": (32,)}
_BITS_ALLOCATED["DoubleFloatPixelData"] = (64,)
# Inflate in steps of at most this many bytes, counting and discarding them.
_INFLATE_STEP = 4 * 2**20
_NOT_DECODED = frozenset(
    {
        "no-pixel-data",
        "missing-transfer-syntax",
        "unknown-transfer-syntax",
        "unsupported-bit-depth",
        "absurd-image-size",
        "oversized-image",
    }
)
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
        was identified, plus the header metadata (with its warnings).

    Raises
    ------
    DicomError
        With every problem found (``error.codes`` lists their codes); also,
        as ``unexpected-error``, for anything else the file makes the reader
        trip on.
    """
    try:
        return _read_nm_scan(path, default_view)
    except DicomError:
        raise
    except Exception as err:  # a typed diagnosis, never a traceback
        logger.debug("%s: reader failed", path, exc_info=True)
        raise DicomError(
            path,
            [
                Problem(
                    "unexpected-error",
                    f"fedbone could not read this file ({type(err).__name__}: "
                    f"{err}); expected a planar NM whole-body scan: check the "
                    "file with `fedbone inspect -vv` and report it",
                )
            ],
        ) from err


def _read_nm_scan(path: str | Path, default_view: View | None) -> NMScan:
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
    size_problem = _check_file_size(Path(path))
    if size_problem is not None:
        return None, [size_problem]
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


def _check_file_size(path: Path) -> Problem | None:
    """Refuse a file too large on disk, or a deflated one that inflates too far.

    Anything unreadable here is left for ``pydicom.dcmread`` to diagnose.
    """
    try:
        size = path.stat().st_size
    except OSError:
        return None
    if size > MAX_FILE_BYTES:
        return _oversized_file(f"the file is {_mib(size)} on disk")
    try:
        meta = pydicom.filereader.read_file_meta_info(path)
    except Exception:  # not DICOM or a bad file meta: dcmread says what
        return None
    syntax = str(meta.get("TransferSyntaxUID", "") or "")
    if syntax != pydicom.uid.DeflatedExplicitVRLittleEndian:
        return None
    with path.open("rb") as fp:
        # Outside the except above on purpose: should pydicom drop this
        # private reader, deflated files fail closed (unexpected-error).
        pydicom.filereader.read_preamble(fp, False)
        pydicom.filereader._read_file_meta_info(fp)
        try:
            inflated = _inflated_size(fp, MAX_FILE_BYTES)
        except zlib.error:  # a corrupt stream: dcmread stops at the same byte
            return None
    if inflated > MAX_FILE_BYTES:
        return _oversized_file(
            f"the deflated dataset inflates to over {_mib(MAX_FILE_BYTES)} "
            "(inflating stopped there)"
        )
    return None


def _inflated_size(fp: BinaryIO, limit: int) -> int:
    """Inflate the rest of ``fp`` (raw deflate) counting bytes, stopping past ``limit``.

    Nothing is kept: memory stays at one step whatever the ratio.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    while not inflater.eof and (chunk := fp.read(_INFLATE_STEP)):
        while chunk and not inflater.eof:
            total += len(inflater.decompress(chunk, _INFLATE_STEP))
            if total > limit:
                return total
            chunk = inflater.unconsumed_tail
    return total


def _oversized_file(detail: str) -> Problem:
    return Problem(
        "oversized-file",
        f"{detail}; a whole-body scan file needs at most "
        f"{_mib(MAX_FILE_BYTES)}, so it was not read, to protect the site's "
        "memory: export the planar whole-body series only, or check the file "
        "is not corrupt (a deflate bomb?)",
    )


def _mib(size: int) -> str:
    return f"{size / 2**20:,.0f} MiB"


def _examine(
    ds: Dataset, default_view: View | None
) -> tuple[list[Problem], list[FrameView], np.ndarray | None]:
    problems = _check_header(ds)
    codes = {problem.code for problem in problems}
    frames: list[FrameView] = []
    planar = not codes & {"tomographic-data", "absurd-image-size", "oversized-image"}
    if planar and _header_int(ds, "NumberOfFrames", 1) <= MAX_FRAMES:
        frames, view_problems = identify_frame_views(ds, default_view=default_view)
        problems += view_problems
    pixels = None
    if not codes & _NOT_DECODED:
        pixels, pixel_problems = _decode(ds)
        problems += pixel_problems
        if pixels is not None and "rgb-screen-capture" not in codes:
            problems += _check_frame_count(ds, pixels)
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
    else:
        problems += _check_transfer_syntax(ds)
        problems += _check_pixel_size(ds)
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


def _check_transfer_syntax(ds: Dataset) -> list[Problem]:
    syntax = _transfer_syntax(ds)
    if not syntax:
        return [
            Problem(
                "missing-transfer-syntax",
                "the file meta has no TransferSyntaxUID, so how the pixel data is "
                "encoded is unknown; expected a DICOM Part 10 file: re-export it "
                "from the archive",
                "TransferSyntaxUID",
            )
        ]
    if not syntax.is_transfer_syntax:
        return [
            Problem(
                "unknown-transfer-syntax",
                f"TransferSyntaxUID {str(syntax)!r} is not a transfer syntax "
                "fedbone knows; expected a standard one (uncompressed, deflate, "
                "RLE, JPEG Lossless, JPEG-LS, JPEG 2000): re-export the file",
                "TransferSyntaxUID",
            )
        ]
    return []


def _check_pixel_size(ds: Dataset) -> list[Problem]:
    """Check the declared image geometry before any pixel is decoded."""
    keyword = next(k for k in _PIXEL_KEYWORDS if k in ds)
    bits = _header_int(ds, "BitsAllocated", 0)
    rows = _header_int(ds, "Rows", 0)
    columns = _header_int(ds, "Columns", 0)
    frames = _header_int(ds, "NumberOfFrames", 1)
    samples = _header_int(ds, "SamplesPerPixel", 1)
    problems = []
    if bits not in _BITS_ALLOCATED[keyword]:
        allowed = " or ".join(map(str, _BITS_ALLOCATED[keyword]))
        problems.append(
            Problem(
                "unsupported-bit-depth",
                f"BitsAllocated is {bits or 'missing'} for {keyword}; expected "
                f"{allowed} bits of counts per pixel (1 bit is a mask or overlay, "
                "not counts): export the original NM acquisition",
                "BitsAllocated",
            )
        )
    low, high = IMAGE_SIDE_RANGE
    if not (low <= rows <= high and low <= columns <= high) or not (
        1 <= frames <= MAX_FRAMES
    ):
        problems.append(
            Problem(
                "absurd-image-size",
                f"{rows} x {columns} pixels in {frames} frame(s); expected "
                f"{low}-{high} rows and columns in 1-{MAX_FRAMES} frames: a "
                "placeholder or a corrupt header, not a whole-body scan",
                "Rows",
            )
        )
    declared = rows * columns * frames * max(samples, 1) * max(bits, 8) // 8
    if declared > MAX_DECODED_PIXEL_BYTES:
        problems.append(
            Problem(
                "oversized-image",
                f"the header declares {_mib(declared)} of decoded pixels "
                f"({rows} x {columns} x {frames} frame(s) x {samples} sample(s) x "
                f"{bits} bits), over the {_mib(MAX_DECODED_PIXEL_BYTES)} a "
                "whole-body scan can need; not decoded: check the header",
                keyword,
            )
        )
    return problems


def _check_frame_count(ds: Dataset, pixels: np.ndarray) -> list[Problem]:
    rows = _header_int(ds, "Rows", 0)
    columns = _header_int(ds, "Columns", 0)
    frames = _header_int(ds, "NumberOfFrames", 1)
    found = int(pixels.size // (rows * columns)) if rows * columns else 0
    if found == frames and pixels.shape[-2:] == (rows, columns):
        return []
    return [
        Problem(
            "wrong-frame-count",
            f"the pixel data holds {found} frame(s) of {rows} x {columns} but "
            f"NumberOfFrames is {frames}; the file is truncated or its header "
            "is wrong: copy it again from the archive or re-export it",
            "NumberOfFrames",
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
        with warnings.catch_warnings():
            # Excess frames are diagnosed below (wrong-frame-count).
            warnings.filterwarnings("ignore", "The number of bytes of pixel data")
            pixels = ds.pixel_array
    except StopIteration:  # the decoder ran out of encapsulated frames
        frames = _header_int(ds, "NumberOfFrames", 1)
        return None, [
            Problem(
                "wrong-frame-count",
                f"the encapsulated pixel data holds fewer frames than "
                f"NumberOfFrames ({frames}); the file is truncated or its header "
                "is wrong: copy it again from the archive or re-export it",
                "NumberOfFrames",
            )
        ]
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
        warnings=_header_warnings(ds),
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
    """Return PatientAge in years; ``None`` when absent, malformed or absurd."""
    match = _AGE.match(text.strip().upper())
    if match is None:
        return None
    years = int(match.group(1)) * _DAYS_PER_UNIT[match.group(2)] / 365.25
    return years if AGE_RANGE_YEARS[0] <= years <= AGE_RANGE_YEARS[1] else None


def _header_warnings(ds: Dataset) -> tuple[Problem, ...]:
    """Header values treated as missing; they do not keep the scan out."""
    text = str(ds.get("PatientAge", "") or "")
    if _AGE.match(text.strip().upper()) and _age_years(text) is None:
        low, high = AGE_RANGE_YEARS
        return (
            Problem(
                "absurd-age",
                f"PatientAge {text!r} is outside {low:g}-{high:g} years (a "
                "placeholder?); the age is treated as missing: give it in the "
                "manifest's age column or fix the header",
                "PatientAge",
            ),
        )
    return ()


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
