"""A blinded, randomised reader set: images under opaque ids, the key apart.

Haberl et al. (2025) showed readers real and synthetic scans mixed in one
randomised order, with nothing but the image to go on. A set folder holds::

    images/<id>.png   every image, 8-bit grayscale, under a random opaque id
    items.json        the ids in presentation order (and the task), no source,
                      no label: all the reading page is given
    key.json          id -> source (real/synthetic) and label; the page server
                      never serves it
    answers/          one file per reader (:mod:`fedbone.reader_study.answers`)

The ids come from :func:`secrets.token_hex`, so neither the order the images
were drawn in nor their source can be read from them. Real and synthetic
images are windowed the same way (each scaled by its own 99.5th percentile,
clipped, uptake dark) so that brightness is no tell. Everything stays in the
site's folder; nothing here is sent.
"""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from PIL import Image

from fedbone.errors import Problem, ProblemsError

__all__ = [
    "ANSWERS_DIR",
    "GROUPS",
    "IMAGES_DIR",
    "ITEMS_FILE",
    "KEY_FILE",
    "ImageStack",
    "ReaderSet",
    "ReaderStudyError",
    "load_item_ids",
    "load_key",
    "make_reader_set",
    "reader_set_from_site",
    "window_to_png",
]

ITEMS_FILE = "items.json"
KEY_FILE = "key.json"
IMAGES_DIR = "images"
ANSWERS_DIR = "answers"
GROUPS = ("real-positive", "real-negative", "synthetic-positive", "synthetic-negative")
"""The four groups drawn, ``<source>-<finding>``."""

_PERCENTILE = 99.5
_ID_BYTES = 8
_TASKS = ("bm", "ca")


class ReaderStudyError(ProblemsError, ValueError):
    """A reader set, answer or score that cannot be made, every problem listed."""

    kind = "reader study"


class ImageStack(Protocol):
    """Images addressable by position: an ``(N, H, W)`` array or a lazy view."""

    def __len__(self) -> int:
        """Return the number of images."""
        ...

    def __getitem__(self, index: int, /) -> Any:
        """Return image ``index`` as an ``(H, W)`` array."""
        ...


@dataclass(frozen=True)
class ReaderSet:
    """A written reader set.

    Parameters
    ----------
    folder
        The set folder.
    item_ids
        The ids in presentation order.
    counts
        Images drawn per group (:data:`GROUPS`).
    short_groups
        Groups that had fewer images than asked for (only with
        ``allow_fewer``): group -> images available, all of which were taken.
    """

    folder: Path
    item_ids: tuple[str, ...]
    counts: dict[str, int]
    short_groups: dict[str, int]


def window_to_png(image: npt.ArrayLike, path: Path) -> None:
    """Write one image as an 8-bit grayscale PNG, windowed on its own counts.

    The image is scaled by its own 99.5th percentile and clipped to [0, 1] (a
    few hot spots do not darken the rest), then inverted so that uptake is
    dark, as on a reading screen. A blank image stays white.

    Parameters
    ----------
    image
        ``(H, W)`` counts or normalised intensities, real or synthetic alike.
    path
        The PNG to write.
    """
    pixels = np.nan_to_num(np.asarray(image, dtype=np.float32))
    top = float(np.percentile(pixels, _PERCENTILE))
    scaled = np.clip(pixels / top, 0.0, 1.0) if top > 0 else np.zeros_like(pixels)
    gray = np.round(255 * (1.0 - scaled)).astype(np.uint8)
    Image.fromarray(gray, mode="L").save(path, format="PNG")


def _binary_labels(
    labels: npt.ArrayLike, size: int, what: str, problems: list[Problem]
) -> npt.NDArray[np.int64]:
    array = np.asarray(labels)
    if array.ndim != 1 or array.size != size:
        problems.append(
            Problem(
                "label-count",
                f"{what} has {array.size} label(s) for {size} image(s); give "
                "one 0/1 label per image",
            )
        )
        return np.zeros(size, dtype=np.int64)
    if array.size and not np.isin(array, (0, 1)).all():
        problems.append(
            Problem(
                "bad-label",
                f"{what} labels must be 0 (negative) or 1 (positive); leave "
                "unlabelled images out",
            )
        )
        return np.zeros(size, dtype=np.int64)
    return array.astype(np.int64)


def _draw(
    real_labels: np.ndarray,
    synthetic_labels: np.ndarray,
    n_per_group: int,
    allow_fewer: bool,
    rng: np.random.Generator,
) -> tuple[list[tuple[str, int, int]], dict[str, int], dict[str, int]]:
    """Return (source, label, position) per drawn image, counts and short groups."""
    pools = {
        "real-positive": ("real", 1, np.flatnonzero(real_labels == 1)),
        "real-negative": ("real", 0, np.flatnonzero(real_labels == 0)),
        "synthetic-positive": ("synthetic", 1, np.flatnonzero(synthetic_labels == 1)),
        "synthetic-negative": ("synthetic", 0, np.flatnonzero(synthetic_labels == 0)),
    }
    short = {
        group: len(pool)
        for group, (_, _, pool) in pools.items()
        if len(pool) < n_per_group
    }
    if short and not allow_fewer:
        raise ReaderStudyError(
            "reader set",
            [
                Problem(
                    "short-group",
                    f"{available} image(s), {n_per_group} wanted; lower the "
                    "number per group or allow fewer (all are then taken and "
                    "the shortfall recorded in key.json)",
                    group,
                )
                for group, available in short.items()
            ],
        )
    drawn: list[tuple[str, int, int]] = []
    counts = {}
    for group, (source, label, pool) in pools.items():
        take = min(n_per_group, len(pool))
        chosen = np.sort(rng.choice(pool, size=take, replace=False))
        drawn.extend((source, label, int(position)) for position in chosen)
        counts[group] = take
    order = rng.permutation(len(drawn))
    return [drawn[i] for i in order], counts, short


def _write_json(path: Path, payload: object) -> None:
    path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")


def make_reader_set(
    real_images: ImageStack,
    real_labels: npt.ArrayLike,
    synthetic_images: ImageStack,
    synthetic_labels: npt.ArrayLike,
    out_dir: Path,
    *,
    n_per_group: int = 50,
    seed: int,
    allow_fewer: bool = False,
    task: str | None = None,
    real_origins: Sequence[str] | None = None,
) -> ReaderSet:
    """Draw, shuffle and write a blinded reader set.

    ``n_per_group`` images are drawn without replacement from each of the
    four groups (:data:`GROUPS`), shuffled together with a generator seeded
    by ``seed`` and written under random ids. The set is written into a
    staging folder and renamed into place, so a folder with ``items.json``
    is complete.

    Parameters
    ----------
    real_images, real_labels
        The site's real scans (``(H, W)`` each) and their 0/1 findings.
    synthetic_images, synthetic_labels
        The synthetic images and the finding each was generated with.
    out_dir
        The set folder; must not exist yet or be empty.
    n_per_group
        Images per group.
    seed
        Seeds the draw and the presentation order (not the ids).
    allow_fewer
        Take every image of a group that has fewer than ``n_per_group`` and
        record the shortfall in ``key.json``, instead of raising.
    task
        ``bm`` or ``ca``, shown on the page as what the finding is about.
    real_origins
        Where each real image came from (e.g. its scan id), kept in
        ``key.json`` only; defaults to ``real[<position>]``.

    Raises
    ------
    ReaderStudyError
        ``short-group`` for every group with fewer images than asked (unless
        ``allow_fewer``); ``label-count``/``bad-label`` for labels that are
        not one 0/1 per image; ``shape-mismatch`` when the drawn images do
        not share one canvas (the size alone would give synthetic images
        away); ``set-exists`` when ``out_dir`` holds files.
    """
    problems: list[Problem] = []
    if n_per_group < 1:
        problems.append(Problem("bad-count", f"n_per_group is {n_per_group}; use >= 1"))
    if task is not None and task not in _TASKS:
        problems.append(Problem("bad-task", f"task {task!r} is not one of {_TASKS}"))
    real = _binary_labels(real_labels, len(real_images), "real", problems)
    synthetic = _binary_labels(
        synthetic_labels, len(synthetic_images), "synthetic", problems
    )
    if real_origins is not None and len(real_origins) != len(real_images):
        problems.append(
            Problem("origin-count", "give one origin per real image, or none")
        )
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        problems.append(
            Problem(
                "set-exists",
                f"{out_dir} already holds files; a set is never overwritten "
                "(its answers would lose their key): choose a new folder",
            )
        )
    ReaderStudyError.raise_if_any("reader set", problems)
    rng = np.random.default_rng(seed)
    drawn, counts, short = _draw(real, synthetic, n_per_group, allow_fewer, rng)
    stacks = {"real": real_images, "synthetic": synthetic_images}
    shapes = {np.shape(stacks[s][p]) for s, _, p in drawn}
    if len(shapes) > 1:
        raise ReaderStudyError(
            "reader set",
            [
                Problem(
                    "shape-mismatch",
                    f"the images come in {len(shapes)} shapes {sorted(shapes)}; "
                    "real and synthetic images must share one canvas, or the "
                    "size gives the source away",
                )
            ],
        )
    staging = out_dir.with_name(f".{out_dir.name}.partial-{secrets.token_hex(4)}")
    (staging / IMAGES_DIR).mkdir(parents=True)
    try:
        ids: list[str] = []
        key: dict[str, dict[str, Any]] = {}
        for source, label, position in drawn:
            item = secrets.token_hex(_ID_BYTES)
            while item in key:
                item = secrets.token_hex(_ID_BYTES)
            png = staging / IMAGES_DIR / f"{item}.png"
            window_to_png(stacks[source][position], png)
            origin = (
                real_origins[position]
                if source == "real" and real_origins is not None
                else f"{source}[{position}]"
            )
            ids.append(item)
            key[item] = {"source": source, "label": label, "origin": origin}
        _write_json(staging / ITEMS_FILE, {"task": task, "items": ids})
        _write_json(
            staging / KEY_FILE,
            {
                "seed": seed,
                "n-per-group": n_per_group,
                "counts": counts,
                "short-groups": short,
                "task": task,
                "items": key,
            },
        )
        if out_dir.exists():
            out_dir.rmdir()
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ReaderSet(out_dir, tuple(ids), counts, short)


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ReaderStudyError(
            str(path),
            [
                Problem(
                    "no-set",
                    f"the set's {what} cannot be read ({error}); make the set "
                    "with `fedbone reader-study make`",
                )
            ],
        ) from error


def load_item_ids(set_dir: Path) -> tuple[str | None, list[str]]:
    """Return the set's task and its item ids in presentation order.

    Raises
    ------
    ReaderStudyError
        ``no-set`` when ``items.json`` is missing or unreadable.
    """
    data = _read_json(Path(set_dir) / ITEMS_FILE, ITEMS_FILE)
    return data.get("task"), [str(item) for item in data["items"]]


def load_key(set_dir: Path) -> dict[str, dict[str, Any]]:
    """Return the set's key: item id -> ``{"source", "label", "origin"}``.

    Raises
    ------
    ReaderStudyError
        ``no-set`` when ``key.json`` is missing or unreadable.
    """
    items: dict[str, dict[str, Any]] = _read_json(Path(set_dir) / KEY_FILE, KEY_FILE)[
        "items"
    ]
    return items


class _CacheRows:
    """Lazy view of some cache rows: only the drawn images are read."""

    def __init__(self, images: np.ndarray, rows: np.ndarray) -> None:
        self._images = images
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: int) -> np.ndarray:
        return np.asarray(self._images[int(self._rows[index])], dtype=np.float32)


def _one_scan_per_patient(
    rows: np.ndarray, patients: Sequence[str], rng: np.random.Generator
) -> np.ndarray:
    """Keep one scan, drawn at random, of every patient."""
    kept: dict[str, int] = {}
    for position in rng.permutation(len(rows)):
        kept.setdefault(patients[position], int(rows[position]))
    return np.sort(np.fromiter(kept.values(), dtype=np.int64, count=len(kept)))


def _released(work_dir: Path, run_name: str) -> tuple[np.ndarray, np.ndarray]:
    # Imported here: the generative package pulls in torch, which the kit's
    # array functions do not need.
    from fedbone.generative.site_gan import gan_state_dir

    state = gan_state_dir(work_dir, run_name)
    images_path = state / "released.npy"
    classes_path = state / "released-classes.npy"
    problems = []
    if not images_path.is_file():
        problems.append(
            Problem(
                "no-release",
                f"{images_path} is missing: run phase synthesize of run "
                f"{run_name!r} at this site first",
            )
        )
    elif not classes_path.is_file():
        problems.append(
            Problem(
                "no-release-classes",
                f"{classes_path} is missing (the release predates it): run phase "
                "synthesize again, so the class of every released image is kept",
            )
        )
    ReaderStudyError.raise_if_any(str(state), problems)
    images = np.load(images_path, mmap_mode="r", allow_pickle=False)
    classes = np.load(classes_path, allow_pickle=False).astype(np.int64)
    if len(images) != len(classes):
        raise ReaderStudyError(
            str(state),
            [
                Problem(
                    "release-mismatch",
                    f"{len(images)} released images but {len(classes)} classes; "
                    "run phase synthesize again",
                )
            ],
        )
    return images, classes


def reader_set_from_site(
    site_config_path: Path,
    run_name: str,
    task: str,
    out_dir: Path,
    *,
    split: str = "test",
    n_per_group: int = 50,
    seed: int = 0,
    allow_fewer: bool = False,
) -> ReaderSet:
    """Build a reader set from a site's own scans and its released images.

    Real scans come from the site's prepared cache: the rows of ``split``
    labelled for ``task``, one scan per patient (drawn with ``seed``) so no
    patient is shown twice. Synthetic images are the ones phase
    ``synthesize`` released at this site for ``run_name``
    (``<work_dir>/gan/<run_name>/released.npy``), with the finding of their
    class (``bm = class // 2``, ``ca = class % 2``) from
    ``released-classes.npy`` beside it.

    Parameters
    ----------
    site_config_path
        The site's ``site.yaml``.
    run_name
        The run whose released images are shown.
    task
        ``bm`` or ``ca``: which finding the labels are.
    out_dir
        The set folder (see :func:`make_reader_set`).
    split
        The cache split the real scans come from.
    n_per_group
        Images per group.
    seed
        Seeds the scan kept per patient, the draw and the order.
    allow_fewer
        See :func:`make_reader_set`.

    Raises
    ------
    ReaderStudyError
        ``no-release`` or ``no-release-classes`` when phase ``synthesize``
        has not left its images and their classes at this site; any error of
        :func:`make_reader_set`.
    """
    from fedbone.config.site import load_site_config
    from fedbone.data.cache import SiteCache

    if task not in _TASKS:
        raise ReaderStudyError(
            "reader set", [Problem("bad-task", f"task {task!r} is not one of {_TASKS}")]
        )
    config = load_site_config(site_config_path)
    released, classes = _released(config.work_dir, run_name)
    cache = SiteCache.open(config.data.cache_dir)
    positions = cache.indices(split)
    positions = positions[cache.labels(task)[positions] >= 0]
    patients = [cache.index[int(p)].patient_id for p in positions]
    pick = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
    rows = _one_scan_per_patient(positions, patients, pick)
    synthetic_labels = classes // 2 if task == "bm" else classes % 2
    return make_reader_set(
        _CacheRows(cache.images, rows),
        cache.labels(task)[rows],
        released,
        synthetic_labels,
        out_dir,
        n_per_group=n_per_group,
        seed=seed,
        allow_fewer=allow_fewer,
        task=task,
        real_origins=[cache.index[int(row)].scan_id for row in rows],
    )
