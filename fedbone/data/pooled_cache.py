"""Concatenate several sites' caches into one (simulation baselines only).

Centrally pooled training is what federated learning is compared against, and
it is only possible where all data sit in one place: a simulation. The pooled
cache is a normal cache on disk, so the same training loop reads it.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import fedbone
from fedbone.data.cache import CacheWriter, SiteCache, install_cache

__all__ = ["write_pooled_cache"]


def write_pooled_cache(
    caches: Sequence[SiteCache], cache_dir: Path, *, splits: Sequence[str]
) -> SiteCache:
    """Write the ``splits`` of every cache into one cache at ``cache_dir``.

    Scan ids are prefixed with the position of their source cache, so they stay
    unique; patients keep their splits.

    Parameters
    ----------
    caches
        The sites' caches; all must share one preprocessing spec.
    cache_dir
        Where the pooled cache is written; an existing cache there is replaced.
    splits
        Splits to copy (``train``, ``val``, ``test``); rows of other splits are
        left out.

    Returns
    -------
    SiteCache
        The pooled cache, opened.

    Raises
    ------
    ValueError
        If the caches were prepared with different specs.
    """
    specs = {cache.spec for cache in caches}
    if len(specs) != 1:
        raise ValueError("pooled caches need one preprocessing spec for all sites")
    spec = specs.pop()
    rows = [
        (k, int(i)) for k, c in enumerate(caches) for s in splits for i in c.indices(s)
    ]
    staging = cache_dir.with_name(f".{cache_dir.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    writer = CacheWriter(staging, len(rows), spec.output_shape)
    try:
        for k, i in rows:
            record = caches[k].index[i]
            writer.append(
                caches[k][i],
                replace(
                    record,
                    scan_id=f"{k}-{record.scan_id}",
                    patient_id=f"{k}-{record.patient_id}",
                ),
            )
        writer.finish(
            {
                "spec": asdict(spec),
                "spec_fingerprint": spec.fingerprint(),
                "pooled_from": [c.content_hash for c in caches],
                "fedbone_version": fedbone.__version__,
            }
        )
    except BaseException:
        writer.abort()
        raise
    install_cache(staging, cache_dir)
    return SiteCache.open(cache_dir)
