"""A trained enhancer in one file: weights and everything needed to use them.

The file is a single ``.npz`` read with ``allow_pickle=False`` (so a swapped
file cannot run code): the enhancer's arrays under ``weights.<name>`` and one
JSON string, ``metadata``, holding the spec, the count levels and speeds it
was trained for, the canvas geometry (pixel spacing, size), the intensity
percentile of :mod:`fedbone.enhance.scaling`, the study and a description of
the method. Its sha256, returned by :func:`save_enhancer`, is what a release
names; :func:`load_enhancer` checks it before reading.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedbone.enhance.errors import EnhanceError
from fedbone.errors import Problem
from fedbone.models.enhancers import EnhancerSpec, build_enhancer
from fedbone.models.errors import ModelError
from fedbone.models.parameters import load_arrays
from fedbone.models.weights import file_sha256

__all__ = ["FORMAT", "EnhancerModel", "load_enhancer", "save_enhancer"]

#: The ``format`` field of the metadata; bump ``_VERSION`` on layout changes.
FORMAT = "fedbone-enhancer"
_VERSION = 1
_METADATA = "metadata"
_WEIGHTS = "weights."
_FIELDS = (
    "spec",
    "levels",
    "speeds",
    "spacing-mm",
    "canvas",
    "clip-percentile",
    "study",
    "description",
    "arrays",
)


@dataclass(frozen=True, eq=False)
class EnhancerModel:
    """A trained enhancer and the conditions it is valid for.

    Parameters
    ----------
    spec
        Method and size of the network.
    arrays
        The enhancer's own state arrays (no discriminator, no ``generator.``
        prefix: :func:`fedbone.models.enhancers.generator_arrays` makes them
        from a federated GAN's arrays).
    levels
        The count levels it was trained on (``"2x"``, ``"300k"``, ``"2x-real"``).
    speeds
        Their standard-over-fast count ratios; they bound the speeds
        :func:`fedbone.enhance.inference.enhance_counts` accepts.
    spacing_mm
        Pixel spacing of the canvas it was trained on.
    canvas
        ``(height, width)`` of that canvas (multiples of 4).
    clip_percentile
        Percentile of the intensity level (:mod:`fedbone.enhance.scaling`).
    study
        The study that trained it.
    description
        What the method is, in words, for reports and release notes.

    Raises
    ------
    EnhanceError
        Listing every field out of range.
    """

    spec: EnhancerSpec
    arrays: dict[str, np.ndarray]
    levels: tuple[str, ...]
    speeds: tuple[float, ...]
    spacing_mm: float
    canvas: tuple[int, int]
    clip_percentile: float
    study: str
    description: str = ""

    def __post_init__(self) -> None:
        problems = []
        if not self.levels:
            problems.append(Problem("no-levels", "name the count levels", "levels"))
        if not self.speeds or not all(math.isfinite(s) and s > 0 for s in self.speeds):
            problems.append(
                Problem(
                    "bad-speeds",
                    f"got {self.speeds!r}, need at least one finite speed > 0",
                    "speeds",
                )
            )
        if not (math.isfinite(self.spacing_mm) and self.spacing_mm > 0):
            problems.append(
                Problem(
                    "bad-spacing", f"got {self.spacing_mm!r}, need > 0", "spacing_mm"
                )
            )
        if len(self.canvas) != 2 or any(side < 4 or side % 4 for side in self.canvas):
            problems.append(
                Problem(
                    "bad-canvas",
                    f"got {self.canvas!r}, need (height, width), multiples of 4",
                    "canvas",
                )
            )
        if not 0 < self.clip_percentile <= 100:
            problems.append(
                Problem(
                    "bad-percentile",
                    f"got {self.clip_percentile!r}, need (0, 100]",
                    "clip_percentile",
                )
            )
        EnhanceError.raise_if_any("enhancer model", problems)


def _fit_problems(spec: EnhancerSpec, arrays: dict[str, np.ndarray]) -> list[Problem]:
    try:
        load_arrays(build_enhancer(spec), arrays)
    except ModelError as error:
        return list(error.problems)
    return []


def save_enhancer(model: EnhancerModel, path: Path) -> str:
    """Write ``model`` to one ``.npz`` file (atomically) and return its sha256.

    Parameters
    ----------
    model
        The enhancer; its arrays must fit its spec.
    path
        The file to write (replaced if present).

    Returns
    -------
    str
        Hex sha256 of the written file.

    Raises
    ------
    EnhanceError
        When the arrays do not fit the spec; nothing is written then.
    """
    arrays = {key: np.asarray(value) for key, value in model.arrays.items()}
    EnhanceError.raise_if_any("enhancer arrays", _fit_problems(model.spec, arrays))
    metadata = {
        "format": FORMAT,
        "version": _VERSION,
        "spec": model.spec.to_dict(),
        "levels": list(model.levels),
        "speeds": [float(speed) for speed in model.speeds],
        "spacing-mm": float(model.spacing_mm),
        "canvas": [int(side) for side in model.canvas],
        "clip-percentile": float(model.clip_percentile),
        "study": model.study,
        "description": model.description,
        "arrays": sorted(arrays),
    }
    entries = {_WEIGHTS + key: value for key, value in arrays.items()}
    entries[_METADATA] = np.array([json.dumps(metadata, sort_keys=True)])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, **entries)  # type: ignore[arg-type]
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return file_sha256(path)


def _read(path: Path) -> tuple[dict[str, Any] | None, dict[str, np.ndarray]]:
    """Return the parsed metadata (None if absent or unreadable) and arrays."""
    try:
        with np.load(path, allow_pickle=False) as data:
            entries = {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise EnhanceError(
            path,
            [
                Problem(
                    "not-an-enhancer-file",
                    f"cannot read it as a numpy .npz without pickles ({error}); "
                    "use a file written by save_enhancer",
                )
            ],
        ) from error
    raw = entries.pop(_METADATA, None)
    arrays = {
        name[len(_WEIGHTS) :]: value
        for name, value in entries.items()
        if name.startswith(_WEIGHTS)
    }
    if raw is None or raw.shape != (1,) or raw.dtype.kind != "U":
        return None, arrays
    try:
        metadata = json.loads(str(raw[0]))
    except json.JSONDecodeError:
        return None, arrays
    return (metadata if isinstance(metadata, dict) else None), arrays


def _model_from(
    metadata: dict[str, Any], arrays: dict[str, np.ndarray]
) -> tuple[EnhancerModel | None, list[Problem]]:
    problems = [
        Problem("missing-field", "the metadata lacks it; re-save the model", field)
        for field in _FIELDS
        if field not in metadata
    ]
    if metadata.get("format") != FORMAT or metadata.get("version") != _VERSION:
        problems.append(
            Problem(
                "unknown-format",
                f"format {metadata.get('format')!r} version "
                f"{metadata.get('version')!r}; this fedbone reads {FORMAT!r} "
                f"version {_VERSION}",
            )
        )
    if problems:
        return None, problems
    try:
        spec = EnhancerSpec.from_dict(metadata["spec"])
    except (ModelError, TypeError) as error:
        found = error.problems if isinstance(error, ModelError) else ()
        return None, list(found) or [Problem("bad-spec", str(error), "spec")]
    listed = set(metadata["arrays"])
    problems += [
        Problem("missing-array", "listed in the metadata but absent", key)
        for key in sorted(listed - set(arrays))
    ]
    problems += _fit_problems(spec, arrays)
    if problems:
        return None, problems
    try:
        model = EnhancerModel(
            spec=spec,
            arrays=arrays,
            levels=tuple(str(level) for level in metadata["levels"]),
            speeds=tuple(float(speed) for speed in metadata["speeds"]),
            spacing_mm=float(metadata["spacing-mm"]),
            canvas=(int(metadata["canvas"][0]), int(metadata["canvas"][1])),
            clip_percentile=float(metadata["clip-percentile"]),
            study=str(metadata["study"]),
            description=str(metadata["description"]),
        )
    except EnhanceError as error:
        return None, list(error.problems)
    except (TypeError, ValueError, IndexError) as error:
        return None, [Problem("bad-metadata", str(error))]
    return model, []


def load_enhancer(path: Path, sha256: str | None = None) -> EnhancerModel:
    """Read an enhancer written by :func:`save_enhancer`.

    Parameters
    ----------
    path
        The ``.npz`` file.
    sha256
        Its expected hex sha256, checked before the file is parsed; ``None``
        skips the check.

    Returns
    -------
    EnhancerModel
        The model, its arrays checked against its spec.

    Raises
    ------
    EnhanceError
        ``missing-file``, ``sha256-mismatch``, ``not-an-enhancer-file``,
        ``bad-metadata``, ``unknown-method`` (and the spec's other problems),
        or arrays that do not fit the network, all listed.
    """
    path = Path(path)
    if not path.is_file():
        raise EnhanceError(
            path,
            [Problem("missing-file", "no enhancer file here; check the path")],
        )
    if sha256 is not None:
        actual = file_sha256(path)
        if actual != sha256.strip().lower():
            raise EnhanceError(
                path,
                [
                    Problem(
                        "sha256-mismatch",
                        f"expected sha256 {sha256.strip().lower()}, the file has "
                        f"{actual}; use the released file or correct the sha256",
                    )
                ],
            )
    metadata, arrays = _read(path)
    if metadata is None:
        raise EnhanceError(
            path,
            [
                Problem(
                    "bad-metadata",
                    "no readable JSON metadata string; use a file written by "
                    "save_enhancer",
                )
            ],
        )
    model, problems = _model_from(metadata, arrays)
    if model is None:
        raise EnhanceError(path, problems)
    return model
