"""A site's prepared cache: the only thing local training reads.

Layout of a cache folder (written by :func:`fedbone.data.prepare.prepare_site_cache`)::

    images.f16            raw float16, C order, N x H x W, in index order
    index.json            one record per image (labels, split, provenance)
    meta.json             spec, identity (manifest sha256, spec fingerprint),
                          shape, dtype, fedbone version, time, content hash
    quarantine.json       every scan that could not be cached, with its reasons
    prepare-report.json   counts, timings
    prepare-report.txt    the same for people

The **content hash** is the sha256 of the image bytes (in order) followed by the
canonical index JSON (sorted keys, no spaces, ASCII). A cache is written into a
staging folder and renamed into place only when complete, so a folder with a
``meta.json`` is a finished cache; anything else means re-running
``fedbone prepare``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from fedbone.data.spec import PreprocessSpec, ViewMode
from fedbone.errors import CacheError

__all__ = [
    "CACHE_FORMAT",
    "IMAGES_FILE",
    "INDEX_FILE",
    "META_FILE",
    "QUARANTINE_FILE",
    "REPORT_JSON_FILE",
    "REPORT_TEXT_FILE",
    "CacheRecord",
    "CacheWriter",
    "SiteCache",
    "SourceView",
    "canonical_index_bytes",
    "install_cache",
    "read_meta",
]

CACHE_FORMAT = 1
IMAGES_FILE = "images.f16"
INDEX_FILE = "index.json"
META_FILE = "meta.json"
QUARANTINE_FILE = "quarantine.json"
REPORT_JSON_FILE = "prepare-report.json"
REPORT_TEXT_FILE = "prepare-report.txt"
_DTYPE = np.dtype("<f2")
_TASKS = ("bm", "ca")
_SPLITS = ("train", "val", "test")
_HASH_CHUNK_IMAGES = 64
_RERUN = "run `fedbone prepare` for this site again"
# numpy's float16 -> float32 cast is scalar code (~0.8 ms per 1024 x 256 image);
# a lookup over all 65,536 bit patterns is exact and about three times faster.
_FLOAT16_TO_FLOAT32 = (
    np.arange(2**16, dtype=np.uint16).view(np.float16).astype(np.float32)
)
_FLOAT16_TO_FLOAT32.flags.writeable = False


@dataclass(frozen=True)
class SourceView:
    """Where one view on the canvas came from (kept for audit)."""

    view: str
    total_counts: float
    spacing_mm: tuple[float, float]
    patient_orientation: tuple[str, str] | None
    source: str
    cropped_fraction: float


@dataclass(frozen=True)
class CacheRecord:
    """Everything known about one cached image, except its pixels.

    Manifest values win; empty ``age``, ``sex``, ``study_date``, ``tracer`` and
    ``scanner`` are filled from the DICOM header when it has them.
    ``label_bm``/``label_ca`` are ``None`` when unknown.
    """

    scan_id: str
    patient_id: str
    split: str
    label_bm: int | None
    label_ca: int | None
    perugini_grade: int | None
    age: float | None
    sex: str | None
    study_date: str | None
    tracer: str | None
    scanner: str | None
    endpoints: dict[str, tuple[float | None, int | None]]
    scan_file: str
    row_number: int
    views: tuple[SourceView, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict (tuples become lists)."""
        record = asdict(self)
        record["endpoints"] = {k: list(v) for k, v in self.endpoints.items()}
        return record

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CacheRecord:
        """Rebuild a record written by :meth:`to_json`."""
        views = tuple(
            SourceView(
                view=v["view"],
                total_counts=v["total_counts"],
                spacing_mm=(v["spacing_mm"][0], v["spacing_mm"][1]),
                patient_orientation=(
                    None
                    if v["patient_orientation"] is None
                    else (v["patient_orientation"][0], v["patient_orientation"][1])
                ),
                source=v["source"],
                cropped_fraction=v["cropped_fraction"],
            )
            for v in data["views"]
        )
        endpoints = {k: (v[0], v[1]) for k, v in data["endpoints"].items()}
        return cls(**{**data, "views": views, "endpoints": endpoints})


def canonical_index_bytes(records: list[CacheRecord]) -> bytes:
    """Serialise records the one way the content hash uses."""
    return json.dumps(
        [record.to_json() for record in records],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    ).encode("ascii")


def _write_json(path: Path, payload: object) -> None:
    path.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n", "utf-8")


class CacheWriter:
    """Streams images into a staging folder, hashing as it goes.

    Memory stays bounded: each image is written and hashed, then dropped. The
    image file is preallocated for ``capacity`` images and truncated to the
    number actually written by :meth:`finish`.

    Parameters
    ----------
    staging_dir
        Empty or absent folder to write into.
    capacity
        Upper bound on the number of images (the manifest's row count).
    image_shape
        ``(H, W)`` of every image.
    """

    def __init__(
        self, staging_dir: Path, capacity: int, image_shape: tuple[int, int]
    ) -> None:
        staging_dir.mkdir(parents=True)
        self.staging_dir = staging_dir
        self.image_shape = image_shape
        self.records: list[CacheRecord] = []
        self._hasher = hashlib.sha256()
        self._image_bytes = image_shape[0] * image_shape[1] * _DTYPE.itemsize
        self._file: BinaryIO = open(staging_dir / IMAGES_FILE, "wb")  # noqa: SIM115
        self._file.truncate(capacity * self._image_bytes)

    def append(self, image: np.ndarray, record: CacheRecord) -> None:
        """Write one image (any float dtype, shape ``image_shape``) and its record."""
        if image.shape != self.image_shape:
            raise ValueError(f"image shape {image.shape} != {self.image_shape}")
        data = np.ascontiguousarray(image, dtype=_DTYPE).data
        self._file.write(data)
        self._hasher.update(data)
        self.records.append(record)

    def finish(self, meta: dict[str, Any]) -> str:
        """Write index and meta (``meta`` plus shape and hash); return the hash."""
        self._file.truncate(len(self.records) * self._image_bytes)
        self._file.close()
        index_bytes = canonical_index_bytes(self.records)
        self._hasher.update(index_bytes)
        content_hash = self._hasher.hexdigest()
        _write_json(self.staging_dir / INDEX_FILE, [r.to_json() for r in self.records])
        _write_json(
            self.staging_dir / META_FILE,
            {
                **meta,
                "format": CACHE_FORMAT,
                "shape": [len(self.records), *self.image_shape],
                "dtype": _DTYPE.str,
                "content_hash": content_hash,
            },
        )
        return content_hash

    def abort(self) -> None:
        """Close and delete the staging folder."""
        self._file.close()
        shutil.rmtree(self.staging_dir, ignore_errors=True)


def install_cache(staging_dir: Path, cache_dir: Path) -> None:
    """Move a finished staging folder to ``cache_dir``, replacing an old cache."""
    retired = cache_dir.with_name(f".{cache_dir.name}.old")
    shutil.rmtree(retired, ignore_errors=True)
    if cache_dir.exists():
        cache_dir.rename(retired)
    staging_dir.rename(cache_dir)
    shutil.rmtree(retired, ignore_errors=True)


def read_meta(cache_dir: Path) -> dict[str, Any]:
    """Return a finished cache's ``meta.json``; raise CacheError if absent."""
    meta_path = Path(cache_dir) / META_FILE
    if not meta_path.is_file():
        state = "is incomplete" if Path(cache_dir).exists() else "does not exist"
        raise CacheError(f"the prepared cache {cache_dir} {state}; {_RERUN}")
    try:
        meta: dict[str, Any] = json.loads(meta_path.read_text("utf-8"))
    except (OSError, ValueError) as error:
        raise CacheError(f"{meta_path} cannot be read ({error}); {_RERUN}") from error
    if meta.get("format") != CACHE_FORMAT:
        raise CacheError(
            f"{cache_dir} has cache format {meta.get('format')}, this fedbone "
            f"reads format {CACHE_FORMAT}; {_RERUN}"
        )
    return meta


def _spec_from_meta(data: dict[str, Any]) -> PreprocessSpec:
    return PreprocessSpec(**{**data, "views": ViewMode(data["views"])})


class SiteCache:
    """Read side of a prepared cache: images, their records, split and labels.

    Open with :meth:`open`. ``images`` is a read-only float16 memory map of shape
    ``(N, H, W)``; indexing the cache returns a float32 copy of one image.
    """

    def __init__(
        self,
        cache_dir: Path,
        meta: dict[str, Any],
        index: list[CacheRecord],
    ) -> None:
        self.cache_dir = cache_dir
        self.meta = meta
        self.index = index
        self.spec = _spec_from_meta(meta["spec"])
        self.content_hash: str = meta["content_hash"]
        self.images = self._map_images()
        self._bits = np.asarray(self.images).view(np.uint16)

    @classmethod
    def open(cls, cache_dir: str | Path, *, verify: bool = False) -> SiteCache:
        """Open a finished cache.

        Parameters
        ----------
        cache_dir
            The cache folder.
        verify
            Recompute the content hash (reads every byte) and compare.

        Raises
        ------
        CacheError
            When the cache is missing, incomplete or fails its hash check.
        """
        folder = Path(cache_dir)
        meta = read_meta(folder)
        try:
            raw = json.loads((folder / INDEX_FILE).read_text("utf-8"))
            index = [CacheRecord.from_json(item) for item in raw]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise CacheError(
                f"{folder / INDEX_FILE} is missing or damaged ({error}); {_RERUN}"
            ) from error
        count, height, width = meta["shape"]
        expected = count * height * width * _DTYPE.itemsize
        images = folder / IMAGES_FILE
        actual = images.stat().st_size if images.is_file() else -1
        if len(index) != count or actual != expected:
            raise CacheError(
                f"{folder} is incomplete: {len(index)} index records and "
                f"{actual} image bytes for {count} images of {height}x{width} "
                f"({expected} bytes); {_RERUN}"
            )
        cache = cls(folder, meta, index)
        if verify:
            cache.verify()
        return cache

    def _map_images(self) -> np.ndarray:
        shape = tuple(self.meta["shape"])
        if shape[0] == 0:
            empty = np.zeros(shape, dtype=_DTYPE)
            empty.flags.writeable = False
            return empty
        return np.memmap(
            self.cache_dir / IMAGES_FILE, dtype=_DTYPE, mode="r", shape=shape
        )

    def compute_content_hash(self) -> str:
        """Recompute the content hash from the files on disk."""
        hasher = hashlib.sha256()
        for start in range(0, len(self), _HASH_CHUNK_IMAGES):
            chunk = np.ascontiguousarray(
                self.images[start : start + _HASH_CHUNK_IMAGES]
            )
            hasher.update(chunk.data)
        hasher.update(canonical_index_bytes(self.index))
        return hasher.hexdigest()

    def verify(self) -> None:
        """Raise CacheError unless the files match the recorded content hash."""
        actual = self.compute_content_hash()
        if actual != self.content_hash:
            raise CacheError(
                f"{self.cache_dir} fails its hash check (recorded "
                f"{self.content_hash[:16]}, found {actual[:16]}): the images or "
                "index changed after preparation; "
                "run `fedbone prepare --force` for this site"
            )

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> np.ndarray:
        """Return image ``i`` as a float32 ``(H, W)`` array (a copy)."""
        return np.take(_FLOAT16_TO_FLOAT32, self._bits[i])

    def indices(self, split: str) -> np.ndarray:
        """Return the positions of the images in ``split`` (train, val, test)."""
        if split not in _SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {_SPLITS}")
        return np.array(
            [i for i, record in enumerate(self.index) if record.split == split],
            dtype=np.int64,
        )

    def labels(self, task: str) -> np.ndarray:
        """Return the ``bm`` or ``ca`` label of every image, ``-1`` when unknown."""
        if task not in _TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {_TASKS}")
        values = (getattr(record, f"label_{task}") for record in self.index)
        return np.array([-1 if v is None else v for v in values], dtype=np.int64)

    def __getstate__(self) -> dict[str, Any]:
        # A memmap pickles as a full in-memory copy; data-loader workers must
        # map the file themselves instead.
        state = dict(self.__dict__)
        del state["images"], state["_bits"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.images = self._map_images()
        self._bits = np.asarray(self.images).view(np.uint16)
