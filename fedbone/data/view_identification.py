r"""Which planar view (anterior / posterior) a DICOM frame holds, and how it lies.

Three kinds of evidence, strongest first:

1. **View codes** -- ``ViewCodeSequence`` items (in an NM
   ``DetectorInformationSequence`` or at the top level) carrying DICOM CID 26
   "Nuclear Medicine Projections" codes. Current files use SNOMED CT
   (``SCT``), older files the retired SNOMED RT (``SRT``) codes; items with an
   unknown code are judged by their code meaning (``"Anterior projection"``).
2. **Vendor hints** -- free text that scanners write: ``ImageID``,
   ``SeriesDescription``, ``ImageComments`` and private text elements
   (``"WB ANT"``, ``"POST_WB"``, German ``"ventral"`` / ``"dorsal"``). Matched
   as whole words, so ``"POSTOP"`` or ``"post injection"`` are not views.
3. The site's configured default view (applied by the reader, not here).

Orientation: a planar whole-body frame lies in the coronal plane, head at the
top. fedbone writes the anterior frame as seen from the front (columns run to
the patient's left, rows to the feet: PatientOrientation ``L\F``) and the
posterior frame as the camera behind the patient sees it, *not* mirrored
(``R\F``). Because DICOM has one ``PatientOrientation`` per instance, the
per-detector orientation of a multi-frame file is stored as
``ImageOrientationPatient`` inside each ``DetectorInformationSequence`` item.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from fedbone.data.dicom_values import as_list
from fedbone.data.scan import View, ViewSource
from fedbone.errors import Problem

__all__ = [
    "PLANAR_ORIENTATION_COSINES",
    "PLANAR_PATIENT_ORIENTATION",
    "VIEW_CODES",
    "CodedConcept",
    "FrameView",
    "VendorHint",
    "find_vendor_hints",
    "identify_frame_views",
    "orientation_from_cosines",
    "view_from_code_sequence",
    "view_from_text",
]


@dataclass(frozen=True)
class CodedConcept:
    """A DICOM code triplet (value, scheme designator, meaning)."""

    value: str
    scheme: str
    meaning: str

    def to_dataset(self) -> Dataset:
        """Return a code sequence item holding this concept."""
        item = Dataset()
        item.CodeValue = self.value
        item.CodingSchemeDesignator = self.scheme
        item.CodeMeaning = self.meaning
        return item


# What fedbone writes (DICOM PS3.16 CID 26; values as in pydicom.sr.codedict).
VIEW_CODES: dict[View, CodedConcept] = {
    View.ANTERIOR: CodedConcept("399321004", "SCT", "Anterior projection"),
    View.POSTERIOR: CodedConcept("399001007", "SCT", "Posterior projection"),
}

# What fedbone recognises: the SCT codes and their retired SNOMED RT twins.
_VIEW_BY_CODE_VALUE: dict[str, View] = {
    "399321004": View.ANTERIOR,
    "G-5215": View.ANTERIOR,
    "399001007": View.POSTERIOR,
    "G-5216": View.POSTERIOR,
}

# Row and column direction cosines (LPS patient axes) of a planar frame, per
# view, in fedbone's convention (see the module docstring).
PLANAR_ORIENTATION_COSINES: dict[View, tuple[float, ...]] = {
    View.ANTERIOR: (1.0, 0.0, 0.0, 0.0, 0.0, -1.0),
    View.POSTERIOR: (-1.0, 0.0, 0.0, 0.0, 0.0, -1.0),
}
# The PatientOrientation (row direction, column direction) those cosines give.
PLANAR_PATIENT_ORIENTATION: dict[View, tuple[str, str]] = {
    View.ANTERIOR: ("L", "F"),
    View.POSTERIOR: ("R", "F"),
}
# (letter for +axis, letter for -axis) of the DICOM LPS patient axes.
_AXIS_LETTERS: tuple[tuple[str, str], ...] = (("L", "R"), ("P", "A"), ("H", "F"))

_ANTERIOR_WORDS = frozenset({"ANT", "ANTERIOR", "VENTRAL"})
_POSTERIOR_WORDS = frozenset({"POST", "POSTERIOR", "DORSAL"})
# "POST" followed by one of these means "after", not a view ("post injection").
_POST_AS_AFTER = frozenset(
    {"INJ", "INJECTION", "OP", "OPERATIVE", "THERAPY", "TREATMENT", "TX", "VOID"}
)
# Words that make a projection anything but a plain anterior/posterior one.
_NOT_PLANAR_AP = frozenset({"OBLIQUE", "LATERAL", "LAO", "RAO", "LPO", "RPO"})
_WORD = re.compile(r"[A-Z0-9]+")
_TEXT_VRS = frozenset({"LO", "SH", "LT", "ST", "UT", "CS"})
_PEOPLE_WORDS = ("patient", "physician", "operator")


@dataclass(frozen=True)
class VendorHint:
    """A view found in header free text.

    Parameters
    ----------
    view
        The view the text names.
    where
        The DICOM keyword (or private tag) the text came from.
    text
        The text itself, for the audit trail and error messages.
    """

    view: View
    where: str
    text: str


@dataclass(frozen=True)
class FrameView:
    """What the header says about one frame.

    Parameters
    ----------
    view
        The view, ``None`` when it could not be told.
    source
        How the view was identified.
    orientation
        PatientOrientation ``(row direction, column direction)``, or ``None``.
    """

    view: View | None
    source: ViewSource
    orientation: tuple[str, str] | None


def identify_frame_views(
    ds: Dataset, *, default_view: View | None = None
) -> tuple[list[FrameView], list[Problem]]:
    """Name the view of every frame, listing ``unknown-view``/``duplicate-view``.

    Frames map to ``DetectorInformationSequence`` items through
    ``DetectorVector`` (or in order when it is missing); an item's
    ``ViewCodeSequence`` names the view and its ``ImageOrientationPatient``
    the orientation. A single frame without a code falls back to a top-level
    ``ViewCodeSequence``, then vendor hints, then ``default_view``. In a
    two-frame file where only one frame is coded, the other is the opposite
    view: a whole-body sweep's two frames come from two opposed heads.

    Parameters
    ----------
    ds
        The dataset (planar; tomographic data is rejected before this).
    default_view
        The site's view for single-view files that name none.

    Returns
    -------
    tuple
        One :class:`FrameView` per frame, and the problems found.
    """
    count = _frame_count(ds)
    detectors = list(ds.get("DetectorInformationSequence", None) or [])
    numbers = [int(value) for value in as_list(ds.get("DetectorVector"))]
    if len(numbers) != count:
        numbers = list(range(1, count + 1))
    views: list[View | None] = []
    sources = [ViewSource.VIEW_CODE] * count
    orientations = []
    for number in numbers:
        item = detectors[number - 1] if 0 < number <= len(detectors) else Dataset()
        codes = item.get("ViewCodeSequence", None) or []
        cosines = as_list(item.get("ImageOrientationPatient"))
        if count == 1:
            codes = codes or ds.get("ViewCodeSequence", None) or []
            cosines = cosines or as_list(ds.get("ImageOrientationPatient"))
        views.append(view_from_code_sequence(codes))
        orientation = orientation_from_cosines(_floats(cosines))
        if orientation is None and count == 1:
            orientation = _patient_orientation(ds)
        orientations.append(orientation)

    problems: list[Problem] = []
    if count == 1 and views[0] is None:
        views[0], sources[0], problem = _fallback_view(ds, default_view)
        problems += [problem] if problem is not None else []
    elif count == 2 and views.count(None) == 1:
        missing = views.index(None)
        known = views[1 - missing]
        views[missing] = View.POSTERIOR if known is View.ANTERIOR else View.ANTERIOR
        sources[missing] = ViewSource.DETECTOR_VECTOR
    if count > 1:
        problems += [
            Problem(
                "unknown-view",
                f"frame {index + 1} (detector {number}) has no view code; a "
                "multi-frame file needs a ViewCodeSequence per detector: fix the "
                "export, or export each view as its own file",
                "DetectorInformationSequence",
            )
            for index, (view, number) in enumerate(zip(views, numbers, strict=True))
            if view is None
        ]
    for view in sorted({v for v in views if v is not None and views.count(v) > 1}):
        problems.append(
            Problem(
                "duplicate-view",
                f"{views.count(view)} frames are {view.value}; expected one frame "
                "per view: check the detectors' ViewCodeSequence",
                "DetectorInformationSequence",
            )
        )
    frames = [
        FrameView(view, source, orientation)
        for view, source, orientation in zip(views, sources, orientations, strict=True)
    ]
    return frames, problems


def view_from_text(text: str) -> View | None:
    """Return the view named in ``text`` as a whole word, or ``None``.

    ``None`` also when the text names both views (``"ANT/POST"``) or an oblique
    or lateral projection.

    Parameters
    ----------
    text
        Free text such as ``"WB ANT"`` or ``"Posterior projection"``.
    """
    words = _WORD.findall(text.upper())
    if _NOT_PLANAR_AP.intersection(words):
        return None
    found: set[View] = set()
    for index, word in enumerate(words):
        if word in _ANTERIOR_WORDS:
            found.add(View.ANTERIOR)
        elif word in _POSTERIOR_WORDS:
            following = words[index + 1] if index + 1 < len(words) else ""
            if word != "POST" or following not in _POST_AS_AFTER:
                found.add(View.POSTERIOR)
    return found.pop() if len(found) == 1 else None


def view_from_code_sequence(items: Iterable[Dataset]) -> View | None:
    """Return the view coded in a ``ViewCodeSequence``, or ``None``.

    A known code value decides; otherwise the code meaning is read as text.

    Parameters
    ----------
    items
        The sequence items (usually one).
    """
    for item in items:
        value = str(item.get("CodeValue", "") or "").strip()
        if value in _VIEW_BY_CODE_VALUE:
            return _VIEW_BY_CODE_VALUE[value]
        view = view_from_text(str(item.get("CodeMeaning", "") or ""))
        if view is not None:
            return view
    return None


def find_vendor_hints(ds: Dataset) -> list[VendorHint]:
    """Return every view named in the header's free-text fields.

    Looks at ``ImageID``, ``SeriesDescription``, ``ImageComments`` and private
    text elements, skipping private elements that hold people's names (a
    patient called "Post" is not a posterior view).

    Parameters
    ----------
    ds
        The dataset to search.
    """
    hints: list[VendorHint] = []
    for keyword in ("ImageID", "SeriesDescription", "ImageComments"):
        text = _as_text(ds.get(keyword))
        view = view_from_text(text) if text else None
        if view is not None:
            hints.append(VendorHint(view, keyword, text))
    family_names = set(_WORD.findall(str(ds.get("PatientName", "") or "").upper()))
    for element in ds.iterall():
        if not element.tag.is_private or element.tag.is_private_creator:
            continue
        if element.VR not in _TEXT_VRS:
            continue
        description = element.name.lower()
        if any(word in description for word in _PEOPLE_WORDS):
            continue
        text = _as_text(element.value)
        if not text or family_names.intersection(_WORD.findall(text.upper())):
            continue
        view = view_from_text(text)
        if view is not None:
            hints.append(VendorHint(view, f"private {element.tag}", text))
    return hints


def _fallback_view(
    ds: Dataset, default_view: View | None
) -> tuple[View | None, ViewSource, Problem | None]:
    """Vendor hints, then the site default, for a single uncoded frame."""
    hints = find_vendor_hints(ds)
    named = {hint.view for hint in hints}
    if len(named) == 1:
        return hints[0].view, ViewSource.VENDOR_HINT, None
    if named:
        found = "; ".join(f"{hint.where}={hint.text!r}" for hint in hints)
        return (
            None,
            ViewSource.VENDOR_HINT,
            _unknown_view(f"the header names both views ({found})"),
        )
    if default_view is not None:
        return default_view, ViewSource.SITE_DEFAULT, None
    return (
        None,
        ViewSource.SITE_DEFAULT,
        _unknown_view("no view code and no ANT/POST text in the header"),
    )


def _unknown_view(reason: str) -> Problem:
    return Problem(
        "unknown-view",
        f"cannot tell whether the image is anterior or posterior: {reason}; set "
        "default_view in the site config if all such files hold one view",
        "ViewCodeSequence",
    )


def _patient_orientation(ds: Dataset) -> tuple[str, str] | None:
    values = [str(value) for value in as_list(ds.get("PatientOrientation"))]
    return (values[0], values[1]) if len(values) == 2 and all(values) else None


def _frame_count(ds: Dataset) -> int:
    try:
        return max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def _floats(values: list[Any]) -> list[float]:
    """Return the numbers of a DS element; empty when one is malformed."""
    try:
        return [float(value) for value in values]
    except (TypeError, ValueError):
        return []


def orientation_from_cosines(cosines: Sequence[float]) -> tuple[str, str] | None:
    """Turn ``ImageOrientationPatient`` into a PatientOrientation pair.

    Returns ``None`` unless both directions lie along a patient axis (a planar
    whole-body frame always does).

    Parameters
    ----------
    cosines
        Six direction cosines: row direction then column direction (LPS axes).
    """
    if len(cosines) != 6:
        return None
    letters = []
    for vector in (cosines[:3], cosines[3:]):
        values = np.asarray(vector, dtype=float)
        axis = int(np.argmax(np.abs(values)))
        if not np.isfinite(values).all() or abs(values[axis]) < 0.99:
            return None
        plus, minus = _AXIS_LETTERS[axis]
        letters.append(plus if values[axis] > 0 else minus)
    return (letters[0], letters[1])


def _as_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return " ".join(str(v) for v in value)
    return str(value)
