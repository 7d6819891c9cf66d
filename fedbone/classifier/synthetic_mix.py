"""Training on local real scans mixed with pooled synthetic ones.

Haberl et al. added synthetic images to a small site's real training data at
real:synthetic ratios of 1:1 up to 1:100, keeping the class prevalence of the
real data, and also trained on synthetic images alone (as many as the real
scans, same prevalence). This module picks those synthetic images from the
pool a site received (:func:`choose_synthetic`) and presents real and chosen
synthetic images as one read-only cache (:class:`MixedCache`) that
:func:`fedbone.classifier.local.train_local`, ``predict`` and
``evaluate_split`` accept in place of a :class:`fedbone.data.cache.SiteCache`.
Validation and test splits stay real.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedbone.classifier.errors import TrainingError
from fedbone.classifier.local import labelled_rows
from fedbone.data.cache import SiteCache
from fedbone.errors import Problem

__all__ = [
    "MixChoice",
    "MixSpec",
    "MixedCache",
    "SyntheticSet",
    "choose_synthetic",
    "mixed_training_cache",
]

logger = logging.getLogger(__name__)

IMAGES_FILE = "images.npy"
LABELS_FILE = "labels.json"
_FORMAT = 1
_TASKS = ("bm", "ca")
_N_CLASSES = 4
# Range checks read a memory-mapped pool in slices so memory stays bounded.
_CHECK_CHUNK = 256


def _pixel_range_problems(images: np.ndarray) -> list[Problem]:
    low, high = np.inf, -np.inf
    for start in range(0, len(images), _CHECK_CHUNK):
        chunk = np.asarray(images[start : start + _CHECK_CHUNK], dtype=np.float32)
        if not np.isfinite(chunk).all():
            return [Problem("not-finite", "images hold NaN or infinity", "images")]
        low, high = min(low, float(chunk.min())), max(high, float(chunk.max()))
    if len(images) and (low < 0.0 or high > 1.0):
        return [
            Problem(
                "out-of-range",
                f"pixel values span [{low:.3g}, {high:.3g}]; expected [0, 1] "
                "(generator output rescaled like the real canvases)",
                "images",
            )
        ]
    return []


@dataclass(frozen=True, eq=False)
class SyntheticSet:
    """A pool of synthetic canvases with their conditioning class and origin.

    Parameters
    ----------
    images
        ``(N, H, W)`` float16 or float32 in ``[0, 1]`` (may be a memory map).
    class_ids
        ``(N,)`` conditioning class ``2 * bm + ca`` (0..3), see
        :func:`fedbone.generative.trainer.class_labels`.
    source
        ``(N,)`` provenance key of each image, e.g. ``"A/round-3/1f2e3d4c"``.

    Raises
    ------
    TrainingError
        Listing every problem with the arrays.
    """

    images: np.ndarray
    class_ids: np.ndarray
    source: np.ndarray

    def __post_init__(self) -> None:
        problems: list[Problem] = []
        images = self.images
        if images.ndim != 3:
            problems.append(
                Problem("wrong-shape", f"got {images.shape}; expected (N, H, W)")
            )
        if images.dtype not in (np.float16, np.float32):
            problems.append(
                Problem(
                    "wrong-dtype", f"got {images.dtype}; expected float16 or float32"
                )
            )
        elif images.ndim == 3:
            problems.extend(_pixel_range_problems(images))
        class_ids = np.asarray(self.class_ids)
        if class_ids.ndim != 1 or class_ids.dtype.kind not in "iu":
            problems.append(
                Problem(
                    "wrong-class-ids",
                    f"got {class_ids.dtype} of shape {class_ids.shape}; expected a "
                    "1-D integer array",
                    "class_ids",
                )
            )
        elif len(class_ids) and not np.isin(class_ids, range(_N_CLASSES)).all():
            problems.append(
                Problem(
                    "unknown-class",
                    f"found {sorted(set(class_ids.tolist()) - set(range(4)))}; "
                    "expected 2 * bm + ca in 0..3 (drop images without a class)",
                    "class_ids",
                )
            )
        source = np.asarray(self.source)
        if source.dtype.kind == "O" and all(isinstance(s, str) for s in source.flat):
            source = source.astype(str)
        if source.ndim != 1 or source.dtype.kind != "U":
            problems.append(
                Problem("wrong-source", "expected a 1-D array of strings", "source")
            )
        one_dim = images.ndim >= 1 and class_ids.ndim == 1 and source.ndim == 1
        if one_dim and len({len(images), len(class_ids), len(source)}) > 1:
            problems.append(
                Problem(
                    "length-mismatch",
                    f"{len(images)} images, {len(class_ids)} class ids and "
                    f"{len(source)} sources; give one of each per image",
                )
            )
        TrainingError.raise_if_any("synthetic set", problems)
        object.__setattr__(self, "class_ids", class_ids.astype(np.int64))
        object.__setattr__(self, "source", source)

    def __len__(self) -> int:
        return len(self.class_ids)

    def labels(self, task: str) -> np.ndarray:
        """Return the 0/1 ``bm`` (``class // 2``) or ``ca`` (``class % 2``) labels."""
        if task not in _TASKS:
            raise TrainingError(
                "task", [Problem("unknown-task", f"{task!r}; use one of {_TASKS}")]
            )
        return self.class_ids // 2 if task == "bm" else self.class_ids % 2

    def save(self, directory: str | Path) -> None:
        """Write ``images.npy`` (float16) and ``labels.json`` into ``directory``."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / IMAGES_FILE, np.asarray(self.images, dtype=np.float16))
        payload = {
            "format": _FORMAT,
            "class_ids": self.class_ids.tolist(),
            "sources": self.source.tolist(),
        }
        (folder / LABELS_FILE).write_text(json.dumps(payload, indent=1) + "\n", "utf-8")

    @classmethod
    def load(cls, directory: str | Path) -> SyntheticSet:
        """Read a pool written by :meth:`save`; images are memory-mapped.

        Raises
        ------
        TrainingError
            When a file is missing or damaged, or the arrays do not validate.
        """
        folder = Path(directory)
        try:
            images = np.load(folder / IMAGES_FILE, mmap_mode="r", allow_pickle=False)
            payload = json.loads((folder / LABELS_FILE).read_text("utf-8"))
            class_ids = np.asarray(payload["class_ids"], dtype=np.int64)
            source = np.asarray(payload["sources"], dtype=str)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise TrainingError(
                folder,
                [
                    Problem(
                        "unreadable-synthetic-set",
                        f"{IMAGES_FILE} and {LABELS_FILE} cannot be read ({error}); "
                        "save the received pool again with SyntheticSet.save",
                    )
                ],
            ) from error
        return cls(images=images, class_ids=class_ids, source=source)


@dataclass(frozen=True)
class MixSpec:
    """How much synthetic data to add to a site's real training split.

    Parameters
    ----------
    ratio
        Synthetic images per real training scan (5 for 1:5); ``None`` or 0
        adds none.
    synthetic_only
        Train on synthetic images alone, as many as the real scans, with the
        real class prevalence; needs ``ratio`` left unset.
    seed
        Seeds the draw from the pool.

    Raises
    ------
    TrainingError
        Listing every invalid setting.
    """

    ratio: float | None = None
    synthetic_only: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        problems: list[Problem] = []
        ratio = self.ratio
        if ratio is not None and (
            isinstance(ratio, bool)
            or not isinstance(ratio, int | float)
            or not math.isfinite(ratio)
            or ratio < 0
        ):
            problems.append(
                Problem(
                    "bad-ratio",
                    f"got {ratio!r}; expected synthetic images per real scan, a "
                    "number >= 0 (5 for 1:5) or null for none",
                    "ratio",
                )
            )
        if self.synthetic_only and ratio is not None:
            problems.append(
                Problem(
                    "ratio-with-synthetic-only",
                    f"got ratio {ratio!r} with synthetic_only; synthetic-only "
                    "training uses as many images as real scans, leave ratio unset",
                    "ratio",
                )
            )
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            problems.append(Problem("bad-seed", f"got {self.seed!r}", "seed"))
        TrainingError.raise_if_any("mix spec", problems)

    @property
    def adds_synthetic(self) -> bool:
        """Whether any synthetic image is wanted."""
        return self.synthetic_only or bool(self.ratio)


@dataclass(frozen=True, eq=False)
class MixChoice:
    """Which pool images a site trains on.

    Attributes
    ----------
    indices
        Positions into the synthetic pool (repeats when drawn with replacement).
    n_real
        Labelled real training scans the mix was sized on.
    n_synthetic, n_synthetic_pos
        Chosen synthetic images, and how many of them are positive.
    with_replacement
        True when the pool was short of a class and images repeat.
    target_prevalence
        The real training prevalence the draw keeps.
    """

    indices: np.ndarray
    n_real: int
    n_synthetic: int
    n_synthetic_pos: int
    with_replacement: bool
    target_prevalence: float


def _half_up(value: float) -> int:
    # Python's round() rounds halves to even; half-up is what a reader expects.
    return math.floor(value + 0.5)


def _binary_problems(labels: np.ndarray, where: str) -> list[Problem]:
    if labels.ndim != 1 or not np.isin(labels, (0, 1)).all():
        return [
            Problem(
                "not-binary",
                "expected a 1-D array of 0/1 task labels (drop unknown labels)",
                where,
            )
        ]
    return []


def _draw_class(
    pool: np.ndarray, needed: int, rng: np.random.Generator
) -> tuple[np.ndarray, bool]:
    """Draw ``needed`` of ``pool``; every pool image once before any repeat."""
    if needed <= len(pool):
        return rng.choice(pool, size=needed, replace=False), False
    extra = rng.choice(pool, size=needed - len(pool), replace=True)
    return np.concatenate([pool, extra]), True


def _missing_from_pool(label: int, needed: int, task: str | None) -> Problem:
    """Return the problem of a pool lacking a task label the mix needs."""
    which = "positive" if label else "negative"
    if task in _TASKS:
        classes = [
            c for c in range(_N_CLASSES) if (c // 2 if task == "bm" else c % 2) == label
        ]
        names = " and ".join(str(c) for c in classes)
        which += f" ({task} = {label}, conditioning classes {names})"
        shortfall = " / ".join(f"n-shortfall-class-{c}" for c in classes)
    else:
        shortfall = "n-shortfall-class-<c>"
    return Problem(
        "class-missing-from-pool",
        f"the mix needs {needed} {which} synthetic images but the pool has none: "
        "no generator site released that class. Their synthesis summaries "
        f"(synthesis.json: {shortfall}, curation-agreement-class-<c>, "
        "curation-val-auc) say whether curation or the audit rejected it; "
        "raise synthesis.max_attempts, retrain the generator or the curation "
        "classifier, or train without synthetic images",
        "synthetic_labels",
    )


def choose_synthetic(
    real_labels: np.ndarray,
    synthetic_labels: np.ndarray,
    spec: MixSpec,
    *,
    task: str | None = None,
) -> MixChoice:
    """Pick synthetic images for a real:synthetic mix that keeps class prevalence.

    Parameters
    ----------
    real_labels
        0/1 task labels of the labelled real training scans.
    synthetic_labels
        0/1 task labels of every pool image.
    spec
        Ratio (``round(ratio * n_real)`` images) or synthetic-only
        (``n_real`` images); positives are ``round(n * real prevalence)``.
    task
        ``bm`` or ``ca``, the task of the labels: lets the error of a pool
        without a needed label name its conditioning classes.

    Returns
    -------
    MixChoice
        The chosen pool positions, shuffled. When the pool holds fewer images
        of a class than needed, every one of them is used and the rest drawn
        with replacement (``with_replacement`` is set and a warning logged).

    Raises
    ------
    TrainingError
        When labels are not 0/1, there is no real scan to size the mix on, or
        the pool has no image at all of a label the mix needs
        (``class-missing-from-pool``); a pool with too few is drawn with
        replacement instead.
    """
    real = np.asarray(real_labels)
    synthetic = np.asarray(synthetic_labels)
    problems = _binary_problems(real, "real_labels")
    problems += _binary_problems(synthetic, "synthetic_labels")
    TrainingError.raise_if_any("synthetic mix", problems)
    n_real = len(real)
    prevalence = float(real.mean()) if n_real else 0.0
    if not spec.adds_synthetic:
        return MixChoice(np.zeros(0, np.int64), n_real, 0, 0, False, prevalence)
    if n_real == 0:
        raise TrainingError(
            "synthetic mix",
            [
                Problem(
                    "no-real-scans",
                    "the real training split has no labelled scan, so neither the "
                    "mix size nor the prevalence to keep is defined",
                )
            ],
        )
    ratio = 1.0 if spec.synthetic_only else float(spec.ratio or 0.0)
    n_synthetic = _half_up(ratio * n_real)
    needed = {1: _half_up(n_synthetic * prevalence)}
    needed[0] = n_synthetic - needed[1]
    pools = {label: np.flatnonzero(synthetic == label) for label in (0, 1)}
    missing = [
        _missing_from_pool(label, needed[label], task)
        for label in (0, 1)
        if needed[label] > 0 and len(pools[label]) == 0
    ]
    TrainingError.raise_if_any("synthetic mix", missing)
    rng = np.random.default_rng(spec.seed)
    positives, short_pos = _draw_class(pools[1], needed[1], rng)
    negatives, short_neg = _draw_class(pools[0], needed[0], rng)
    if short_pos or short_neg:
        logger.warning(
            "synthetic pool too small for the mix (needs %d positive of %d, "
            "%d negative of %d): drawing with replacement",
            needed[1],
            len(pools[1]),
            needed[0],
            len(pools[0]),
        )
    indices = rng.permutation(np.concatenate([positives, negatives]).astype(np.int64))
    return MixChoice(
        indices=indices,
        n_real=n_real,
        n_synthetic=n_synthetic,
        n_synthetic_pos=needed[1],
        with_replacement=short_pos or short_neg,
        target_prevalence=prevalence,
    )


class _MixedImages:
    """``images[positions]`` over real rows followed by chosen synthetic rows."""

    def __init__(
        self, real: np.ndarray, synthetic: np.ndarray, chosen: np.ndarray
    ) -> None:
        self.real = real
        self.synthetic = synthetic
        self.chosen = chosen
        self.n_real = len(real)
        self.shape = (self.n_real + len(chosen), *real.shape[1:])
        self.dtype = np.result_type(real.dtype, synthetic.dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: int | slice | np.ndarray) -> np.ndarray:
        if isinstance(key, slice):
            return self[np.arange(len(self))[key]]
        positions = np.asarray(key, dtype=np.int64)
        flat = positions.reshape(-1)
        flat = np.where(flat < 0, flat + len(self), flat)
        if flat.size and (flat.min() < 0 or flat.max() >= len(self)):
            raise IndexError(f"positions outside 0..{len(self) - 1}")
        out = np.empty((len(flat), *self.shape[1:]), dtype=self.dtype)
        is_real = flat < self.n_real
        out[is_real] = self.real[flat[is_real]]
        pool_rows = self.chosen[flat[~is_real] - self.n_real]
        # Read the (possibly memory-mapped) pool in ascending order.
        order = np.argsort(pool_rows, kind="stable")
        synthetic = np.empty((len(pool_rows), *self.shape[1:]), dtype=self.dtype)
        synthetic[order] = self.synthetic[pool_rows[order]]
        out[~is_real] = synthetic
        return out.reshape(*positions.shape, *self.shape[1:])


class MixedCache:
    """A site cache with chosen synthetic images appended to its training split.

    Usable wherever ``train_local``, ``predict`` and ``evaluate_split`` take a
    :class:`fedbone.data.cache.SiteCache`. Positions ``0..len(cache) - 1`` are
    the real scans, then come the chosen synthetic images; ``val`` and
    ``test`` hold real scans only.

    Parameters
    ----------
    cache
        The site's prepared cache.
    synthetic
        The pool the site received.
    choice
        The pool images to train on (:func:`choose_synthetic`).
    synthetic_only
        Leave the real scans out of the training split.

    Raises
    ------
    TrainingError
        When the pool's canvas differs from the cache's or the choice points
        outside the pool.
    """

    def __init__(
        self,
        cache: SiteCache,
        synthetic: SyntheticSet,
        choice: MixChoice,
        *,
        synthetic_only: bool,
    ) -> None:
        problems: list[Problem] = []
        real_shape = tuple(cache.images.shape[1:])
        pool_shape = tuple(synthetic.images.shape[1:])
        if real_shape != pool_shape:
            problems.append(
                Problem(
                    "canvas-mismatch",
                    f"synthetic images are {pool_shape}, the cache's {real_shape}; "
                    "generate at the site's canvas size",
                )
            )
        chosen = np.asarray(choice.indices, dtype=np.int64)
        if chosen.size and (chosen.min() < 0 or chosen.max() >= len(synthetic)):
            problems.append(
                Problem(
                    "choice-outside-pool",
                    f"the choice names pool positions outside 0..{len(synthetic) - 1}; "
                    "choose from this pool's labels",
                )
            )
        TrainingError.raise_if_any(cache.cache_dir, problems)
        self.real = cache
        self.synthetic = synthetic
        self.choice = choice
        self.synthetic_only = synthetic_only
        self.cache_dir = cache.cache_dir
        self.spec = cache.spec
        self.images = _MixedImages(cache.images, synthetic.images, chosen)
        self._synthetic_positions = np.arange(
            len(cache), len(cache) + len(chosen), dtype=np.int64
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> np.ndarray:
        """Return image ``i`` as a float32 ``(H, W)`` array (a copy)."""
        return self.images[np.asarray([i])][0].astype(np.float32)

    def indices(self, split: str) -> np.ndarray:
        """Positions in ``split``: real rows, plus every synthetic row in ``train``."""
        real = self.real.indices(split)
        if split != "train":
            return real
        if self.synthetic_only:
            return self._synthetic_positions.copy()
        return np.concatenate([real, self._synthetic_positions])

    def labels(self, task: str) -> np.ndarray:
        """Return the ``bm`` or ``ca`` label of every row, ``-1`` when unknown."""
        real = self.real.labels(task)
        chosen = self.synthetic.labels(task)[self.choice.indices]
        return np.concatenate([real, chosen.astype(np.int64)])


def mixed_training_cache(
    cache: SiteCache, task: str, synthetic: SyntheticSet, spec: MixSpec
) -> MixedCache:
    """Mix ``cache``'s labelled training scans for ``task`` with pool images.

    Parameters
    ----------
    cache
        The site's prepared cache of real scans.
    task
        ``bm`` or ``ca``: the labels the mix balances on.
    synthetic
        The pool of synthetic images to draw from.
    spec
        Ratio of synthetic to real images (or synthetic only) and the seed of
        the draw.

    Returns
    -------
    MixedCache
        The real cache plus the images :func:`choose_synthetic` picked.
    """
    synthetic_labels = synthetic.labels(task)
    _, real_labels = labelled_rows(cache, task, "train")
    choice = choose_synthetic(real_labels, synthetic_labels, spec, task=task)
    logger.info(
        "%s mix: %d real + %d synthetic (%d positive)%s",
        task,
        choice.n_real,
        choice.n_synthetic,
        choice.n_synthetic_pos,
        ", synthetic only" if spec.synthetic_only else "",
    )
    return MixedCache(cache, synthetic, choice, synthetic_only=spec.synthetic_only)
