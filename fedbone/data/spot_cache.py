"""Small prepared caches of noise images with a planted hot spot.

Unit tests, benchmarks and notebooks need a site cache in milliseconds, not the
minutes a phantom cohort takes: these images are uniform noise, and scans that
are positive for bone metastasis carry one saturated square. Never a study's
data; the phantom cohorts (:mod:`fedbone.data.phantom`) are that.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedbone.data.cache import CacheRecord, CacheWriter, SiteCache, install_cache
from fedbone.data.spec import PreprocessSpec

__all__ = ["SpotCacheRecipe", "spot_record", "write_spot_cache"]


def _every_third(i: int) -> int | None:
    return int(i % 3 == 0)


def _no_label(i: int) -> int | None:
    return None


def _own_patient(i: int) -> str:
    return f"P{i}"


def _all_train(i: int) -> str:
    return "train"


@dataclass(frozen=True)
class SpotCacheRecipe:
    """How to draw a spot cache: canvas, labels, splits and the noise.

    Image ``i`` is ``background + amplitude * U(0, 1)`` noise; where
    ``label_bm(i) == 1`` a square of side ``2 * spot_half`` is set to 1.0, its
    centre drawn at least ``margin`` (rows, columns) from the border.
    """

    spec: PreprocessSpec
    count: int = 60
    seed: int = 0
    background: float = 0.0
    amplitude: float = 0.3
    spot_half: int = 1
    margin: tuple[int, int] = (4, 2)
    split: Callable[[int], str] = _all_train
    label_bm: Callable[[int], int | None] = _every_third
    label_ca: Callable[[int], int | None] = _no_label
    patient: Callable[[int], str] = _own_patient


def spot_record(
    i: int,
    split: str,
    label_bm: int | None,
    label_ca: int | None = None,
    patient_id: str | None = None,
) -> CacheRecord:
    """Return the cache record of scan ``i`` (no metadata but labels).

    Parameters
    ----------
    i
        Scan number: ids ``s<i>``, file ``s<i>.dcm``, manifest row ``i + 2``.
    split
        ``train``, ``val`` or ``test``.
    label_bm, label_ca
        Labels of the two tasks (``None``: unknown).
    patient_id
        Defaults to ``P<i>`` (one scan per patient).
    """
    return CacheRecord(
        scan_id=f"s{i}",
        patient_id=patient_id if patient_id is not None else f"P{i}",
        split=split,
        label_bm=label_bm,
        label_ca=label_ca,
        perugini_grade=None,
        age=None,
        sex=None,
        study_date=None,
        tracer=None,
        scanner=None,
        endpoints={},
        scan_file=f"s{i}.dcm",
        row_number=i + 2,
    )


def write_spot_cache(folder: Path, recipe: SpotCacheRecipe) -> SiteCache:
    """Write the cache ``recipe`` describes under ``folder/cache`` and open it."""
    spec = recipe.spec
    height, width = spec.output_shape
    rows, columns = recipe.margin
    half = recipe.spot_half
    rng = np.random.default_rng(recipe.seed)
    staging = folder / ".cache.partial"
    writer = CacheWriter(staging, recipe.count, spec.output_shape)
    for i in range(recipe.count):
        label = recipe.label_bm(i)
        noise = rng.random(spec.output_shape, dtype=np.float32)
        image = recipe.background + recipe.amplitude * noise
        if label == 1:
            row = int(rng.integers(rows, height - rows))
            column = int(rng.integers(columns, width - columns))
            image[row - half : row + half, column - half : column + half] = 1.0
        record = spot_record(
            i, recipe.split(i), label, recipe.label_ca(i), recipe.patient(i)
        )
        writer.append(image.astype(np.float32), record)
    writer.finish({"spec": dataclasses.asdict(spec)})
    install_cache(staging, folder / "cache")
    return SiteCache.open(folder / "cache")
