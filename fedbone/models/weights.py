"""Local pretrained weights, checked by sha256 before they are read.

fedbone never downloads weights: a site that wants ImageNet-style
initialisation places the file next to its config and names its sha256. The
checksum is verified before ``torch.load`` touches the file, and the file is
read with ``weights_only=True``, so a swapped or damaged file cannot run code
or silently load.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fedbone.errors import Problem
from fedbone.models.errors import ModelError

__all__ = ["PretrainedReport", "file_sha256", "load_pretrained"]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
# Keys under which training scripts commonly nest the state dict.
_NESTED_KEYS = ("state_dict", "model", "model_state_dict")


@dataclass(frozen=True)
class PretrainedReport:
    """What a pretrained file contributed to a model.

    Attributes
    ----------
    loaded
        Model keys set from the file.
    adapted
        Keys whose first convolution was summed over the file's input channels
        to fit a model with one input channel (grey scans, RGB weights).
    missing
        Model keys the file does not provide (left at their initial values).
    unexpected
        File keys the model does not have.
    mismatched
        File keys whose shapes do not fit the model (not loaded).
    """

    loaded: tuple[str, ...]
    adapted: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    mismatched: tuple[str, ...]


def file_sha256(path: Path) -> str:
    """Return the hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _state_from(obj: object, path: Path) -> Mapping[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in _NESTED_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor)
        for key, value in obj.items()
    ):
        raise ModelError(
            path,
            [
                Problem(
                    "not-a-state-dict",
                    "expected a state dict (names to tensors), possibly under "
                    f"one of {', '.join(_NESTED_KEYS)}; save weights with "
                    "torch.save(model.state_dict(), path)",
                )
            ],
        )
    return obj


def _fit(value: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    """Return ``value`` shaped like ``target``, or None when it cannot fit."""
    if value.shape == target.shape:
        return value
    grey_first_conv = (
        value.ndim == 4
        and target.ndim == 4
        and target.shape[1] == 1
        and value.shape[0] == target.shape[0]
        and value.shape[2:] == target.shape[2:]
    )
    if grey_first_conv:
        # A grey image is the same intensity in every colour channel, so the
        # summed kernel gives the response the RGB kernel would give.
        return value.sum(dim=1, keepdim=True)
    return None


def load_pretrained(model: nn.Module, path: Path, sha256: str) -> PretrainedReport:
    """Load a local weights file into ``model`` after checking its sha256.

    Loading is non-strict: keys present in both with fitting shapes are
    loaded, everything else is reported (and logged) in the returned report.

    Parameters
    ----------
    model
        The network to initialise (typically a classifier's backbone).
    path
        The weights file (a ``torch.save``'d state dict).
    sha256
        Its expected hex sha256.

    Returns
    -------
    PretrainedReport
        Loaded, adapted, missing, unexpected and mismatched keys.

    Raises
    ------
    ModelError
        When the file is missing, its sha256 differs, it is not a state dict,
        or none of its weights fit the model.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(
            path,
            [
                Problem(
                    "missing-weights",
                    "the pretrained weights file does not exist; fix "
                    "pretrained_weights or remove it to train from scratch",
                )
            ],
        )
    actual = file_sha256(path)
    if actual != sha256.strip().lower():
        raise ModelError(
            path,
            [
                Problem(
                    "sha256-mismatch",
                    f"expected sha256 {sha256.strip().lower()}, the file has "
                    f"{actual}; replace the file with the intended one or "
                    "correct pretrained_sha256",
                )
            ],
        )
    state = _state_from(torch.load(path, map_location="cpu", weights_only=True), path)
    own = model.state_dict()
    usable: dict[str, torch.Tensor] = {}
    adapted: list[str] = []
    mismatched: list[str] = []
    for key, value in state.items():
        if key not in own:
            continue
        fitted = _fit(value, own[key])
        if fitted is None:
            mismatched.append(key)
            continue
        if fitted is not value:
            adapted.append(key)
        usable[key] = fitted
    if not usable:
        raise ModelError(
            path,
            [
                Problem(
                    "no-matching-weights",
                    f"none of the file's {len(state)} tensors match the model's "
                    f"{len(own)} keys by name and shape (file keys start "
                    f"{sorted(state)[:3]}, model keys {sorted(own)[:3]}); "
                    "use weights saved from the same architecture",
                )
            ],
        )
    model.load_state_dict(usable, strict=False)
    report = PretrainedReport(
        loaded=tuple(sorted(usable)),
        adapted=tuple(sorted(adapted)),
        missing=tuple(sorted(set(own) - set(usable))),
        unexpected=tuple(sorted(set(state) - set(own))),
        mismatched=tuple(sorted(mismatched)),
    )
    logger.info(
        "pretrained %s: %d tensors loaded (%d adapted to grey), %d missing, "
        "%d unexpected, %d shape mismatches",
        path.name,
        len(report.loaded),
        len(report.adapted),
        len(report.missing),
        len(report.unexpected),
        len(report.mismatched),
    )
    return report
