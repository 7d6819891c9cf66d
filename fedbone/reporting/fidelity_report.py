"""The centre's fidelity table and its view of the released synthetic pool.

Each GAN site sent, for its selected generator, FD, KID and precision/recall
per class of the study task against its held-out real scans, and the same
figures for its own training scans against those held-out scans
(:mod:`fedbone.generative.fidelity.reference`). Side by side they say how far
the generator is from what two real samples of the site differ by. Each site
measured in its own feature encoder, so a site's figures compare with each
other, not with another site's.

The pool's images are the audited, released synthetic images the centre
holds; showing them is what they were released for.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedbone.classifier.synthetic_mix import SyntheticSet
from fedbone.generative.fidelity.grids import GRID_COLUMNS, write_image_grid
from fedbone.generative.fidelity.reference import (
    CLASS_GROUPS,
    GROUP_LABELS,
    GROUPS,
    MEASURES,
    group_rows,
    metric_key,
)

__all__ = [
    "FIDELITY_NOTE",
    "POOL_NOTE",
    "fidelity_rows",
    "write_pool_grids",
]

FIDELITY_NOTE = (
    "Per class of the study task, each GAN site compared its held-out real "
    "scans (val and test) with its selected generator's images (synthetic) "
    "and with its own training scans (real: the floor, what two real samples "
    "of the site differ by), in its own feature encoder with the same number "
    "of images on each side. FD and KID: lower is closer; FD ratio = "
    "synthetic / real, about 1 means as close as another real sample. "
    "Precision (synthetic inside the real manifold) and recall (real covered): "
    "higher is better. Each site has its own encoder: compare a site's figures "
    "with each other, not across sites. n/a: fewer than 4 images on a side, "
    "or (real) withheld by a site whose GAN trained under DP."
)
POOL_NOTE = (
    "Released synthetic images from the centre's pool: each passed its site's "
    "curation and privacy audit. Up to {columns} per generator site and class, "
    "drawn at random; grey scale 0 (white) to 1 (black)."
)

_MEASURE_NAMES = {
    "fd": "FD",
    "kid": "KID",
    "precision": "precision",
    "recall": "recall",
}


def _value(metrics: Mapping[str, Any], key: str) -> float:
    value = metrics.get(key)
    return math.nan if value is None else float(value)


def _ratio(synthetic: float, real: float) -> float:
    if not (math.isfinite(synthetic) and math.isfinite(real)) or real <= 0:
        return math.nan
    return synthetic / real


def _group_row(site: str, metrics: Mapping[str, Any], group: str) -> dict[str, Any]:
    row: dict[str, Any] = {"site": site, "class": GROUP_LABELS[group]}
    for measure in MEASURES:
        name = _MEASURE_NAMES[measure]
        for source in ("synthetic", "real"):
            row[f"{name} {source}"] = _value(
                metrics, metric_key(measure, source, group)
            )
        if measure == "fd":
            row["FD ratio"] = _ratio(row["FD synthetic"], row["FD real"])
    return row


def fidelity_rows(sites: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per GAN site and class group: synthetic next to real vs real.

    Parameters
    ----------
    sites
        Site -> its ``gan.json`` entry (``{"metrics": {...}, ...}``). Sites
        whose metrics hold no per-class figure (runs before these figures
        existed, or a federated GAN) are left out.

    Returns
    -------
    list of dict
        ``site``, ``class`` (negative, positive, all), then per measure its
        ``synthetic`` and ``real`` value (float, NaN when missing), and the
        ``FD ratio``.
    """
    rows = []
    for site, entry in sorted(sites.items()):
        metrics = entry.get("metrics", {})
        if metric_key("fd", "synthetic", "all") not in metrics:
            continue
        rows += [_group_row(site, metrics, group) for group in GROUPS]
    return rows


def _site_of(source: str) -> str:
    return source.split("/", 1)[0]


def write_pool_grids(
    pool: SyntheticSet, task: str, out_dir: Path, *, seed: int = 0
) -> tuple[Path, ...]:
    """Draw the pool's images per class of ``task``, one row per generator site.

    Parameters
    ----------
    pool
        The centre's released synthetic pool.
    task
        ``bm`` or ``ca``: which label makes a class positive.
    out_dir
        Report folder; ``pool_neg.png`` and ``pool_pos.png`` are written.
    seed
        Seeds which images are shown.

    Returns
    -------
    tuple of Path
        One PNG per class with at least one image.
    """
    rng = np.random.default_rng(seed)
    sites = np.array([_site_of(str(source)) for source in pool.source])
    paths = []
    for group in CLASS_GROUPS:
        members = group_rows(pool.class_ids, task, group)
        if not len(members):
            continue
        rows = [
            (f"from {site}", _shown(pool, members[sites[members] == site], rng))
            for site in sorted(set(sites[members]))
        ]
        paths.append(
            write_image_grid(
                rows,
                out_dir / f"pool_{group}.png",
                title=f"released pool, {task} {GROUP_LABELS[group]} "
                f"({len(members)} images)",
            )
        )
    return tuple(paths)


def _shown(
    pool: SyntheticSet, rows: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    chosen = np.sort(rng.permutation(rows)[:GRID_COLUMNS])
    return np.asarray(pool.images[chosen], dtype=np.float32)
