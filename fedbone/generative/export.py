r"""Write released synthetic images as files no one can mistake for a patient.

A synthetic image that leaves fedbone (for a reader study, a collaborator, a
PACS demo) must say what it is in every place a viewer or archive looks:

* **DICOM**: an NM Secondary Capture with ConversionType ``SYN`` (DICOM's
  "synthetic image"), ImageType ``DERIVED\SECONDARY``, SeriesDescription
  ``SYNTHETIC - fedbone conditional GAN - not a patient``, PatientName
  ``SYNTHETIC^IMAGE`` and a PatientID derived from the UID seed -- no birth
  date, sex or age. Labels and provenance (site, round, generator checkpoint
  hash...) are in ImageComments and DerivationDescription. Pixels are uint16
  counts, ``round(image * 65535)``.
* **PNG**: 16-bit greyscale with the same statement in a ``Description`` text
  chunk.

Files written here read back through :func:`fedbone.data.dicom_read.read_nm_scan`
as an anterior view, so synthetic images can be fed to the same pipeline.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pydicom.uid
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from fedbone.data.dicom_write import NMHeader, SingleViewStorage, single_view_dataset
from fedbone.data.scan import View

__all__ = [
    "SYNTHETIC_DESCRIPTION",
    "SYNTHETIC_PATIENT_NAME",
    "write_synthetic_dicom",
    "write_synthetic_png",
]

SYNTHETIC_DESCRIPTION = "SYNTHETIC - fedbone conditional GAN - not a patient"
SYNTHETIC_PATIENT_NAME = "SYNTHETIC^IMAGE"
_FULL_SCALE = 65535
_MAX_DERIVATION_CHARS = 1024  # DerivationDescription is ST


def write_synthetic_png(image: np.ndarray, path: str | Path) -> Path:
    """Write a synthetic image as a 16-bit greyscale PNG marked synthetic.

    Parameters
    ----------
    image
        2-D image in [0, 1].
    path
        Output file; parent folders must exist.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    ValueError
        For an image that is not 2-D, not finite, or outside [0, 1].
    """
    counts = _to_counts(image)
    info = PngInfo()
    info.add_text("Description", SYNTHETIC_DESCRIPTION)
    info.add_text("Software", "fedbone")
    target = Path(path)
    Image.fromarray(counts).save(target, format="PNG", pnginfo=info)
    return target


def write_synthetic_dicom(
    image: np.ndarray,
    path: str | Path,
    *,
    label_bm: int | None,
    label_ca: int | None,
    provenance: Mapping[str, str],
    spacing_mm: float,
    uid_seed: str | None = None,
) -> Path:
    """Write a synthetic image as an NM Secondary Capture marked synthetic.

    Parameters
    ----------
    image
        2-D anterior-view image in [0, 1].
    path
        Output file; parent folders must exist.
    label_bm, label_ca
        The conditioning labels (0 or 1; ``None`` when not conditioned on).
    provenance
        Where the image came from, e.g. ``{"site": "B", "round": "3",
        "generator-sha256": "..."}``; written as ``key=value`` pairs.
    spacing_mm
        Square pixel spacing of the canvas, in millimetres.
    uid_seed
        When given, every UID and the PatientID derive from it (the same seed
        writes the same file); otherwise random UIDs.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    ValueError
        For a bad image, a label other than 0/1/None, a non-positive spacing
        or provenance longer than DICOM's 1,024-character DerivationDescription.
    """
    counts = _to_counts(image)
    problems = [
        f"{name} is {value!r}, expected 0, 1 or None"
        for name, value in (("label_bm", label_bm), ("label_ca", label_ca))
        if value not in (0, 1, None)
    ]
    if not spacing_mm > 0:
        problems.append(f"spacing_mm is {spacing_mm}, expected a positive size")
    description = _describe(label_bm, label_ca, provenance)
    if len(description) > _MAX_DERIVATION_CHARS:
        problems.append(
            f"labels and provenance take {len(description)} characters, more than "
            f"the {_MAX_DERIVATION_CHARS} DerivationDescription holds; shorten them"
        )
    if problems:
        raise ValueError("cannot write synthetic DICOM: " + "; ".join(problems))

    header = NMHeader(
        patient_id="",
        manufacturer="fedbone",
        model="conditional GAN",
        series_description=SYNTHETIC_DESCRIPTION,
        uid_seed=uid_seed,
    )
    ds = single_view_dataset(
        counts,
        (spacing_mm, spacing_mm),
        header,
        view=View.ANTERIOR,
        storage=SingleViewStorage.SECONDARY_CAPTURE,
        transfer_syntax=pydicom.uid.ExplicitVRLittleEndian,
    )
    identity_source = uid_seed if uid_seed is not None else str(ds.SOPInstanceUID)
    ds.PatientName = SYNTHETIC_PATIENT_NAME
    ds.PatientID = "SYN-" + hashlib.sha256(identity_source.encode()).hexdigest()[:12]
    # Type 2 in the Patient module: present, deliberately empty.
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    del ds.PatientAge
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "synthetic image: no patient was scanned"
    ds.ConversionType = "SYN"
    ds.BurnedInAnnotation = "NO"
    ds.RecognizableVisualFeatures = "NO"
    ds.ContentLabel = "SYNTHETIC"
    ds.ContentDescription = SYNTHETIC_DESCRIPTION
    ds.ImageComments = f"{SYNTHETIC_DESCRIPTION}; {description}"
    ds.DerivationDescription = description
    target = Path(path)
    ds.save_as(target, enforce_file_format=True)
    return target


def _describe(
    label_bm: int | None, label_ca: int | None, provenance: Mapping[str, str]
) -> str:
    labels = {"label-bm": label_bm, "label-ca": label_ca}
    pairs = [
        f"{key}={'none' if value is None else value}" for key, value in labels.items()
    ]
    pairs += [f"{key}={value}" for key, value in provenance.items()]
    return "; ".join(pairs)


def _to_counts(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"image must be 2-D (rows, columns), got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("image holds NaN or infinite values; expected [0, 1]")
    if array.size and (array.min() < 0.0 or array.max() > 1.0):
        raise ValueError(
            f"image spans {array.min():.4g}..{array.max():.4g}, expected [0, 1]: "
            "clip the generator output first"
        )
    return np.round(array * _FULL_SCALE).astype(np.uint16)
