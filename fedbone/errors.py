"""Typed errors for fedbone.

Every error says what is wrong, what was expected and how to fix it. Validators
collect *all* problems first and raise once (the Opacus ``ModuleValidator`` idea),
so a data engineer fixes a manifest or a DICOM batch in one pass, not one error
per run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CacheError",
    "ConfigError",
    "DicomError",
    "FedboneError",
    "ManifestError",
    "PreprocessingError",
    "Problem",
    "ProblemsError",
]


class FedboneError(Exception):
    """Base class of every error fedbone raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing found wrong with an input.

    Parameters
    ----------
    code
        Stable, machine-readable kebab-case identifier (``wrong-modality``,
        ``missing-spacing``...). Tests and quarantine reports key on it.
    message
        What is wrong, what was expected and how to fix it, in one sentence.
    where
        Optional location: a DICOM keyword, a manifest ``row N, column X``...
    """

    code: str
    message: str
    where: str = ""

    def __str__(self) -> str:
        prefix = f"[{self.code}]"
        return (
            f"{prefix} {self.where}: {self.message}"
            if self.where
            else (f"{prefix} {self.message}")
        )


class ProblemsError(FedboneError):
    """An input with one or more problems, all listed.

    Parameters
    ----------
    subject
        What was checked (a file path, a manifest, a config file).
    problems
        Every problem found; never empty.
    """

    kind = "input"

    def __init__(self, subject: str | Path, problems: Sequence[Problem]) -> None:
        if not problems:
            raise ValueError("ProblemsError needs at least one problem")
        self.subject = str(subject)
        self.problems: tuple[Problem, ...] = tuple(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"{self.kind} {self.subject!r} has {count} {noun}:\n{lines}")

    @property
    def codes(self) -> list[str]:
        """The problem codes, in the order found."""
        return [p.code for p in self.problems]

    @classmethod
    def raise_if_any(cls, subject: str | Path, problems: Iterable[Problem]) -> None:
        """Raise ``cls`` listing ``problems`` if there are any."""
        found = list(problems)
        if found:
            raise cls(subject, found)


class DicomError(ProblemsError):
    """A DICOM file that cannot be used as a whole-body bone scan."""

    kind = "DICOM file"


class PreprocessingError(ProblemsError):
    """A scan that was read but cannot be placed on the canvas."""

    kind = "scan"


class ManifestError(ProblemsError):
    """A site manifest that does not match the schema or the files."""

    kind = "manifest"


class ConfigError(ProblemsError):
    """A site or study configuration with invalid or missing settings."""

    kind = "config"


class CacheError(FedboneError):
    """A prepared cache that is missing, incomplete or fails its hash check."""
