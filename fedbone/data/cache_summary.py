"""A per-site summary of prepared caches (the federation table `simulate` prints)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedbone.data.cache import SiteCache

__all__ = ["SiteSummary", "format_summary_table", "summarise_site_cache"]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SiteSummary:
    """Counts of one site's prepared cache."""

    site_id: str
    n_scans: int
    n_patients: int
    per_split: dict[str, int]
    bm_positive: int
    ca_positive: int
    ca_unknown: int
    image_shape: tuple[int, ...]
    content_hash: str


def summarise_site_cache(site_id: str, cache_dir: Path) -> SiteSummary:
    """Open a prepared cache and count scans, patients, splits and labels."""
    cache = SiteCache.open(cache_dir)
    bm = cache.labels("bm")
    ca = cache.labels("ca")
    patients = {record.patient_id for record in cache.index}
    return SiteSummary(
        site_id=site_id,
        n_scans=len(cache),
        n_patients=len(patients),
        per_split={split: len(cache.indices(split)) for split in SPLITS},
        bm_positive=int(np.sum(bm == 1)),
        ca_positive=int(np.sum(ca == 1)),
        ca_unknown=int(np.sum(ca < 0)),
        image_shape=tuple(int(v) for v in cache.images.shape[1:]),
        content_hash=cache.content_hash[:12],
    )


def format_summary_table(rows: list[SiteSummary]) -> str:
    """Render summaries as a fixed-width text table."""
    header = (
        f"{'site':<5}{'scans':>7}{'patients':>10}{'train':>7}{'val':>5}{'test':>6}"
        f"{'BM+':>6}{'CA+':>6}{'CA?':>6}  {'image':<9}{'cache hash':<12}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        shape = "x".join(str(v) for v in r.image_shape)
        lines.append(
            f"{r.site_id:<5}{r.n_scans:>7}{r.n_patients:>10}"
            f"{r.per_split['train']:>7}{r.per_split['val']:>5}{r.per_split['test']:>6}"
            f"{r.bm_positive:>6}{r.ca_positive:>6}{r.ca_unknown:>6}  "
            f"{shape:<9}{r.content_hash:<12}"
        )
    return "\n".join(lines)
