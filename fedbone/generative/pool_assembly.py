"""Assembling the centre's synthetic pool from the sites' released batches.

Each generator site sends the images it released with their labels, its audit
summary and the generator's provenance. The centre keeps, of each batch, the
images the cross-audit passed (federated generator only), pools them with
their provenance (:class:`~fedbone.generative.pool.SyntheticPool`, which drops
duplicates) and reports every site's audit.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedbone.generative.pool import BatchProvenance, SyntheticPool

__all__ = ["PoolAssembly", "ReleasedBatch", "SynthesisResults", "assemble_pool"]

logger = logging.getLogger(__name__)


@dataclass
class ReleasedBatch:
    """One site's released images with their audit summary and provenance."""

    site: str
    images: np.ndarray
    class_ids: np.ndarray
    provenance: dict[str, Any]
    audit: dict[str, Any]


@dataclass
class PoolAssembly:
    """The pooled images, every site's audit, and the canvas's pixel spacing."""

    pool: SyntheticPool
    audits: dict[str, dict[str, Any]]
    spacing_mm: float


@dataclass
class SynthesisResults:
    """The synthesize phase's results (``synthesis.json``).

    ``batches``, ``pool_sha256`` and ``deliveries`` are set once the pool
    holds images and was sent out; ``cross_audits`` for a federated generator.
    """

    audits: dict[str, dict[str, Any]]
    pool_size: int
    cross_audits: dict[str, dict[str, Any]] | None = None
    batches: list[dict[str, Any]] | None = None
    pool_sha256: str | None = None
    deliveries: dict[str, int] | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the plain layout written to ``synthesis.json``."""
        layout: dict[str, Any] = {"audits": self.audits, "pool-size": self.pool_size}
        if self.cross_audits is not None:
            layout["cross-audits"] = self.cross_audits
        if self.batches is not None:
            layout["batches"] = self.batches
        if self.pool_sha256 is not None:
            layout["pool-sha256"] = self.pool_sha256
        if self.deliveries is not None:
            layout["deliveries"] = self.deliveries
        return layout


def assemble_pool(
    releases: Sequence[ReleasedBatch],
    generators: Mapping[str, Mapping[str, str]],
    keep: Mapping[str, np.ndarray] | None = None,
) -> PoolAssembly:
    """Pool every site's released images with their provenance.

    Parameters
    ----------
    releases
        What each generator site released, in the order to pool them.
    generators
        Per site, its generator's provenance from phase ``gan``
        (``checkpoint-sha256`` and, federated, ``round``).
    keep
        Federated generator only: per site, the images the cross-audit
        passed. Only those are pooled, under the federated generator's
        digest (the same at every site), and the audit counts the rest as
        ``n-blocked-cross-audit``.
    """
    pool = SyntheticPool()
    audits: dict[str, dict[str, Any]] = {}
    spacing = float("nan")
    for release in releases:
        site, provenance = release.site, release.provenance
        audit = dict(release.audit)
        spacing = float(str(provenance.get("spacing-mm", "nan")))
        images, class_ids = release.images, release.class_ids
        checkpoint = str(provenance["checkpoint-sha256"])
        if keep is not None:
            passed = keep[site]
            audit["n-blocked-cross-audit"] = int((~passed).sum())
            images, class_ids = images[passed], class_ids[passed]
            checkpoint = generators[site]["checkpoint-sha256"]
        if len(images):
            pool.add(
                images,
                class_ids,
                BatchProvenance(
                    site=site,
                    round=int(generators[site].get("round", "0")),
                    checkpoint_sha256=checkpoint,
                    audit=audit,
                ),
            )
        audits[site] = audit
        logger.info(
            "%s released %d of %d synthetic images (blocked %s, membership AUC %s)",
            site,
            len(images),
            int(audit.get("n-generated", -1)),
            audit.get("n-blocked"),
            audit.get("membership-auc"),
        )
    return PoolAssembly(pool=pool, audits=audits, spacing_mm=spacing)
