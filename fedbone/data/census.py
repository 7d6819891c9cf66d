"""What a site tells the study about its data: counts, never records.

The census lets the coordinating centre check the federation before anything
trains: every site prepared its scans the same way (spec fingerprint), has the
splits and labels the study needs, and runs the same configuration. Counts of
1..k-1 are suppressed on the way out by the egress guard, not here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedbone.data.cache import SiteCache

__all__ = ["SPLITS", "TASKS", "SiteCensus", "take_census"]

SPLITS = ("train", "val", "test")
TASKS = ("bm", "ca")


@dataclass(frozen=True)
class SiteCensus:
    """A site's identity and data counts."""

    site_id: str
    role: str
    config_sha256: str
    spec_fingerprint: str
    cache_hash: str
    counts: dict[str, int]
    canvas: str = ""
    """The cache's image size as ``<height>x<width>`` (the GAN's canvas)."""


def take_census(
    cache: SiteCache, *, site_id: str, role: str, config_sha256: str
) -> SiteCensus:
    """Count a site's scans per split, and positives/negatives per task.

    Keys are ``n-<split>``, ``n-<split>-<task>-pos`` and ``n-<split>-<task>-neg``;
    scans whose label is unknown for a task count in neither.

    Parameters
    ----------
    cache
        The site's prepared cache.
    site_id, role
        Who the site is and whether it trains or only validates.
    config_sha256
        The sha256 of the site's configuration file (empty when it has none).
    """
    counts: dict[str, int] = {}
    labels = {task: cache.labels(task) for task in TASKS}
    for split in SPLITS:
        rows = cache.indices(split)
        counts[f"n-{split}"] = len(rows)
        for task in TASKS:
            values = labels[task][rows]
            counts[f"n-{split}-{task}-pos"] = int(np.sum(values == 1))
            counts[f"n-{split}-{task}-neg"] = int(np.sum(values == 0))
    return SiteCensus(
        site_id=site_id,
        role=role,
        config_sha256=config_sha256,
        spec_fingerprint=cache.spec.fingerprint(),
        cache_hash=cache.content_hash,
        counts=counts,
        canvas="x".join(str(n) for n in cache.images.shape[1:]),
    )
