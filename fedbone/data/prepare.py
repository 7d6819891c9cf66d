"""``fedbone prepare``: turn a site's manifest and DICOM archive into its cache.

The manifest is validated first; a manifest problem stops everything before a
single scan is read, because it is a configuration error to fix. Then every
scan is read and preprocessed; one that fails (a DicomError, a
PreprocessingError or any unexpected exception) is **quarantined** with its
reasons and the run carries on. Images are streamed to disk in manifest order,
so memory stays bounded however large the archive, and the result is the same
for any number of worker processes.

A worker process that dies (the system's out-of-memory killer, a crash in a
decoder) does not hang the run: the pool is replaced, and every scan that was
in flight is read again, alone, in a fresh worker. A scan whose lone worker
dies too is quarantined as ``worker-died``; the others are cached as usual.
After more than :data:`MAX_WORKER_DEATHS` such scans the run stops with a
:class:`PrepareError` (the machine, not the files, is the likely cause). With
``workers=1`` scans are read in the calling process, which such a death ends.

The cache is written into a staging folder next to it (``.<name>.partial``)
and renamed into place when complete; a run that stops with an error removes
it, and a run killed outright leaves it for the next run to remove: nothing
is resumed from it.

Header values the reader treated as missing (``absurd-age``) do not keep a
scan out; they are listed as warnings in the report.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import shutil
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

import fedbone
from fedbone.data.cache import (
    IMAGES_FILE,
    META_FILE,
    QUARANTINE_FILE,
    REPORT_JSON_FILE,
    REPORT_TEXT_FILE,
    CacheRecord,
    CacheWriter,
    SiteCache,
    SourceView,
    install_cache,
    read_meta,
)
from fedbone.data.dicom_read import read_nm_scan
from fedbone.data.manifest import Manifest, ManifestRow, read_manifest
from fedbone.data.preprocess import CROP_WARNING_FRACTION, preprocess_with_report
from fedbone.data.scan import NMScan, View
from fedbone.data.spec import PreprocessSpec
from fedbone.errors import CacheError, FedboneError, ProblemsError

__all__ = [
    "MAX_WORKER_DEATHS",
    "PrepareError",
    "PrepareReport",
    "QuarantineEntry",
    "ScanWarning",
    "prepare_site_cache",
]

logger = logging.getLogger(__name__)

# Rows handed to the pool at a time: bounds the finished images waiting to be
# written behind a slow one, while keeping every worker busy.
_ROWS_PER_WORKER_WINDOW = 16
# Scans that may kill their lone worker before the run stops.
MAX_WORKER_DEATHS = 5
WORKER_DIED = "worker-died"


class PrepareError(FedboneError):
    """A prepare run that had to stop (not a problem of one scan)."""


@dataclass(frozen=True)
class QuarantineEntry:
    """A scan that could not be cached, and why."""

    scan_id: str
    scan_file: str
    row_number: int
    error_type: str
    codes: tuple[str, ...]
    messages: tuple[str, ...]


@dataclass(frozen=True)
class ScanWarning:
    """A header value of a cached scan that was treated as missing."""

    scan_id: str
    scan_file: str
    row_number: int
    code: str
    message: str


@dataclass(frozen=True)
class PrepareReport:
    """What a prepare run did.

    ``reused`` is true when an up-to-date cache was found and nothing was
    recomputed; the counts and hash are then those of that cache.
    ``warnings`` lists header values of cached scans treated as missing.
    """

    n_rows: int
    n_cached: int
    n_quarantined: int
    quarantine: tuple[QuarantineEntry, ...]
    elapsed_s: float
    scans_per_s: float
    cache_dir: Path
    content_hash: str
    reused: bool
    warnings: tuple[ScanWarning, ...] = ()


@dataclass(frozen=True)
class _Task:
    row: ManifestRow
    spec: PreprocessSpec
    default_view: View | None
    manifest_dir: Path


_Outcome = tuple[np.ndarray, CacheRecord, tuple[ScanWarning, ...]] | QuarantineEntry


def _portable_path(path: Path, base: Path) -> str:
    """Return ``path`` relative to ``base`` when inside it, else as given.

    Relative paths keep a cache's content hash stable when a site folder moves.
    """
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)


def _record(task: _Task, scan: NMScan, cropped: dict[View, float]) -> CacheRecord:
    row = task.row
    meta = scan.metadata
    header_scanner = " ".join(p for p in (meta.manufacturer, meta.model) if p) or None
    study_date = row.study_date or meta.study_date
    return CacheRecord(
        scan_id=row.scan_id,
        patient_id=row.patient_id,
        split=row.split,
        label_bm=row.label_bm,
        label_ca=row.label_ca,
        perugini_grade=row.perugini_grade,
        age=row.age if row.age is not None else meta.age_years,
        sex=row.sex or meta.sex,
        study_date=study_date.isoformat() if study_date else None,
        tracer=row.tracer or meta.tracer,
        scanner=row.scanner or header_scanner,
        endpoints=dict(row.endpoints),
        scan_file=_portable_path(row.scan_file, task.manifest_dir),
        row_number=row.row_number,
        views=tuple(
            SourceView(
                view=view.value,
                total_counts=scan.views[view].total_counts,
                spacing_mm=scan.views[view].spacing_mm,
                patient_orientation=scan.views[view].patient_orientation,
                source=scan.views[view].source.value,
                cropped_fraction=fraction,
            )
            for view, fraction in cropped.items()
        ),
    )


def _prepare_one(task: _Task) -> _Outcome:
    """Read and preprocess one scan; never raises for a bad scan."""
    row = task.row
    try:
        scan = read_nm_scan(row.scan_file, default_view=task.default_view)
        result = preprocess_with_report(scan, task.spec)
        image = result.image.astype(np.float16)
        warnings = tuple(
            ScanWarning(row.scan_id, str(row.scan_file), row.row_number, w.code, str(w))
            for w in scan.metadata.warnings
        )
        return image, _record(task, scan, result.cropped_fraction), warnings
    except ProblemsError as error:
        codes = tuple(p.code for p in error.problems)
        messages = tuple(str(p) for p in error.problems)
        error_type = type(error).__name__
    except Exception as error:  # quarantine anything, the site carries on
        codes, messages = ("unexpected-error",), (f"{error}",)
        error_type = type(error).__name__
    return QuarantineEntry(
        scan_id=row.scan_id,
        scan_file=str(row.scan_file),
        row_number=row.row_number,
        error_type=error_type,
        codes=codes,
        messages=messages,
    )


def _outcomes(tasks: Sequence[_Task], workers: int) -> Iterator[_Outcome]:
    """Yield outcomes in manifest order, in this process or a pool."""
    if workers <= 1:
        for task in tasks:
            yield _prepare_one(task)
        return
    pool = _SupervisedPool(workers)
    try:
        yield from pool.outcomes(tasks)
    finally:
        pool.close()


class _SupervisedPool:
    """Worker processes that survive one of them dying.

    At most ``workers * _ROWS_PER_WORKER_WINDOW`` scans are in flight. When the
    pool breaks (a worker was killed), it is shut down and every scan it held
    is read again on its own in a one-worker pool, with nothing else running:
    a scan that kills that worker too is quarantined as ``worker-died``.
    """

    def __init__(self, workers: int) -> None:
        # Not fork: the caller may be a site process with gRPC or torch
        # threads, and forking those can deadlock.
        methods = multiprocessing.get_all_start_methods()
        method = "forkserver" if "forkserver" in methods else "spawn"
        self._context = multiprocessing.get_context(method)
        self._workers = workers
        self._in_flight = workers * _ROWS_PER_WORKER_WINDOW
        self._pool: ProcessPoolExecutor | None = None
        self._alone: ProcessPoolExecutor | None = None
        self.deaths = 0

    def outcomes(self, tasks: Sequence[_Task]) -> Iterator[_Outcome]:
        pending: deque[tuple[_Task, Future[_Outcome] | None]] = deque()
        for task in tasks:
            pending.append((task, self._submit(task)))
            if len(pending) >= self._in_flight:
                yield from self._collect(pending)
        while pending:
            yield from self._collect(pending)

    def close(self) -> None:
        for pool in (self._pool, self._alone):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        self._pool = self._alone = None

    def _submit(self, task: _Task) -> Future[_Outcome] | None:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self._workers, mp_context=self._context)
        try:
            return self._pool.submit(_prepare_one, task)
        except BrokenProcessPool:
            return None  # collected as a broken one

    def _collect(
        self, pending: deque[tuple[_Task, Future[_Outcome] | None]]
    ) -> Iterator[_Outcome]:
        """Yield the oldest outcome, or after a break all those in flight."""
        task, future = pending.popleft()
        outcome = _result(future)
        if outcome is not None:
            yield outcome
            return
        logger.warning(
            "a prepare worker died (out of memory?); reading the %d scan(s) it "
            "had in flight again, one at a time",
            len(pending) + 1,
        )
        if self._pool is not None:
            self._pool.shutdown(wait=True)  # the broken pool; every future fails
            self._pool = None
        yield self._run_alone(task)
        while pending:
            task, future = pending.popleft()
            outcome = _result(future)
            yield outcome if outcome is not None else self._run_alone(task)

    def _run_alone(self, task: _Task) -> _Outcome:
        if self._alone is None:
            self._alone = ProcessPoolExecutor(1, mp_context=self._context)
        outcome = _result(self._alone.submit(_prepare_one, task))
        if outcome is not None:
            return outcome
        self._alone.shutdown(wait=True)
        self._alone = None
        self.deaths += 1
        if self.deaths > MAX_WORKER_DEATHS:
            raise PrepareError(
                f"{self.deaths} scans killed the worker reading them (the last "
                f"was {task.row.scan_id}, {task.row.scan_file}); the machine is "
                "likely short of memory: run prepare with fewer workers or on a "
                "larger machine"
            )
        logger.warning("%s: its worker died again; quarantined", task.row.scan_file)
        return QuarantineEntry(
            scan_id=task.row.scan_id,
            scan_file=str(task.row.scan_file),
            row_number=task.row.row_number,
            error_type="BrokenProcessPool",
            codes=(WORKER_DIED,),
            messages=(
                f"[{WORKER_DIED}] the worker process reading this scan died, "
                "twice, the second time reading it alone (killed for lack of "
                "memory?); check the file's size with `fedbone inspect`, or "
                "run prepare with fewer workers",
            ),
        )


def _result(future: Future[_Outcome] | None) -> _Outcome | None:
    """Return a finished outcome, or ``None`` when its worker pool broke."""
    if future is None:
        return None
    try:
        return future.result()
    except (BrokenProcessPool, CancelledError):
        return None


def _check_target(cache_dir: Path) -> None:
    """Refuse to replace a folder that is neither empty nor a fedbone cache."""
    if not cache_dir.exists():
        return
    if not cache_dir.is_dir():
        raise CacheError(f"{cache_dir} is a file; choose a folder for the cache")
    contents = {p.name for p in cache_dir.iterdir()}
    if contents and META_FILE not in contents and IMAGES_FILE not in contents:
        raise CacheError(
            f"{cache_dir} holds other files and is not a fedbone cache; choose "
            "an empty or new folder for the cache"
        )


def _reusable(
    cache_dir: Path, manifest: Manifest, spec: PreprocessSpec, default_view: str
) -> tuple[SiteCache, tuple[QuarantineEntry, ...], tuple[ScanWarning, ...]] | None:
    """Return the existing cache, its quarantine and warnings if up to date."""
    try:
        meta = read_meta(cache_dir)
        if (
            meta.get("manifest_sha256") != manifest.sha256
            or meta.get("spec_fingerprint") != spec.fingerprint()
            or meta.get("default_view") != default_view
        ):
            return None
        cache = SiteCache.open(cache_dir)
        entries = json.loads((cache_dir / QUARANTINE_FILE).read_text("utf-8"))
        quarantine = tuple(
            QuarantineEntry(
                **{**e, "codes": tuple(e["codes"]), "messages": tuple(e["messages"])}
            )
            for e in entries
        )
        warnings = tuple(ScanWarning(**w) for w in _saved_warnings(cache_dir))
    except (CacheError, OSError, ValueError, KeyError, TypeError):
        return None  # anything unreadable is rebuilt
    return cache, quarantine, warnings


def _saved_warnings(cache_dir: Path) -> list[dict[str, Any]]:
    """Return the warnings of a cache's report (none in older reports)."""
    report_path = cache_dir / REPORT_JSON_FILE
    if not report_path.exists():
        return []
    saved = json.loads(report_path.read_text("utf-8")).get("warnings", [])
    return list(saved)


def _report_payload(
    report: PrepareReport, records: list[CacheRecord]
) -> dict[str, Any]:
    by_split = Counter(r.split for r in records)
    codes = Counter(code for entry in report.quarantine for code in entry.codes)
    cropped = sum(
        any(v.cropped_fraction > CROP_WARNING_FRACTION for v in r.views)
        for r in records
    )
    return {
        "rows": report.n_rows,
        "cached": report.n_cached,
        "quarantined": report.n_quarantined,
        "cached_by_split": dict(sorted(by_split.items())),
        "labels_known": {
            task: sum(getattr(r, f"label_{task}") is not None for r in records)
            for task in ("bm", "ca")
        },
        "scans_cropped_over_threshold": cropped,
        "crop_threshold_fraction": CROP_WARNING_FRACTION,
        "quarantine_codes": dict(sorted(codes.items())),
        "warning_codes": dict(sorted(Counter(w.code for w in report.warnings).items())),
        "warnings": [asdict(warning) for warning in report.warnings],
        "elapsed_s": round(report.elapsed_s, 3),
        "scans_per_s": round(report.scans_per_s, 2),
        "content_hash": report.content_hash,
    }


def _report_text(
    payload: dict[str, Any],
    quarantine: tuple[QuarantineEntry, ...],
    warnings: tuple[ScanWarning, ...],
) -> str:
    lines = [
        f"fedbone prepare: {payload['cached']} of {payload['rows']} scans cached, "
        f"{payload['quarantined']} quarantined",
        f"by split: {payload['cached_by_split']}",
        f"labels known: {payload['labels_known']}",
        f"scans losing > {100 * CROP_WARNING_FRACTION:.0f}% of counts to the "
        f"canvas: {payload['scans_cropped_over_threshold']}",
        f"time: {payload['elapsed_s']} s ({payload['scans_per_s']} scans/s)",
        f"content hash: {payload['content_hash']}",
    ]
    if quarantine:
        lines.append("quarantined scans:")
        for entry in quarantine:
            lines.append(
                f"  row {entry.row_number} {entry.scan_id} ({entry.scan_file}): "
                f"{entry.error_type} {', '.join(entry.codes)}"
            )
            lines.extend(f"    {message}" for message in entry.messages)
    if warnings:
        lines.append("header values treated as missing (scans kept):")
        lines.extend(
            f"  row {w.row_number} {w.scan_id} ({w.scan_file}): {w.message}"
            for w in warnings
        )
    return "\n".join(lines) + "\n"


def _warn_if_cropped(record: CacheRecord) -> None:
    for view in record.views:
        if view.cropped_fraction > CROP_WARNING_FRACTION:
            logger.warning(
                "%s (%s): the %s view lost %.1f%% of its counts to the canvas; "
                "check the pixel spacing or use a larger canvas",
                record.scan_id,
                record.scan_file,
                view.view,
                100 * view.cropped_fraction,
            )


def _stream_scans(
    writer: CacheWriter, tasks: Sequence[_Task], workers: int, progress: bool
) -> tuple[list[QuarantineEntry], list[ScanWarning]]:
    """Write every good scan in manifest order; return quarantine and warnings."""
    quarantined: list[QuarantineEntry] = []
    warnings: list[ScanWarning] = []
    with tqdm(total=len(tasks), unit="scan", disable=not progress) as bar:
        for outcome in _outcomes(tasks, workers):
            if isinstance(outcome, QuarantineEntry):
                logger.warning("quarantined %s: %s", outcome.scan_file, outcome.codes)
                quarantined.append(outcome)
            else:
                image, record, scan_warnings = outcome
                _warn_if_cropped(record)
                for warning in scan_warnings:
                    logger.warning("%s: %s", warning.scan_file, warning.message)
                warnings.extend(scan_warnings)
                writer.append(image, record)
            bar.update()
    return quarantined, warnings


def _write_reports(
    folder: Path, report: PrepareReport, records: list[CacheRecord]
) -> None:
    payload = _report_payload(report, records)
    quarantine = [asdict(entry) for entry in report.quarantine]
    (folder / QUARANTINE_FILE).write_text(
        json.dumps(quarantine, indent=1) + "\n", "utf-8"
    )
    (folder / REPORT_JSON_FILE).write_text(
        json.dumps(payload, indent=1) + "\n", "utf-8"
    )
    (folder / REPORT_TEXT_FILE).write_text(
        _report_text(payload, report.quarantine, report.warnings), "utf-8"
    )


def prepare_site_cache(
    manifest_path: Path,
    cache_dir: Path,
    spec: PreprocessSpec,
    *,
    default_view: View | None = None,
    workers: int = 1,
    force: bool = False,
    progress: bool = False,
) -> PrepareReport:
    """Validate a manifest, then read, preprocess and cache every scan.

    Parameters
    ----------
    manifest_path
        The site manifest (CSV).
    cache_dir
        Where the cache goes; replaced atomically when rebuilt.
    spec
        Preprocessing specification.
    default_view
        View for single-view files that name none (site config).
    workers
        Processes reading and preprocessing scans; the result does not depend
        on it.
    force
        Rebuild even when an up-to-date cache exists.
    progress
        Show a progress bar.

    Returns
    -------
    PrepareReport
        Counts, quarantined scans, speed, content hash, and whether the
        existing cache was reused.

    Raises
    ------
    ManifestError
        The manifest is invalid; nothing was read or written.
    CacheError
        ``cache_dir`` is another kind of folder.
    PrepareError
        More than :data:`MAX_WORKER_DEATHS` scans killed their worker; the
        staging folder is removed and any previous cache kept.
    """
    start = time.perf_counter()
    manifest = read_manifest(manifest_path)
    cache_dir = Path(cache_dir).resolve()
    _check_target(cache_dir)
    view_name = default_view.value if default_view else "none"
    existing = None if force else _reusable(cache_dir, manifest, spec, view_name)
    if existing is not None:
        cache, quarantine, kept_warnings = existing
        logger.info("%s is up to date; reusing it", cache_dir)
        return PrepareReport(
            n_rows=len(manifest.rows),
            n_cached=len(cache),
            n_quarantined=len(quarantine),
            quarantine=quarantine,
            elapsed_s=time.perf_counter() - start,
            scans_per_s=0.0,
            cache_dir=cache_dir,
            content_hash=cache.content_hash,
            reused=True,
            warnings=kept_warnings,
        )
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = cache_dir.with_name(f".{cache_dir.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    writer = CacheWriter(staging, len(manifest.rows), spec.output_shape)
    manifest_dir = manifest.path.resolve().parent
    tasks = [_Task(row, spec, default_view, manifest_dir) for row in manifest.rows]
    try:
        quarantined, scan_warnings = _stream_scans(writer, tasks, workers, progress)
        content_hash = writer.finish(
            {
                "spec": asdict(spec),
                "spec_fingerprint": spec.fingerprint(),
                "manifest_path": str(manifest.path),
                "manifest_sha256": manifest.sha256,
                "default_view": view_name,
                "fedbone_version": fedbone.__version__,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        )
        elapsed = time.perf_counter() - start
        report = PrepareReport(
            n_rows=len(tasks),
            n_cached=len(writer.records),
            n_quarantined=len(quarantined),
            quarantine=tuple(quarantined),
            elapsed_s=elapsed,
            scans_per_s=len(tasks) / elapsed if elapsed > 0 else 0.0,
            cache_dir=cache_dir,
            content_hash=content_hash,
            reused=False,
            warnings=tuple(scan_warnings),
        )
        _write_reports(staging, report, writer.records)
    except BaseException:
        writer.abort()
        raise
    install_cache(staging, cache_dir)
    logger.info(
        "prepared %s: %d cached, %d quarantined",
        cache_dir,
        report.n_cached,
        report.n_quarantined,
    )
    return report
