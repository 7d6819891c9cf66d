"""A site's training and evaluation pairs: fast (or low-count) and standard scans.

Every scan of the prepared cache is read from its DICOM file again, because
the cache holds normalised images and the noise of a fast scan must be the
physics' (Qi et al. 2024; Ito et al. in the review):

- **Simulated** levels (``"2x"``, ``"3x"``, ``"300k"``): each view's raw counts
  are thinned (:func:`~fedbone.enhance.thinning.binomial_thin`) *before*
  preprocessing, seeded by the seed, the scan and the level, and the thinned
  copy is placed on the canvas exactly where the standard went
  (:func:`~fedbone.data.preprocess.counts_on_canvas` with its placements).
- **Real** pairs, from the site's fast-scan manifest: the fast acquisition is
  put on the canvas by the canvas rule, registered to the standard view by
  view (:func:`~fedbone.enhance.registration.register_translation`), and its
  level is named ``"<speed>x-real"``.

Images stay counts (not normalised). ``speed`` is the standard's counts over
the fast image's: ``1/p`` for thinning, the measured ratio of the two
acquisitions' total counts for real pairs, so ``fast * speed`` is on the
standard's count scale (:mod:`fedbone.enhance.scaling`).

A scan (or a fast acquisition) that cannot be read or thinned is left out and
listed in :attr:`PairSet.skipped` with the reason; it never stops the site.
:func:`load_or_build_pair_set` keeps the pairs in one ``.npz`` per site,
rebuilt whenever the cache, the levels, the seed or the fast manifest change.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from fedbone.data.cache import CacheRecord, SiteCache
from fedbone.data.dicom_read import read_nm_scan
from fedbone.data.preprocess import CountsCanvas, counts_on_canvas
from fedbone.data.scan import NMScan, View
from fedbone.data.spec import PreprocessSpec
from fedbone.enhance.errors import EnhanceError
from fedbone.enhance.fast_manifest import (
    FastScanRow,
    fast_manifest_sha256,
    read_fast_manifest,
)
from fedbone.enhance.registration import apply_shift, register_translation
from fedbone.enhance.thinning import CountLevel, binomial_thin
from fedbone.errors import Problem, ProblemsError

__all__ = [
    "PAIR_SET_FILE",
    "REAL",
    "SIMULATED",
    "PairSet",
    "build_pair_set",
    "load_or_build_pair_set",
]

logger = logging.getLogger(__name__)

PAIR_SET_FILE = "pair-set.npz"
SIMULATED = "simulated"
REAL = "real"
_FORMAT = 1
# Largest registration shift searched, in canvas pixels per axis.
_MAX_SHIFT_PX = 8


@dataclass(frozen=True)
class PairSet:
    """Standard scans and, per level, the fast images paired with them.

    Attributes
    ----------
    scan_ids
        The ``N`` standard scans, in cache order (unreadable ones left out).
    splits
        ``(N,)`` split of each scan (``train``, ``val``, ``test``).
    label_bm, label_ca
        ``(N,)`` int8 labels, ``-1`` where unknown.
    standard
        ``(N, H, W)`` float32 counts on the canvas.
    fast
        Per level, ``(M, H, W)`` float32 counts of the fast images.
    rows
        Per level, ``(M,)`` index of each fast image's standard scan.
    speed
        Per level, ``(M,)`` float32 standard counts over fast counts.
    source
        Per level, ``"simulated"`` or ``"real"``.
    skipped
        ``(scan_id, reason)`` of every scan or pair left out.
    """

    scan_ids: tuple[str, ...]
    splits: np.ndarray
    label_bm: np.ndarray
    label_ca: np.ndarray
    standard: np.ndarray
    fast: dict[str, np.ndarray]
    rows: dict[str, np.ndarray]
    speed: dict[str, np.ndarray]
    source: dict[str, str]
    skipped: tuple[tuple[str, str], ...] = ()

    def indices(self, level: str, split: str) -> np.ndarray:
        """Return the positions in ``fast[level]`` of the pairs in ``split``.

        Raises
        ------
        EnhanceError
            ``unknown-level`` for a level the set does not hold.
        """
        if level not in self.fast:
            raise EnhanceError(
                "pair set",
                [
                    Problem(
                        "unknown-level",
                        f"no level {level!r}; the set holds "
                        f"{', '.join(self.fast) or 'none'}",
                    )
                ],
            )
        return np.flatnonzero(self.splits[self.rows[level]] == split)


@dataclass
class _Level:
    """The pairs of one level as they are collected."""

    source: str
    images: list[np.ndarray]
    rows: list[int]
    speeds: list[float]


def _reason(error: ProblemsError) -> str:
    return "; ".join(str(problem) for problem in error.problems)


def _scan_path(record: CacheRecord, manifest_dir: Path) -> Path:
    """Resolve the scan's file as ``prepare`` did (against the manifest folder)."""
    path = Path(record.scan_file)
    return path if path.is_absolute() else manifest_dir / path


def _default_view(cache: SiteCache) -> View | None:
    name = cache.meta.get("default_view")
    return None if name in (None, "none") else View(name)


def _thinning_rng(seed: int, scan_id: str, level: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}\0{scan_id}\0{level}".encode()).digest()
    return np.random.default_rng(np.frombuffer(digest, dtype=np.uint32))


def _thinned(
    scan: NMScan, views: Sequence[View], level: CountLevel, rng: np.random.Generator
) -> tuple[NMScan, float]:
    """Return the scan with ``views`` thinned to ``level``, and its speed."""
    thinned = dict(scan.views)
    total = kept = 0.0
    for view in views:
        original = scan.views[view]
        p = level.probability(original.total_counts)
        thinned[view] = replace(original, counts=binomial_thin(original.counts, p, rng))
        total += original.total_counts
        kept += p * original.total_counts
    return replace(scan, views=thinned), total / kept


def _real_pair(
    row: FastScanRow,
    standard: tuple[NMScan, CountsCanvas],
    spec: PreprocessSpec,
    default_view: View | None,
) -> tuple[np.ndarray, float]:
    """Put a real fast acquisition on the canvas, register it; return its speed too."""
    standard_scan, standard_canvas = standard
    fast_scan = read_nm_scan(row.fast_scan_file, default_view=default_view)
    fast = counts_on_canvas(fast_scan, spec).image
    views = tuple(standard_canvas.placements)
    standard_total = sum(standard_scan.views[v].total_counts for v in views)
    fast_total = sum(fast_scan.views[v].total_counts for v in views)
    if not 0 < fast_total <= standard_total:
        raise EnhanceError(
            row.fast_scan_file,
            [
                Problem(
                    "count-mismatch",
                    f"the fast acquisition holds {fast_total:.0f} counts, the "
                    f"standard {standard_total:.0f}; a fast scan holds fewer: "
                    "check the row of the fast manifest",
                    f"row {row.row_number}",
                )
            ],
        )
    width = spec.canvas_width
    aligned = np.zeros_like(fast)
    for slot in range(len(views)):
        columns = slice(slot * width, (slot + 1) * width)
        shift = register_translation(
            standard_canvas.image[:, columns], fast[:, columns], _MAX_SHIFT_PX
        )
        aligned[:, columns] = apply_shift(fast[:, columns], shift)
    return aligned, standard_total / fast_total


class _Collector:
    """Gathers the standards and the pairs of every level while scans are read."""

    def __init__(
        self, levels: Sequence[CountLevel], real_rows: Sequence[FastScanRow]
    ) -> None:
        self.levels = {level.name: _Level(SIMULATED, [], [], []) for level in levels}
        for row in sorted(real_rows, key=lambda r: r.speed):
            self.levels.setdefault(row.level, _Level(REAL, [], [], []))
        self.positions: list[int] = []
        self.standards: list[np.ndarray] = []
        self.skipped: list[tuple[str, str]] = []

    def add_standard(self, position: int, image: np.ndarray) -> int:
        self.positions.append(position)
        self.standards.append(image)
        return len(self.standards) - 1

    def add_pair(self, level: str, image: np.ndarray, row: int, speed: float) -> None:
        pairs = self.levels[level]
        pairs.images.append(image)
        pairs.rows.append(row)
        pairs.speeds.append(speed)

    def skip(self, scan_id: str, what: str, error: ProblemsError | str) -> None:
        reason = error if isinstance(error, str) else _reason(error)
        self.skipped.append((scan_id, f"{what}: {reason}"))

    def pair_set(self, cache: SiteCache) -> PairSet:
        # Real levels without a single pair are left out: nothing to train on.
        levels = {
            name: pairs
            for name, pairs in self.levels.items()
            if pairs.source == SIMULATED or pairs.rows
        }
        shape = cache.spec.output_shape
        kept = np.array(self.positions, dtype=np.int64)
        return PairSet(
            scan_ids=tuple(cache.index[i].scan_id for i in self.positions),
            splits=np.array([cache.index[i].split for i in self.positions], dtype=str),
            label_bm=cache.labels("bm")[kept].astype(np.int8),
            label_ca=cache.labels("ca")[kept].astype(np.int8),
            standard=_stack(self.standards, shape),
            fast={name: _stack(p.images, shape) for name, p in levels.items()},
            rows={name: np.array(p.rows, dtype=np.int64) for name, p in levels.items()},
            speed={
                name: np.array(p.speeds, dtype=np.float32) for name, p in levels.items()
            },
            source={name: p.source for name, p in levels.items()},
            skipped=tuple(self.skipped),
        )


def _stack(images: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    if not images:
        return np.zeros((0, *shape), dtype=np.float32)
    return np.stack(images).astype(np.float32, copy=False)


def _check_levels(levels: Sequence[CountLevel]) -> None:
    names = [level.name for level in levels]
    EnhanceError.raise_if_any(
        "pair levels",
        [
            Problem("duplicate-level", f"level {name!r} is listed more than once")
            for name in sorted({n for n in names if names.count(n) > 1})
        ],
    )


def build_pair_set(
    cache: SiteCache,
    levels: Sequence[CountLevel],
    *,
    seed: int,
    fast_manifest: Path | None,
) -> PairSet:
    """Read a site's scans again and make its fast/standard pairs.

    Parameters
    ----------
    cache
        The prepared cache: which scans, their splits, labels and spec. Scan
        files are resolved against the folder of the manifest it was
        prepared from, as ``fedbone prepare`` resolved them.
    levels
        Simulated levels, each thinned from every scan.
    seed
        Seed of the thinning (with the scan id and the level name).
    fast_manifest
        The site's real fast acquisitions (``None``: none).

    Returns
    -------
    PairSet
        Simulated levels in the order given (possibly empty), then a
        ``"<speed>x-real"`` level per speed with at least one real pair.

    Raises
    ------
    EnhanceError
        ``duplicate-level`` when two levels share a name.
    ManifestError
        When the fast manifest is unreadable or invalid.
    """
    _check_levels(levels)
    real_rows = read_fast_manifest(fast_manifest) if fast_manifest else []
    fast_by_scan: dict[str, list[FastScanRow]] = {}
    for fast_row in real_rows:
        fast_by_scan.setdefault(fast_row.scan_id, []).append(fast_row)
    manifest_dir = Path(cache.meta["manifest_path"]).parent
    default_view = _default_view(cache)
    spec = cache.spec
    collector = _Collector(levels, real_rows)
    for position, record in enumerate(cache.index):
        scan_id = record.scan_id
        fast_rows = fast_by_scan.pop(scan_id, [])
        try:
            path = _scan_path(record, manifest_dir)
            scan = read_nm_scan(path, default_view=default_view)
            canvas = counts_on_canvas(scan, spec)
        except ProblemsError as error:
            collector.skip(scan_id, "standard scan", error)
            continue
        standard_row = collector.add_standard(position, canvas.image)
        views = tuple(canvas.placements)
        for level in levels:
            rng = _thinning_rng(seed, scan_id, level.name)
            try:
                thinned, speed = _thinned(scan, views, level, rng)
                image = counts_on_canvas(thinned, spec, placements=canvas.placements)
            except ProblemsError as error:
                collector.skip(scan_id, level.name, error)
                continue
            collector.add_pair(level.name, image.image, standard_row, speed)
        for fast_row in fast_rows:
            try:
                real, speed = _real_pair(fast_row, (scan, canvas), spec, default_view)
            except ProblemsError as error:
                collector.skip(scan_id, fast_row.level, error)
                continue
            collector.add_pair(fast_row.level, real, standard_row, speed)
    for scan_id, rows in fast_by_scan.items():
        for fast_row in rows:
            collector.skip(
                scan_id,
                fast_row.level,
                f"the prepared cache has no scan {scan_id!r} (not in the site "
                "manifest, or quarantined by prepare)",
            )
    pair_set = collector.pair_set(cache)
    logger.info(
        "pairs: %d standard scans; %s; %d left out",
        len(pair_set.scan_ids),
        ", ".join(f"{name} {len(rows)}" for name, rows in pair_set.rows.items()),
        len(pair_set.skipped),
    )
    return pair_set


def _pair_set_key(
    cache: SiteCache,
    levels: Sequence[CountLevel],
    seed: int,
    fast_manifest: Path | None,
) -> str:
    payload = {
        "format": _FORMAT,
        "cache": cache.content_hash,
        "levels": [[lv.name, lv.fraction, lv.total_kcounts] for lv in levels],
        "seed": seed,
        "fast-manifest": fast_manifest_sha256(fast_manifest) if fast_manifest else None,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _save(path: Path, pair_set: PairSet, key: str) -> None:
    names = list(pair_set.fast)
    meta = {
        "key": key,
        "levels": names,
        "source": pair_set.source,
        "skipped": [list(entry) for entry in pair_set.skipped],
    }
    arrays: dict[str, np.ndarray] = {
        "meta": np.array(json.dumps(meta)),
        "scan_ids": np.array(pair_set.scan_ids, dtype=str),
        "splits": pair_set.splits,
        "label_bm": pair_set.label_bm,
        "label_ca": pair_set.label_ca,
        "standard": pair_set.standard,
    }
    for i, name in enumerate(names):
        arrays[f"fast_{i}"] = pair_set.fast[name]
        arrays[f"rows_{i}"] = pair_set.rows[name]
        arrays[f"speed_{i}"] = pair_set.speed[name]
    # Written beside the target and renamed into place: a reader never sees
    # half a file, and two writers do not mix theirs.
    with tempfile.NamedTemporaryFile(
        dir=path.parent, prefix=f".{path.name}.", suffix=".partial", delete=False
    ) as handle:
        np.savez(handle, allow_pickle=False, **arrays)
    os.replace(handle.name, path)


def _load(path: Path, key: str) -> PairSet | None:
    """Return the pair set saved at ``path`` if made for ``key``, else ``None``."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta: dict[str, Any] = json.loads(str(data["meta"][()]))
            if meta.get("key") != key:
                return None
            names = meta["levels"]
            return PairSet(
                scan_ids=tuple(str(s) for s in data["scan_ids"]),
                splits=data["splits"],
                label_bm=data["label_bm"],
                label_ca=data["label_ca"],
                standard=data["standard"],
                fast={name: data[f"fast_{i}"] for i, name in enumerate(names)},
                rows={name: data[f"rows_{i}"] for i, name in enumerate(names)},
                speed={name: data[f"speed_{i}"] for i, name in enumerate(names)},
                source={name: str(meta["source"][name]) for name in names},
                skipped=tuple((str(a), str(b)) for a, b in meta["skipped"]),
            )
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
        return None  # absent or damaged: rebuilt


def load_or_build_pair_set(
    cache: SiteCache,
    levels: Sequence[CountLevel],
    *,
    seed: int,
    fast_manifest: Path | None,
    folder: Path,
) -> PairSet:
    """Return the site's pair set, from ``folder`` when it is up to date.

    Parameters
    ----------
    cache
        The prepared cache.
    levels
        Simulated levels.
    seed
        Seed of the thinning.
    fast_manifest
        The site's real fast acquisitions (``None``: none).
    folder
        Where ``pair-set.npz`` is kept (created).

    Returns
    -------
    PairSet
        Read back when the saved one was made from the same cache content
        hash, levels, seed and fast-manifest bytes; otherwise built with
        :func:`build_pair_set` and saved, replacing the old file.
    """
    folder = Path(folder)
    path = folder / PAIR_SET_FILE
    key = _pair_set_key(cache, levels, seed, fast_manifest)
    saved = _load(path, key)
    if saved is not None:
        logger.info("pairs: reusing %s", path)
        return saved
    pair_set = build_pair_set(cache, levels, seed=seed, fast_manifest=fast_manifest)
    folder.mkdir(parents=True, exist_ok=True)
    _save(path, pair_set, key)
    return pair_set
