"""Read and validate a site manifest: one CSV row per scan file.

The schema is a fixed contract with the sites: required columns
``scan_id, scan_file, patient_id, split, label_bm, label_ca``; optional
``perugini_grade, age, sex, study_date, tracer, scanner`` and endpoint pairs
``time_<endpoint>_days`` / ``event_<endpoint>``. Unknown columns are kept and
reported as warnings. Every problem in the file is collected, then one
:class:`~fedbone.errors.ManifestError` lists them all, each located as
``row N, column X`` where row 1 is the header, as a spreadsheet numbers rows.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from fedbone.errors import ManifestError, Problem

__all__ = [
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "SPLITS",
    "Manifest",
    "ManifestRow",
    "read_manifest",
]

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = (
    "scan_id",
    "scan_file",
    "patient_id",
    "split",
    "label_bm",
    "label_ca",
)
OPTIONAL_COLUMNS = ("perugini_grade", "age", "sex", "study_date", "tracer", "scanner")
SPLITS = ("train", "val", "test")
_SEXES = ("M", "F", "O")
_SCAN_ID = re.compile(r"[A-Za-z0-9._-]+")
_TIME_COLUMN = re.compile(r"time_(?P<endpoint>.+)_days")
_EVENT_COLUMN = re.compile(r"event_(?P<endpoint>.+)")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class ManifestRow:
    """One validated manifest row.

    ``endpoints`` maps an endpoint name (``death``, ``hf``...) to
    ``(time_days, event)``, both ``None`` when the row leaves them empty.
    ``row_number`` is the spreadsheet row (the header is row 1). ``extra`` holds
    the values of unknown columns.
    """

    scan_id: str
    scan_file: Path
    patient_id: str
    split: str
    label_bm: int | None
    label_ca: int | None
    perugini_grade: int | None
    age: float | None
    sex: str | None
    study_date: date | None
    tracer: str | None
    scanner: str | None
    endpoints: dict[str, tuple[float | None, int | None]]
    row_number: int
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    """A validated manifest: its rows, endpoints and identity.

    Attributes
    ----------
    path
        The manifest file, absolute.
    sha256
        Hex digest of the file's bytes; part of every cache's identity.
    rows
        The rows in file order.
    endpoints
        Endpoint names with a ``time_<e>_days``/``event_<e>`` column pair.
    warnings
        Non-fatal findings (``unknown-column``).
    """

    path: Path
    sha256: str
    rows: tuple[ManifestRow, ...]
    endpoints: tuple[str, ...]
    warnings: tuple[Problem, ...] = ()


def _where(row: int, column: str) -> str:
    return f"row {row}, column {column}"


class _RowChecker:
    """Parses one row's cells, recording a problem for each invalid one."""

    def __init__(
        self, cells: dict[str, str], row_number: int, problems: list[Problem]
    ) -> None:
        self.cells = cells
        self.row_number = row_number
        self.problems = problems

    def fail(self, column: str, code: str, message: str) -> None:
        self.problems.append(Problem(code, message, _where(self.row_number, column)))

    def required(self, column: str) -> str:
        value = self.cells.get(column, "")
        if column in self.cells and not value:
            self.fail(
                column, "missing-value", f"{column} is empty; every row needs one"
            )
        return value

    def optional(self, column: str) -> str | None:
        return self.cells.get(column) or None

    def parsed(
        self, column: str, code: str, expected: str, parse: Callable[[str], object]
    ) -> object | None:
        """Parse a non-empty cell; ``None`` when empty or invalid (recorded)."""
        raw = self.cells.get(column, "")
        if not raw:
            return None
        try:
            return parse(raw)
        except ValueError:
            self.fail(column, code, f"{raw!r} is not valid; expected {expected}")
            return None


def _one_of(allowed: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in allowed:
            raise ValueError(raw)
        return raw

    return parse


def _binary(raw: str) -> int:
    return int(_one_of(("0", "1"))(raw))


def _grade(raw: str) -> int:
    return int(_one_of(("0", "1", "2", "3"))(raw))


def _age(raw: str) -> float:
    age = float(raw)
    if not 0 < age < 120:
        raise ValueError(raw)
    return age


def _study_date(raw: str) -> date:
    if not _DATE.fullmatch(raw):
        raise ValueError(raw)
    return date.fromisoformat(raw)


def _follow_up_days(raw: str) -> float:
    days = float(raw)
    if not days > 0 or days == float("inf"):
        raise ValueError(raw)
    return days


def _scan_id(raw: str) -> str:
    if not _SCAN_ID.fullmatch(raw):
        raise ValueError(raw)
    return raw


def _read_text(path: Path) -> tuple[str, str]:
    """Return the manifest's text and the sha256 of its bytes."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ManifestError(
            path,
            [
                Problem(
                    "unreadable-manifest",
                    f"cannot read the manifest ({error.strerror}); check the path "
                    "in the site config",
                )
            ],
        ) from error
    try:
        text = data.decode("utf-8-sig")
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
    return text, hashlib.sha256(data).hexdigest()


def _parse_csv(path: Path, text: str) -> list[list[str]]:
    """Split the text into records, or raise a ManifestError naming the row.

    The csv module refuses a field longer than its limit (131,072 characters)
    and some malformed input (a NUL byte); the limit is a process-wide
    setting and is left as it is: no manifest cell (an id, a path, a label)
    comes near it, and an unclosed quote is the usual cause.
    """
    reader = csv.reader(io.StringIO(text, newline=""))
    records: list[list[str]] = []
    lines_used = 0
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return records
        except csv.Error as error:
            raise ManifestError(
                path, [_csv_problem(text, records, lines_used, error)]
            ) from error
        records.append(record)
        lines_used = reader.line_num


def _csv_problem(
    text: str, records: list[list[str]], lines_used: int, error: csv.Error
) -> Problem:
    """Describe a record the csv module refused, with its row and column."""
    row = len(records) + 1
    limit = csv.field_size_limit()
    if "field larger than field limit" not in str(error):
        return Problem(
            "malformed-csv",
            f"the CSV cannot be parsed ({error}); save the manifest again as "
            "plain comma-separated UTF-8",
            f"row {row}",
        )
    header = [name.strip() for name in records[0]] if records else []
    column = _long_field_column(text, lines_used, limit)
    if column is None:
        where = f"row {row}"
    else:
        name = header[column] if row > 1 and column < len(header) else None
        where = _where(row, name or f"{column + 1} (by position)")
    return Problem(
        "field-too-long",
        f"a field is longer than {limit:,} characters; a manifest cell holds an "
        "id, a path, a label or a number: look for a quote that is never "
        "closed, or text pasted into the wrong cell",
        where,
    )


def _long_field_column(text: str, lines_used: int, limit: int) -> int | None:
    """Return the 0-based column of the first over-long field of a record.

    The record starts after the ``lines_used`` physical lines of the records
    before it. ``None`` if the field cannot be found again.
    """
    lines = io.StringIO(text, newline="").readlines()
    start = sum(len(line) for line in lines[:lines_used])
    column, length, quoted, index = 0, 0, False, start
    while index < len(text):
        char = text[index]
        if quoted and char == '"' and text[index + 1 : index + 2] == '"':
            index += 1
            length += 1
        elif char == '"' and (quoted or length == 0):
            quoted = not quoted
        elif not quoted and char == ",":
            column, length = column + 1, 0
        elif not quoted and char in "\r\n":
            return None
        else:
            length += 1
        if length > limit:
            return column
        index += 1
    return None


def _check_header(
    header: list[str], problems: list[Problem], warnings: list[Problem]
) -> tuple[str, ...]:
    """Check columns; return the endpoints that have a complete column pair."""
    seen: set[str] = set()
    for name in header:
        if name in seen:
            problems.append(
                Problem(
                    "duplicate-column",
                    f"column {name!r} appears more than once; keep one",
                    f"column {name}",
                )
            )
        seen.add(name)
    for name in REQUIRED_COLUMNS:
        if name not in seen:
            problems.append(
                Problem(
                    "missing-column",
                    f"required column {name!r} is missing; the header must hold "
                    f"{', '.join(REQUIRED_COLUMNS)}",
                    f"column {name}",
                )
            )
    times = {m["endpoint"]: n for n in header if (m := _TIME_COLUMN.fullmatch(n))}
    events = {m["endpoint"]: n for n in header if (m := _EVENT_COLUMN.fullmatch(n))}
    for endpoint in sorted(set(times) ^ set(events)):
        present = times.get(endpoint) or events[endpoint]
        needed = f"event_{endpoint}" if endpoint in times else f"time_{endpoint}_days"
        problems.append(
            Problem(
                "unpaired-endpoint-column",
                f"{present!r} needs its partner column {needed!r}; add it or "
                f"remove {present!r}",
                f"column {present}",
            )
        )
    known = set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS)
    for name in header:
        if name not in known | set(times.values()) | set(events.values()):
            warnings.append(
                Problem(
                    "unknown-column",
                    f"column {name!r} is not part of the schema; it is kept but "
                    "not used",
                    f"column {name}",
                )
            )
    return tuple(sorted(set(times) & set(events)))


def _check_row(
    checker: _RowChecker, endpoints: tuple[str, ...], base: Path, check_files: bool
) -> ManifestRow:
    cells = checker.cells
    scan_id = checker.required("scan_id")
    if scan_id:
        checker.parsed(
            "scan_id", "invalid-scan-id", "letters, digits, '.', '_' or '-'", _scan_id
        )
    raw_file = checker.required("scan_file")
    scan_file = (base / raw_file).resolve() if raw_file else base
    if raw_file and check_files and not scan_file.is_file():
        reason = "is a folder" if scan_file.is_dir() else "does not exist"
        checker.fail(
            "scan_file",
            "missing-file",
            f"{scan_file} {reason}; expected a DICOM file (relative paths are "
            "relative to the manifest's folder)",
        )
    patient_id = checker.required("patient_id")
    split = checker.required("split")
    if split:
        checker.parsed("split", "invalid-split", "train, val or test", _one_of(SPLITS))
    labels = {
        column: checker.parsed(column, "invalid-label", "0, 1 or empty", _binary)
        for column in ("label_bm", "label_ca")
    }
    grade = checker.parsed("perugini_grade", "invalid-perugini-grade", "0-3", _grade)
    if isinstance(grade, int) and cells.get("label_ca", "") in ("", "0", "1"):
        expected = int(grade >= 2)
        if labels["label_ca"] != expected:
            checker.fail(
                "label_ca",
                "perugini-label-mismatch",
                f"Perugini grade {grade} means label_ca={expected} (grade >= 2 is "
                f"positive) but label_ca is {cells.get('label_ca') or 'empty'}; "
                "correct the label or the grade",
            )
    age = checker.parsed("age", "invalid-age", "years, 0 < age < 120", _age)
    sex = checker.parsed("sex", "invalid-sex", "M, F, O or empty", _one_of(_SEXES))
    study_date = checker.parsed(
        "study_date", "invalid-date", "a date as YYYY-MM-DD", _study_date
    )
    outcomes: dict[str, tuple[float | None, int | None]] = {}
    for endpoint in endpoints:
        time_column, event_column = f"time_{endpoint}_days", f"event_{endpoint}"
        days = checker.parsed(
            time_column,
            "invalid-follow-up-time",
            "a number of days > 0",
            _follow_up_days,
        )
        event = checker.parsed(event_column, "invalid-event", "0 or 1", _binary)
        if bool(cells.get(time_column)) != bool(cells.get(event_column)):
            empty = event_column if cells.get(time_column) else time_column
            checker.fail(
                empty,
                "unpaired-endpoint-value",
                f"{time_column} and {event_column} must be both filled or both "
                f"empty; fill {empty} or clear its partner",
            )
        outcomes[endpoint] = (
            days if isinstance(days, float) else None,
            event if isinstance(event, int) else None,
        )
    known = set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS)
    known |= {f"time_{e}_days" for e in endpoints} | {f"event_{e}" for e in endpoints}
    return ManifestRow(
        scan_id=scan_id,
        scan_file=scan_file,
        patient_id=patient_id,
        split=split,
        label_bm=labels["label_bm"] if isinstance(labels["label_bm"], int) else None,
        label_ca=labels["label_ca"] if isinstance(labels["label_ca"], int) else None,
        perugini_grade=grade if isinstance(grade, int) else None,
        age=age if isinstance(age, float) else None,
        sex=sex if isinstance(sex, str) else None,
        study_date=study_date if isinstance(study_date, date) else None,
        tracer=checker.optional("tracer"),
        scanner=checker.optional("scanner"),
        endpoints=outcomes,
        row_number=checker.row_number,
        extra={k: v for k, v in cells.items() if k not in known},
    )


def _check_across_rows(
    rows: list[ManifestRow], base: Path, problems: list[Problem]
) -> None:
    """Duplicates and patient leakage: problems that need all rows at once.

    ``base`` (the manifest's folder) stands for an empty ``scan_file``, which
    is reported on its own and must not count as a duplicate.
    """
    first_by_id: dict[str, int] = {}
    first_by_file: dict[Path, int] = {}
    for row in rows:
        if row.scan_id:
            if row.scan_id in first_by_id:
                problems.append(
                    Problem(
                        "duplicate-scan-id",
                        f"scan_id {row.scan_id!r} is already used in row "
                        f"{first_by_id[row.scan_id]}; scan ids must be unique",
                        _where(row.row_number, "scan_id"),
                    )
                )
            first_by_id.setdefault(row.scan_id, row.row_number)
        if row.scan_file != base:
            if row.scan_file in first_by_file:
                problems.append(
                    Problem(
                        "duplicate-scan-file",
                        f"{row.scan_file} is already listed in row "
                        f"{first_by_file[row.scan_file]}; list each file once",
                        _where(row.row_number, "scan_file"),
                    )
                )
            first_by_file.setdefault(row.scan_file, row.row_number)
    splits_by_patient: dict[str, dict[str, list[int]]] = defaultdict(dict)
    for row in rows:
        if row.patient_id and row.split in SPLITS:
            rows_in = splits_by_patient[row.patient_id].setdefault(row.split, [])
            rows_in.append(row.row_number)
    for patient, by_split in splits_by_patient.items():
        if len(by_split) > 1:
            listing = "; ".join(
                f"{split} (rows {', '.join(map(str, numbers))})"
                for split, numbers in by_split.items()
            )
            later = sorted(numbers[0] for numbers in by_split.values())[1]
            problems.append(
                Problem(
                    "patient-in-several-splits",
                    f"patient {patient!r} is in {listing}; all scans of a patient "
                    "must share one split to avoid leakage",
                    _where(later, "split"),
                )
            )


def read_manifest(path: str | Path, *, check_files: bool = True) -> Manifest:
    """Read a site manifest and validate it completely.

    Parameters
    ----------
    path
        The CSV file.
    check_files
        Also check that every ``scan_file`` exists.

    Returns
    -------
    Manifest
        The rows, endpoint names, path and sha256 of the file.

    Raises
    ------
    ManifestError
        Listing every problem found, each with ``row N, column X``.
    """
    manifest_path = Path(path).resolve()
    text, digest = _read_text(manifest_path)
    records = _parse_csv(manifest_path, text)
    header = [name.strip() for name in records[0]] if records else []
    if not any(header):
        raise ManifestError(
            manifest_path,
            [
                Problem(
                    "empty-manifest",
                    "the file has no header row; expected "
                    f"{','.join(REQUIRED_COLUMNS)} on the first line",
                )
            ],
        )
    problems: list[Problem] = []
    warnings: list[Problem] = []
    endpoints = _check_header(header, problems, warnings)
    rows: list[ManifestRow] = []
    for offset, record in enumerate(records[1:]):
        row_number = offset + 2
        if not any(value.strip() for value in record):
            continue
        if len(record) != len(header):
            problems.append(
                Problem(
                    "wrong-field-count",
                    f"the row has {len(record)} fields but the header has "
                    f"{len(header)}; check for stray or missing commas",
                    f"row {row_number}",
                )
            )
            continue
        cells = {
            name: value.strip() for name, value in zip(header, record, strict=True)
        }
        checker = _RowChecker(cells, row_number, problems)
        rows.append(_check_row(checker, endpoints, manifest_path.parent, check_files))
    if not rows and not problems:
        problems.append(
            Problem("no-rows", "the manifest lists no scans; add one row per scan")
        )
    _check_across_rows(rows, manifest_path.parent, problems)
    ManifestError.raise_if_any(manifest_path, problems)
    for warning in warnings:
        logger.warning("%s: %s", manifest_path, warning)
    return Manifest(
        path=manifest_path,
        sha256=digest,
        rows=tuple(rows),
        endpoints=endpoints,
        warnings=tuple(warnings),
    )
