"""A site's list of real fast acquisitions, each paired with a standard scan.

A site that acquired some patients twice at one visit (a standard scan and a
faster one) lists the fast files in a CSV, set as ``data.fast_manifest`` in
its site config::

    scan_id,fast_scan_file,speed
    S-0001,dicom/S-0001_fast2x.dcm,2

``scan_id`` names the standard scan in the site manifest, ``fast_scan_file``
is relative to this CSV's folder (or absolute), and ``speed`` is the table
speed over the standard's (``2`` or ``2x`` for a scan twice as fast). Every
problem of the file is listed at once.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

from fedbone.errors import ManifestError, Problem

__all__ = [
    "FAST_MANIFEST_COLUMNS",
    "FastScanRow",
    "fast_manifest_sha256",
    "read_fast_manifest",
]

FAST_MANIFEST_COLUMNS = ("scan_id", "fast_scan_file", "speed")
_SPEED = re.compile(r"(\d+(?:\.\d+)?)\s*[xX]?")
_MAX_SPEED = 10.0


@dataclass(frozen=True)
class FastScanRow:
    """One real fast acquisition.

    Attributes
    ----------
    scan_id
        The standard scan of the same patient and visit.
    fast_scan_file
        The fast acquisition's DICOM file (resolved).
    speed
        Table speed over the standard's, ``> 1``.
    row_number
        Line of the CSV the row ends on (the header is line 1).
    """

    scan_id: str
    fast_scan_file: Path
    speed: float
    row_number: int

    @property
    def level(self) -> str:
        """Name of the pair set's level this acquisition belongs to (``2x-real``)."""
        return f"{self.speed:g}x-real"


def _where(row: int, column: str) -> str:
    return f"row {row}, column {column}"


def _bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ManifestError(
            path,
            [
                Problem(
                    "unreadable-manifest",
                    f"cannot read the fast-scan manifest ({error.strerror}); "
                    "check data.fast_manifest in the site config",
                )
            ],
        ) from error


def _text(path: Path) -> str:
    data = _bytes(path)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ManifestError(
            path,
            [
                Problem(
                    "not-utf8",
                    f"byte {error.start} is not UTF-8; save the CSV as UTF-8",
                )
            ],
        ) from error


def _speed(raw: str) -> float | None:
    match = _SPEED.fullmatch(raw.strip())
    if match is None:
        return None
    speed = float(match.group(1))
    return speed if 1.0 < speed <= _MAX_SPEED else None


def _row(
    cells: dict[str, str], number: int, base: Path, problems: list[Problem]
) -> FastScanRow | None:
    scan_id = (cells.get("scan_id") or "").strip()
    file_cell = (cells.get("fast_scan_file") or "").strip()
    speed_cell = (cells.get("speed") or "").strip()
    found = len(problems)
    if not scan_id:
        problems.append(
            Problem(
                "missing-value",
                "give the scan_id of the standard scan in the site manifest",
                _where(number, "scan_id"),
            )
        )
    if not file_cell:
        problems.append(
            Problem(
                "missing-value",
                "give the fast acquisition's DICOM file",
                _where(number, "fast_scan_file"),
            )
        )
    speed = _speed(speed_cell)
    if speed is None:
        problems.append(
            Problem(
                "unknown-speed",
                f"{speed_cell!r} is not a speed; expected the table speed over "
                f"the standard's, a number in (1, {_MAX_SPEED:g}] such as 2 or 2x",
                _where(number, "speed"),
            )
        )
    if len(problems) > found or speed is None:
        return None
    path = Path(file_cell).expanduser()
    return FastScanRow(
        scan_id=scan_id,
        fast_scan_file=path if path.is_absolute() else (base / path).resolve(),
        speed=speed,
        row_number=number,
    )


def _duplicates(rows: list[FastScanRow]) -> list[Problem]:
    problems = []
    by_pair: dict[tuple[str, float], int] = {}
    by_file: dict[Path, int] = {}
    for row in rows:
        first = by_pair.setdefault((row.scan_id, row.speed), row.row_number)
        if first != row.row_number:
            problems.append(
                Problem(
                    "duplicate-row",
                    f"{row.scan_id} at speed {row.speed:g} is already listed in "
                    f"row {first}; list each fast acquisition once",
                    _where(row.row_number, "scan_id"),
                )
            )
        first = by_file.setdefault(row.fast_scan_file, row.row_number)
        if first != row.row_number:
            problems.append(
                Problem(
                    "duplicate-file",
                    f"{row.fast_scan_file} is already listed in row {first}; "
                    "list each file once",
                    _where(row.row_number, "fast_scan_file"),
                )
            )
    return problems


def read_fast_manifest(path: str | Path) -> list[FastScanRow]:
    """Read and check a fast-scan manifest.

    Parameters
    ----------
    path
        The CSV (columns ``scan_id, fast_scan_file, speed``; others ignored).

    Returns
    -------
    list of FastScanRow
        In file order. Files are not opened here: a missing or unreadable
        fast scan leaves only its pair out when the pairs are built.

    Raises
    ------
    ManifestError
        ``unreadable-manifest``, ``not-utf8``, ``missing-column``,
        ``missing-value``, ``unknown-speed``, ``duplicate-row`` or
        ``duplicate-file``; every problem of the file listed.
    """
    manifest_path = Path(path).resolve()
    reader = csv.DictReader(io.StringIO(_text(manifest_path), newline=""))
    header = [name.strip() for name in reader.fieldnames or ()]
    missing = [c for c in FAST_MANIFEST_COLUMNS if c not in header]
    if missing:
        raise ManifestError(
            manifest_path,
            [
                Problem(
                    "missing-column",
                    f"column {name!r} is missing; the header must name "
                    f"{', '.join(FAST_MANIFEST_COLUMNS)}",
                )
                for name in missing
            ],
        )
    reader.fieldnames = header
    problems: list[Problem] = []
    rows = []
    for cells in reader:
        if not any(isinstance(v, str) and v.strip() for v in cells.values()):
            continue  # a row of empty cells
        row = _row(cells, reader.line_num, manifest_path.parent, problems)
        if row is not None:
            rows.append(row)
    problems.extend(_duplicates(rows))
    ManifestError.raise_if_any(manifest_path, problems)
    return rows


def fast_manifest_sha256(path: str | Path) -> str:
    """Return the sha256 of a fast-scan manifest's bytes.

    Raises
    ------
    ManifestError
        ``unreadable-manifest`` when the file cannot be read.
    """
    return hashlib.sha256(_bytes(Path(path).resolve())).hexdigest()
