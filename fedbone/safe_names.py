"""Identifiers that a site turns into file names, checked before any file is touched.

The centre names the run (``run-name``) and a site keeps each run's state in
``<work_dir>/<area>/<run-name>/``. A name such as ``../..`` would put the
pool, the replay store or the outcome cohort outside the work folder, so
every identifier that becomes part of a path at a site passes
:func:`check_safe_name` and every such folder is built by :func:`run_folder`,
which also checks that the result stays inside the work folder.
"""

from __future__ import annotations

import re
from pathlib import Path

from fedbone.errors import Problem, ProblemsError

__all__ = ["SAFE_NAME", "UnsafeName", "check_safe_name", "is_safe_name", "run_folder"]

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
"""One path component: a letter or digit, then up to 127 of ``[A-Za-z0-9._-]``."""


class UnsafeName(ProblemsError):  # noqa: N818 (reads as "an unsafe name")
    """An identifier that cannot be used as a file or folder name at a site."""

    kind = "identifier"


def is_safe_name(value: object) -> bool:
    """Whether ``value`` is a string usable as one path component."""
    return isinstance(value, str) and SAFE_NAME.fullmatch(value) is not None


def check_safe_name(value: object, what: str) -> str:
    """Return ``value`` if it is a safe path component, else raise.

    Parameters
    ----------
    value
        The identifier (e.g. a ``run-name`` from the centre).
    what
        What it names, for the message (``run-name``).

    Raises
    ------
    UnsafeName
        ``unsafe-name``: not 1-128 letters, digits, ``.``, ``_`` or ``-``
        starting with a letter or digit (so never ``..``, ``/`` or empty).
    """
    if is_safe_name(value):
        return str(value)
    shown = repr(value) if isinstance(value, str) and len(value) <= 64 else "value"
    raise UnsafeName(
        what,
        [
            Problem(
                "unsafe-name",
                f"{shown} is not a safe name: use 1-128 letters, digits, '.', '_' "
                "or '-', starting with a letter or digit (no '/' or '..')",
                what,
            )
        ],
    )


def run_folder(work_dir: Path, area: str, run_name: str) -> Path:
    """Return ``<work_dir>/<area>/<run_name>``, refusing a name that escapes it.

    Parameters
    ----------
    work_dir
        The site's work folder.
    area
        The kind of state (``gan``, ``synthetic``, ``runs``).
    run_name
        The run's name, as the centre sent it.

    Raises
    ------
    UnsafeName
        When ``run_name`` is not a safe name.
    """
    check_safe_name(run_name, "run-name")
    base = Path(work_dir)
    folder = base / area / run_name
    if not folder.resolve().is_relative_to(base.resolve()):
        raise UnsafeName(
            "run-name",
            [Problem("unsafe-name", "the folder would lie outside the work folder")],
        )
    return folder
