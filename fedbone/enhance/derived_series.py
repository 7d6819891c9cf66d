r"""How an enhanced scan presents itself in DICOM: a derived series, same study.

An enhanced scan is filed under the source's patient and study (identity and
demographics copied element by element, character set included, so names in
any alphabet survive) in a new series with new UIDs, marked
``DERIVED\SECONDARY``, and says what made it: the method, the enhancer
file's sha256, the study that trained it, the speed and the rebinning, in
SeriesDescription, DerivationDescription and ImageComments. The source image
is referenced in SourceImageSequence. Counts are stored as uint16; pixels
clipped at :data:`MAX_STORED_COUNT` are counted in the description.
"""

from __future__ import annotations

import copy
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from fedbone.data.view_identification import CodedConcept

__all__ = ["MAX_STORED_COUNT", "Derivation", "mark_as_derived", "save_atomically"]

#: The largest count a uint16 pixel stores; enhanced counts above it are clipped.
MAX_STORED_COUNT = 65535
# DICOM ST (DerivationDescription) and LO (SeriesDescription) length limits.
_MAX_ST = 1024
_MAX_LO = 64
_SOURCE_PURPOSE = CodedConcept(
    "121322", "DCM", "Source image for image processing operation"
)
# Copied from the source so the result files under the same patient and study;
# type 2 elements the writer always sets are emptied when the source lacks them.
_IDENTITY = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "StudyDescription",
    "AccessionNumber",
    "ReferringPhysicianName",
    "InstitutionName",
    "FrameOfReferenceUID",
)
_TYPE_2 = frozenset(
    {
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "PatientAge",
        "StudyDate",
        "StudyTime",
        "StudyID",
        "AccessionNumber",
        "ReferringPhysicianName",
    }
)
_WRITER_ONLY = frozenset({"InstitutionName"})


@dataclass(frozen=True)
class Derivation:
    """What made an enhanced scan.

    Attributes
    ----------
    method
        The enhancer's method (``rrdbnet``...).
    description
        The method in words (may be empty).
    model_sha256
        The enhancer file's hex sha256.
    study
        The study that trained the enhancer.
    speed
        Standard counts over fast counts applied.
    source_spacing_mm
        ``(row, column)`` pixel spacing of the fast scan.
    spacing_mm
        Pixel spacing of the enhanced scan (the enhancer's).
    clipped_pixels
        Pixels clipped at :data:`MAX_STORED_COUNT`.
    """

    method: str
    description: str
    model_sha256: str
    study: str
    speed: float
    source_spacing_mm: tuple[float, float]
    spacing_mm: float
    clipped_pixels: int

    def derivation_description(self) -> str:
        """Return the DerivationDescription (at most 1024 characters)."""
        what = self.method
        if self.description:
            what += f": {self.description}"
        rows, columns = self.source_spacing_mm
        text = (
            f"fedbone fast-scan enhancement ({what}); enhancer sha256 "
            f"{self.model_sha256}, trained in study {self.study!r}; fast counts "
            f"x {self.speed:g} (speed {self.speed:g}x) enhanced to a standard "
            f"acquisition; pixels rebinned from {rows:g} x {columns:g} mm to "
            f"{self.spacing_mm:g} mm keeping the counts; counts rounded to "
            "whole numbers"
        )
        return (text + self._clipping("; "))[:_MAX_ST]

    def image_comments(self) -> str:
        """Return the ImageComments: a warning that the image is not acquired."""
        return (
            f"Not an acquired image: fedbone {self.method} enhancement of a "
            f"{self.speed:g}x fast scan, enhancer sha256 {self.model_sha256}"
            + self._clipping(", ")
        )

    def _clipping(self, separator: str) -> str:
        if not self.clipped_pixels:
            return ""
        return f"{separator}{self.clipped_pixels} pixels clipped at {MAX_STORED_COUNT}"


def _image_type(source: Dataset) -> list[str]:
    values = [str(value).upper() for value in source.get("ImageType", []) or []]
    kept = values[2:] if len(values) >= 4 else ["WHOLE BODY", "EMISSION"]
    return ["DERIVED", "SECONDARY", *kept]


def _source_reference(source: Dataset) -> Sequence | None:
    sop_class = str(source.get("SOPClassUID", "") or "")
    sop_instance = str(source.get("SOPInstanceUID", "") or "")
    if not (sop_class and sop_instance):
        return None
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    item.PurposeOfReferenceCodeSequence = Sequence([_SOURCE_PURPOSE.to_dataset()])
    return Sequence([item])


def mark_as_derived(ds: Dataset, source: Dataset, derivation: Derivation) -> None:
    """File ``ds`` under ``source``'s patient and study as a derived image.

    ``ds`` keeps its own series and SOP instance UIDs (new ones, as fedbone's
    writer makes them).

    Parameters
    ----------
    ds
        The enhanced scan's dataset, changed in place.
    source
        The fast scan's dataset (its header is enough).
    derivation
        What made the enhanced scan.
    """
    for keyword in _IDENTITY:
        if keyword in source:
            ds[keyword] = copy.deepcopy(source[keyword])
        elif keyword in _TYPE_2:
            setattr(ds, keyword, "")
        elif keyword in _WRITER_ONLY and keyword in ds:
            del ds[keyword]
    ds.ImageType = _image_type(source)
    ds.SeriesDescription = (
        f"fedbone enhanced ({derivation.method}, {derivation.speed:g}x -> standard)"
    )[:_MAX_LO]
    ds.DerivationDescription = derivation.derivation_description()
    ds.ImageComments = derivation.image_comments()
    reference = _source_reference(source)
    if reference is not None:
        ds.SourceImageSequence = reference


def save_atomically(ds: Dataset, path: Path) -> None:
    """Write ``ds`` as a DICOM file: ``path`` is either the whole file or untouched.

    Parameters
    ----------
    ds
        A dataset with its file meta.
    path
        The file to write (replaced if present); folders are created.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".partial")
    os.close(handle)
    try:
        ds.save_as(temporary, enforce_file_format=True)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
