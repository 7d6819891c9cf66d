r"""Enhance a fast whole-body scan stored as DICOM and write the result as DICOM.

This is the library behind ``fedbone enhance``, the tool a site runs on its
own fast (low-count) acquisitions with an enhancer it trained in the study
(``<work_dir>/enhance/<run>/<method>.enhancer.npz``). Per view, as
preprocessing does: orient to the anterior convention, rebin to the
enhancer's pixel spacing keeping the counts, pad with zeros to multiples of
4, enhance with :func:`fedbone.enhance.inference.enhance_counts` and crop the
padding away. The views are written as a new NM series of the same patient
and study (:func:`fedbone.data.dicom_write.nm_whole_body_dataset`), marked
``DERIVED\SECONDARY`` and naming the method, the enhancer's sha256 and the
speed, with the source image referenced
(:mod:`fedbone.enhance.derived_series`).

Refused, each with a :class:`~fedbone.enhance.errors.EnhanceError` listing
every problem: a speed the enhancer was not trained near
(``speed-out-of-range``), a scan whose pixels are more than 10 % coarser than
the enhancer's (``scan-too-coarse``: it cannot invent resolution), an output
that would replace the source (``output-is-input``). Unreadable files raise
the reader's :class:`~fedbone.errors.DicomError`. A folder is enhanced file
by file: a refused or broken file is listed with its problems and the others
are written.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from fedbone.data.dicom_read import read_nm_scan
from fedbone.data.dicom_write import NMHeader, nm_whole_body_dataset
from fedbone.data.preprocess import orient_to_anterior, resample_preserving_counts
from fedbone.data.scan import NMScan, ScanView, View
from fedbone.data.view_identification import PLANAR_PATIENT_ORIENTATION
from fedbone.enhance.derived_series import (
    MAX_STORED_COUNT,
    Derivation,
    mark_as_derived,
    save_atomically,
)
from fedbone.enhance.errors import EnhanceError
from fedbone.enhance.inference import enhance_counts, speed_problems
from fedbone.enhance.model_file import EnhancerModel
from fedbone.errors import Problem, ProblemsError

__all__ = [
    "COARSE_SPACING_TOLERANCE",
    "EnhancedScan",
    "FolderEnhancement",
    "RefusedFile",
    "dicom_files",
    "enhance_dicom",
    "enhance_dicom_folder",
]

logger = logging.getLogger(__name__)

#: A scan's pixels may be this much coarser than the enhancer's, no more.
COARSE_SPACING_TOLERANCE = 1.10
_MULTIPLE = 4
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class EnhancedScan:
    """One enhanced scan as written.

    Attributes
    ----------
    source, output
        The fast scan read and the DICOM file written.
    views
        The views enhanced, in the file's frame order.
    speed
        The standard-over-fast count ratio applied.
    spacing_mm
        Pixel spacing of the written views (the enhancer's).
    fast_counts, standard_counts
        Total counts of all views, read and written.
    clipped_pixels
        Pixels whose enhanced counts exceeded 65535 and were clipped there.
    series_instance_uid
        The new series the file belongs to.
    """

    source: Path
    output: Path
    views: tuple[View, ...]
    speed: float
    spacing_mm: float
    fast_counts: float
    standard_counts: float
    clipped_pixels: int
    series_instance_uid: str


@dataclass(frozen=True)
class RefusedFile:
    """A file of a folder that was not enhanced, and why."""

    path: Path
    problems: tuple[Problem, ...]


@dataclass(frozen=True)
class FolderEnhancement:
    """What :func:`enhance_dicom_folder` wrote and refused."""

    written: tuple[EnhancedScan, ...]
    refused: tuple[RefusedFile, ...]


def _setting_problems(
    model: EnhancerModel, speed: float, model_sha256: str
) -> list[Problem]:
    """Problems with the settings alone, found before any file is read.

    The speed bound is the one :func:`enhance_counts` enforces (it checks
    again), checked here so a folder is refused once, not file by file.
    """
    problems = speed_problems(model, speed)
    if not _SHA256.match(model_sha256):
        problems.append(
            Problem(
                "bad-sha256",
                f"got {model_sha256!r}; give the enhancer file's sha256 as 64 "
                "lower-case hex digits",
                "model_sha256",
            )
        )
    return problems


def _spacing_problems(scan: NMScan, model: EnhancerModel) -> list[Problem]:
    problems = []
    limit = model.spacing_mm * COARSE_SPACING_TOLERANCE
    for view, scan_view in scan.views.items():
        coarsest = max(scan_view.spacing_mm)
        if coarsest > limit:
            rows, columns = scan_view.spacing_mm
            problems.append(
                Problem(
                    "scan-too-coarse",
                    f"pixels of {rows:g} x {columns:g} mm are more than 10% "
                    f"coarser than the enhancer's {model.spacing_mm:g} mm: an "
                    "enhancer cannot add resolution the camera did not record; "
                    "use an enhancer trained on pixels of at least "
                    f"{coarsest / COARSE_SPACING_TOLERANCE:.3g} mm (a study "
                    "whose preprocessing spacing_mm is that or coarser)",
                    view.value,
                )
            )
    return problems


def _enhance_view(
    model: EnhancerModel, scan_view: ScanView, speed: float, source: Path
) -> np.ndarray:
    """Return the view's standard counts on the enhancer's pixels, as stored.

    The view is enhanced head up, patient's right on the image left (the
    convention the enhancer was trained in) and turned back to the
    orientation fedbone's writer declares for it; the flips are their own
    inverse.
    """
    oriented = orient_to_anterior(scan_view)
    fast = resample_preserving_counts(oriented, scan_view.spacing_mm, model.spacing_mm)
    rows, columns = fast.shape
    padded = np.zeros(
        (-(-rows // _MULTIPLE) * _MULTIPLE, -(-columns // _MULTIPLE) * _MULTIPLE),
        dtype=np.float32,
    )
    padded[:rows, :columns] = fast
    try:
        standard = enhance_counts(model, padded, speed)[:rows, :columns]
    except EnhanceError as error:
        raise EnhanceError(
            source,
            [Problem(p.code, p.message, scan_view.view.value) for p in error.problems],
        ) from error
    as_written = ScanView(
        view=scan_view.view,
        counts=standard,
        spacing_mm=(model.spacing_mm, model.spacing_mm),
        patient_orientation=PLANAR_PATIENT_ORIENTATION[scan_view.view],
    )
    return np.ascontiguousarray(orient_to_anterior(as_written))


def _header(scan: NMScan, method: str) -> NMHeader:
    meta = scan.metadata
    return NMHeader(
        patient_id=meta.patient_id,
        patient_age_years=meta.age_years,
        patient_sex=meta.sex,
        study_date=meta.study_date,
        manufacturer=meta.manufacturer or "",
        model=meta.model or "",
        tracer=meta.tracer,
        acquisition_duration_s=meta.acquisition_duration_s,
        scan_velocity_cm_min=meta.scan_velocity_cm_min,
        series_description=f"fedbone enhanced ({method})",
    )


def enhance_dicom(
    source: Path,
    model: EnhancerModel,
    *,
    speed: float,
    model_sha256: str,
    out: Path,
    default_view: View | None = None,
) -> EnhancedScan:
    """Enhance one fast whole-body NM scan and write it as a new DICOM series.

    Parameters
    ----------
    source
        The fast scan (any file :func:`fedbone.data.dicom_read.read_nm_scan`
        reads).
    model
        A loaded enhancer (:func:`fedbone.enhance.model_file.load_enhancer`).
    speed
        Standard counts over fast counts of this acquisition (2 for a scan
        acquired twice as fast).
    model_sha256
        The enhancer file's sha256, written into the result.
    out
        The file to write (replaced if present, never the source); folders
        are created.
    default_view
        The site's view for single-view files that name none.

    Returns
    -------
    EnhancedScan
        What was written.

    Raises
    ------
    EnhanceError
        ``speed-out-of-range``, ``bad-sha256``, ``scan-too-coarse`` and
        ``output-is-input``, all listed together; the enhancer's own
        refusals of a view (``empty-image``...).
    DicomError
        When the reader cannot use the file, every problem listed.
    """
    source, out = Path(source), Path(out)
    problems = _setting_problems(model, speed, model_sha256)
    if out.resolve() == source.resolve():
        problems.append(
            Problem(
                "output-is-input",
                f"the output {out} is the scan itself; write the enhanced scan "
                "to another file",
                "out",
            )
        )
    scan = read_nm_scan(source, default_view=default_view)
    problems += _spacing_problems(scan, model)
    EnhanceError.raise_if_any(source, problems)
    standard = {
        view: _enhance_view(model, scan_view, speed, source)
        for view, scan_view in scan.views.items()
    }
    rounded = {view: np.rint(counts) for view, counts in standard.items()}
    clipped = sum(int(np.count_nonzero(c > MAX_STORED_COUNT)) for c in rounded.values())
    stored = {
        view: np.minimum(counts, MAX_STORED_COUNT).astype(np.uint16)
        for view, counts in rounded.items()
    }
    ds = nm_whole_body_dataset(
        stored, (model.spacing_mm, model.spacing_mm), _header(scan, model.spec.method)
    )
    first = next(iter(scan.views.values()))
    derivation = Derivation(
        method=model.spec.method,
        description=model.description,
        model_sha256=model_sha256,
        study=model.study,
        speed=float(speed),
        source_spacing_mm=first.spacing_mm,
        spacing_mm=model.spacing_mm,
        clipped_pixels=clipped,
    )
    mark_as_derived(ds, pydicom.dcmread(source, stop_before_pixels=True), derivation)
    save_atomically(ds, out)
    logger.debug("%s: enhanced with %s -> %s", source, model.spec.method, out)
    return EnhancedScan(
        source=source,
        output=out,
        views=tuple(v for v in (View.ANTERIOR, View.POSTERIOR) if v in stored),
        speed=float(speed),
        spacing_mm=model.spacing_mm,
        fast_counts=sum(v.total_counts for v in scan.views.values()),
        standard_counts=float(sum(c.sum(dtype=np.float64) for c in stored.values())),
        clipped_pixels=clipped,
        series_instance_uid=str(ds.SeriesInstanceUID),
    )


def dicom_files(folder: Path, *, recursive: bool = False) -> list[Path]:
    """Return the ``*.dcm`` files of ``folder`` (and its subfolders), sorted."""
    pattern = "**/*.dcm" if recursive else "*.dcm"
    return sorted(path for path in Path(folder).glob(pattern) if path.is_file())


def _folder_problems(folder: Path, out: Path, files: Iterable[Path]) -> list[Problem]:
    problems = []
    if not folder.is_dir():
        problems.append(
            Problem("missing-folder", "no folder here; check the path", "input")
        )
    elif not list(files):
        problems.append(
            Problem(
                "no-dicom-files",
                "no *.dcm file in this folder; name the files *.dcm or pass "
                "--recursive for subfolders",
                "input",
            )
        )
    if out.resolve() == folder.resolve():
        problems.append(
            Problem(
                "output-is-input",
                "the output folder is the input folder; write the enhanced "
                "scans to another folder so no source file is replaced",
                "out",
            )
        )
    return problems


def enhance_dicom_folder(
    folder: Path,
    model: EnhancerModel,
    *,
    speed: float,
    model_sha256: str,
    out: Path,
    default_view: View | None = None,
    recursive: bool = False,
    report: Callable[[EnhancedScan | RefusedFile], None] | None = None,
) -> FolderEnhancement:
    """Enhance every ``*.dcm`` of a folder; list the files that cannot be.

    Each file is written to the same relative path under ``out``. A file the
    reader cannot use or that is refused is listed with its problems and the
    others proceed; the sources are never changed.

    Parameters
    ----------
    folder
        The folder of fast scans.
    model
        A loaded enhancer.
    speed
        Standard counts over fast counts of these acquisitions.
    model_sha256
        The enhancer file's sha256, written into every result.
    out
        The output folder (created; not the input folder). With
        ``recursive``, files already under ``out`` are not read.
    default_view
        The site's view for single-view files that name none.
    recursive
        Also read the subfolders.
    report
        Called with each result as it is made (for progress output).

    Returns
    -------
    FolderEnhancement
        The files written and the files refused.

    Raises
    ------
    EnhanceError
        Before any file is read, for settings every file would be refused
        for (``speed-out-of-range``, ``bad-sha256``), a missing or empty
        folder or an output folder that is the input folder.
    """
    folder, out = Path(folder), Path(out)
    files = dicom_files(folder, recursive=recursive) if folder.is_dir() else []
    output_root = out.resolve()
    if output_root != folder.resolve():
        # a re-run with --recursive must not enhance its own earlier results
        files = [p for p in files if output_root not in p.resolve().parents]
    problems = _setting_problems(model, speed, model_sha256)
    problems += _folder_problems(folder, out, files)
    EnhanceError.raise_if_any(folder, problems)
    written: list[EnhancedScan] = []
    refused: list[RefusedFile] = []
    for path in files:
        result: EnhancedScan | RefusedFile
        try:
            result = enhance_dicom(
                path,
                model,
                speed=speed,
                model_sha256=model_sha256,
                out=out / path.relative_to(folder),
                default_view=default_view,
            )
            written.append(result)
        except ProblemsError as error:
            result = RefusedFile(path, error.problems)
            refused.append(result)
            logger.debug("%s: refused (%s)", path, ", ".join(error.codes))
        if report is not None:
            report(result)
    return FolderEnhancement(written=tuple(written), refused=tuple(refused))
