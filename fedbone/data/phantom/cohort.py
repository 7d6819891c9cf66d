"""Write a site's phantom cohort: DICOM files, manifest and previews.

The cohort is planned in the parent process (:func:`~.plan.plan_site_cohort`);
each scan is then rendered and written from its own seed, in this process or a
pool of workers fed in chunks (results are a few numbers per scan, so memory
stays flat however large the cohort). The manifest follows the site manifest
schema, with paths relative to the manifest.

With ``fast_speeds`` every visit is also acquired at those table speeds
(:func:`~.synthesize.fast_acquisition`), written next to the standard scan and
listed in ``fast_scans.csv`` (the schema :mod:`fedbone.enhance.fast_manifest`
reads), so sites exercise training on real fast/standard pairs.
"""

from __future__ import annotations

import csv
import logging
import multiprocessing
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from fedbone.data.dicom_write import NMHeader, write_nm_whole_body
from fedbone.data.manifest import OPTIONAL_COLUMNS, REQUIRED_COLUMNS
from fedbone.data.phantom.plan import (
    ScanPlan,
    fast_seed_sequence,
    plan_site_cohort,
    scan_seed_sequence,
)
from fedbone.data.phantom.synthesize import (
    SyntheticScan,
    fast_acquisition,
    synthesize_views,
)
from fedbone.data.scan import View

__all__ = [
    "FAST_MANIFEST_NAME",
    "MANIFEST_COLUMNS",
    "CohortSummary",
    "fast_scan_file",
    "generate_site_cohort",
    "render_planned_scan",
    "write_preview_png",
]

logger = logging.getLogger(__name__)

#: Manifest columns always written, in order; outcome columns follow.
MANIFEST_COLUMNS = (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)
#: The list of fast acquisitions, next to ``manifest.csv``.
FAST_MANIFEST_NAME = "fast_scans.csv"
# The columns fedbone.enhance.fast_manifest reads (data may not import enhance).
_FAST_MANIFEST_COLUMNS = ("scan_id", "fast_scan_file", "speed")
_CHUNK = 8


@dataclass(frozen=True)
class CohortSummary:
    """What :func:`generate_site_cohort` wrote.

    Attributes
    ----------
    site
        Site profile name.
    out_dir
        Cohort folder.
    manifest
        Path of ``manifest.csv``.
    n_scans, n_patients
        Files written and distinct patients.
    by_split
        Scans per split.
    bm_positive, ca_positive
        Positive scans per split (``ca_positive`` empty where CA is unknown).
    perugini_grades
        Scans per true Perugini grade.
    has_outcomes
        Whether follow-up columns were written.
    previews
        PNG files written.
    elapsed_s
        Wall time of the whole generation.
    fast_manifest
        Path of ``fast_scans.csv`` when fast acquisitions were written.
    """

    site: str
    out_dir: Path
    manifest: Path
    n_scans: int
    n_patients: int
    by_split: dict[str, int]
    bm_positive: dict[str, int]
    ca_positive: dict[str, int]
    perugini_grades: dict[int, int]
    has_outcomes: bool
    previews: tuple[Path, ...]
    elapsed_s: float
    fast_manifest: Path | None = None


def render_planned_scan(plan: ScanPlan) -> SyntheticScan:
    """Render the views of a planned scan in memory (nothing written)."""
    rng = np.random.default_rng(scan_seed_sequence(plan.seed, plan.site, plan.index))
    return synthesize_views(
        rng,
        scanner=plan.scanner,
        female=plan.female,
        age_years=plan.age_years,
        perugini_grade=plan.perugini_grade,
        n_metastases=plan.n_metastases,
    )


def _header(plan: ScanPlan) -> NMHeader:
    scanner = plan.scanner
    length_cm = scanner.shape[0] * scanner.spacing_mm / 10.0
    known = plan.demographics_known
    return NMHeader(
        patient_id=plan.patient_id,
        patient_age_years=plan.age_years if known else None,
        patient_sex=("F" if plan.female else "M") if known else None,
        study_date=plan.study_date,
        manufacturer=scanner.manufacturer,
        model=scanner.model,
        tracer=plan.tracer,
        acquisition_duration_s=round(length_cm / scanner.scan_velocity_cm_min * 60, 1),
        scan_velocity_cm_min=scanner.scan_velocity_cm_min,
        institution=plan.institution,
        uid_seed=f"fedbone-phantom/{plan.seed}/{plan.scan_id}",
    )


def _fast_header(plan: ScanPlan, speed: int) -> NMHeader:
    """Return the standard header with the table ``speed`` times faster."""
    header = _header(plan)
    duration = header.acquisition_duration_s
    velocity = header.scan_velocity_cm_min
    return replace(
        header,
        acquisition_duration_s=None if duration is None else round(duration / speed, 1),
        scan_velocity_cm_min=None if velocity is None else velocity * speed,
        series_description=f"WB BONE {speed}X",
        uid_seed=f"{header.uid_seed}/fast{speed}x",
    )


def fast_scan_file(scan_id: str, speed: int) -> str:
    """Path of a fast acquisition's file, relative to the cohort folder."""
    return f"dicom/{scan_id}_fast{speed}x.dcm"


def write_preview_png(scan: SyntheticScan, path: Path) -> Path:
    """Save anterior | posterior side by side, each clipped at its 99.5th pct."""
    panels = []
    for view in (View.ANTERIOR, View.POSTERIOR):
        counts = scan.views[view].astype(np.float32)
        top = max(float(np.percentile(counts, 99.5)), 1.0)
        panels.append(np.clip(counts / top, 0.0, 1.0))
        panels.append(np.ones((counts.shape[0], 4), dtype=np.float32))
    image = np.concatenate(panels[:-1], axis=1)
    Image.fromarray((image * 255).astype(np.uint8)).save(path)
    return path


def _preview_name(plan: ScanPlan) -> str:
    ca = "" if plan.label_ca is None else f"_ca{plan.label_ca}"
    return f"{plan.scan_id}_bm{plan.label_bm}{ca}_perugini{plan.perugini_grade}.png"


def _write_scan(job: tuple[ScanPlan, str, tuple[int, ...]]) -> str | None:
    """Worker: render and write one scan; return its preview path, if any."""
    plan, out_dir, fast_speeds = job
    scan = render_planned_scan(plan)
    folder = Path(out_dir)
    write_nm_whole_body(
        folder / "dicom" / f"{plan.scan_id}.dcm",
        scan.views,
        scan.spacing_mm,
        _header(plan),
    )
    for speed in fast_speeds:
        rng = np.random.default_rng(
            fast_seed_sequence(plan.seed, plan.site, plan.index, speed)
        )
        fast = fast_acquisition(scan, speed, rng)
        write_nm_whole_body(
            folder / fast_scan_file(plan.scan_id, speed),
            fast.views,
            scan.spacing_mm,
            _fast_header(plan, speed),
        )
    if plan.preview:
        return str(write_preview_png(scan, folder / "previews" / _preview_name(plan)))
    return None


def _manifest_row(plan: ScanPlan) -> dict[str, str]:
    known = plan.demographics_known
    row = {
        "scan_id": plan.scan_id,
        "scan_file": f"dicom/{plan.scan_id}.dcm",
        "patient_id": plan.patient_id,
        "split": plan.split,
        "label_bm": str(plan.label_bm),
        "label_ca": "" if plan.label_ca is None else str(plan.label_ca),
        "perugini_grade": str(plan.perugini_grade) if plan.ca_known else "",
        "age": f"{plan.age_years:.1f}" if known else "",
        "sex": ("F" if plan.female else "M") if known else "",
        "study_date": plan.study_date.isoformat(),
        "tracer": plan.tracer,
        "scanner": plan.scanner.name,
    }
    for name, days, event in plan.outcomes or ():
        row[f"time_{name}_days"] = str(days)
        row[f"event_{name}"] = str(event)
    return row


def _write_manifest(plans: list[ScanPlan], path: Path) -> None:
    outcome_columns: list[str] = []
    for name, _, _ in plans[0].outcomes or ():
        outcome_columns += [f"time_{name}_days", f"event_{name}"]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(
            handle, fieldnames=[*MANIFEST_COLUMNS, *outcome_columns]
        )
        writer.writeheader()
        writer.writerows(_manifest_row(plan) for plan in plans)


def _write_fast_manifest(
    plans: list[ScanPlan], speeds: tuple[int, ...], path: Path
) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(_FAST_MANIFEST_COLUMNS)
        writer.writerows(
            (plan.scan_id, fast_scan_file(plan.scan_id, speed), str(speed))
            for plan in plans
            for speed in speeds
        )


def _check_fast_speeds(fast_speeds: tuple[int, ...]) -> tuple[int, ...]:
    speeds = tuple(fast_speeds)
    wrong = [s for s in speeds if isinstance(s, bool) or not isinstance(s, int)]
    if wrong or any(s < 2 for s in speeds) or len(set(speeds)) != len(speeds):
        raise ValueError(
            f"fast_speeds must be distinct whole numbers >= 2 (2 for a 2x "
            f"scan), got {fast_speeds!r}"
        )
    return speeds


def _run(
    jobs: list[tuple[ScanPlan, str, tuple[int, ...]]], workers: int
) -> Iterator[str | None]:
    if workers <= 1:
        yield from map(_write_scan, jobs)
        return
    # fork shares the already-imported modules; spawn where fork is unsafe.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with context.Pool(workers) as pool:
        yield from pool.imap(_write_scan, jobs, chunksize=_CHUNK)


def _count(plans: list[ScanPlan], positive: str) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for plan in plans:
        value = plan.label_bm if positive == "bm" else plan.label_ca
        if value is not None:
            counts[plan.split] += value
    return dict(counts)


def generate_site_cohort(
    site: str,
    out_dir: Path,
    *,
    scale: float = 0.01,
    min_scans: int = 20,
    seed: int = 0,
    workers: int = 1,
    outcomes: bool | None = None,
    previews: int = 4,
    progress: bool = False,
    test_only: bool | None = None,
    fast_speeds: tuple[int, ...] = (),
) -> CohortSummary:
    """Generate a phantom cohort for one site profile.

    Writes ``out_dir/dicom/<scan_id>.dcm`` (two-frame NM, uncompressed),
    ``out_dir/manifest.csv`` and ``out_dir/previews/*.png``; with
    ``fast_speeds`` also ``out_dir/dicom/<scan_id>_fast<k>x.dcm`` and
    ``out_dir/fast_scans.csv``.

    Parameters
    ----------
    site
        Profile name ``A``..``F``.
    out_dir
        Cohort folder (created).
    scale
        Fraction of the paper's cohort size.
    min_scans
        Floor on the number of scans.
    seed
        Same seed, same cohort: byte-identical pixels and UIDs.
    workers
        Processes; the result does not depend on it.
    outcomes
        Simulate follow-up; ``None`` follows the profile (site D only).
    previews
        Number of PNG previews (a BM case and a CA case first when present).
    progress
        Show a progress bar.
    test_only
        Every patient in ``test``; ``None`` follows the profile (C-F, the
        paper's external test sites). Otherwise 70/10/20 per patient.
    fast_speeds
        Table speeds (``k`` for a ``k``-times faster scan) at which every visit
        is acquired again: the same patient and tracer, ``1/k`` of the
        expected counts, independent Poisson noise, the patient up to
        :data:`~.synthesize.MAX_FAST_SHIFT_PX` native pixels off, the scan
        velocity ``k`` times the standard's in the header. Empty (the
        default): the cohort is exactly what it is without them.

    Returns
    -------
    CohortSummary
        Counts per split and label, and the time taken.
    """
    started = time.perf_counter()
    speeds = _check_fast_speeds(fast_speeds)
    out_dir = Path(out_dir)
    (out_dir / "dicom").mkdir(parents=True, exist_ok=True)
    if previews > 0:
        (out_dir / "previews").mkdir(exist_ok=True)
    plans = plan_site_cohort(
        site,
        scale=scale,
        min_scans=min_scans,
        seed=seed,
        outcomes=outcomes,
        test_only=test_only,
        previews=previews,
    )
    jobs = [(plan, str(out_dir), speeds) for plan in plans]
    results = _run(jobs, workers)
    if progress:
        from tqdm import tqdm

        results = iter(
            tqdm(results, total=len(jobs), desc=f"phantom site {site}", unit="scan")
        )
    written = tuple(Path(path) for path in results if path is not None)
    manifest = out_dir / "manifest.csv"
    _write_manifest(plans, manifest)
    fast_manifest = out_dir / FAST_MANIFEST_NAME if speeds else None
    if fast_manifest is not None:
        _write_fast_manifest(plans, speeds, fast_manifest)
    summary = CohortSummary(
        site=site,
        out_dir=out_dir,
        manifest=manifest,
        n_scans=len(plans),
        n_patients=len({plan.patient_id for plan in plans}),
        by_split=dict(Counter(plan.split for plan in plans)),
        bm_positive=_count(plans, "bm"),
        ca_positive=_count(plans, "ca") if plans[0].ca_known else {},
        perugini_grades=dict(Counter(plan.perugini_grade for plan in plans)),
        has_outcomes=plans[0].outcomes is not None,
        previews=written,
        elapsed_s=time.perf_counter() - started,
        fast_manifest=fast_manifest,
    )
    logger.info(
        "site %s: %d scans (%d patients) in %.1f s -> %s",
        site,
        summary.n_scans,
        summary.n_patients,
        summary.elapsed_s,
        out_dir,
    )
    return summary
