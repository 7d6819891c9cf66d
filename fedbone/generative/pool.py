"""The coordinating centre's pool of released synthetic images.

Sites send batches of audited images; the pool keeps each image once with its
provenance (site, round, generator checkpoint hash, the batch's audit
summary), drops duplicates -- exact copies and near-copies whose pixel MSE to
an image already pooled is below ``duplicate_mse`` -- and writes what a
researcher or a PACS needs: PNG and DICOM files marked synthetic, a provenance
table, and the arrays the sites receive back (the
:class:`~fedbone.classifier.synthetic_mix.SyntheticSet` format).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedbone.classifier.synthetic_mix import SyntheticSet
from fedbone.generative.audit.pairwise import ChunkedReferences
from fedbone.generative.export import write_synthetic_dicom, write_synthetic_png
from fedbone.generative.release_register import image_digest, wire_images

__all__ = ["BatchProvenance", "PoolAddResult", "SyntheticPool", "pool_digest"]

logger = logging.getLogger(__name__)

_CHUNK = 512


@dataclass(frozen=True)
class BatchProvenance:
    """Where one batch of released images came from."""

    site: str
    round: int
    checkpoint_sha256: str
    audit: Mapping[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> str:
        """Short provenance key stored with each image."""
        return f"{self.site}/round-{self.round}/{self.checkpoint_sha256[:12]}"


@dataclass(frozen=True)
class PoolAddResult:
    """What :meth:`SyntheticPool.add` did with a batch."""

    n_received: int
    n_added: int
    n_exact_duplicates: int
    n_near_duplicates: int


class SyntheticPool:
    """Released synthetic images from every site, deduplicated.

    Parameters
    ----------
    duplicate_mse
        Images whose pixel MSE (images in [0, 1]) to a pooled image is below
        this are near-duplicates and dropped.
    """

    def __init__(self, *, duplicate_mse: float = 1e-5) -> None:
        self.duplicate_mse = duplicate_mse
        self._images: list[np.ndarray] = []
        self._class_ids: list[int] = []
        self._sources: list[str] = []
        self._digests: set[str] = set()
        self._flat: np.ndarray | None = None  # pooled images as float32 rows
        self._stacked: SyntheticSet | None = None
        self.batches: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self._images)

    def add(
        self, images: np.ndarray, class_ids: np.ndarray, provenance: BatchProvenance
    ) -> PoolAddResult:
        """Add one site's batch; return how many were new.

        Parameters
        ----------
        images
            The batch's released images, ``(N, H, W)`` in [0, 1].
        class_ids
            Their class ids, ``(N,)``.
        provenance
            Where the batch came from (kept with every image added).
        """
        images = wire_images(images)
        flat = images.reshape(len(images), -1).astype(np.float32)
        to_pool = self._nearest_pooled(flat)
        batch = ChunkedReferences(flat, _CHUNK, "cpu")
        limit = self.duplicate_mse
        accepted: list[int] = []
        exact = near = 0
        for start in range(0, len(flat), _CHUNK):
            # this chunk's distances to the whole batch, for copies within it
            within = batch.distances(flat[start : start + _CHUNK]).numpy()
            for offset, image in enumerate(images[start : start + _CHUNK]):
                i = start + offset
                digest = image_digest(image)
                if digest in self._digests:
                    exact += 1
                elif to_pool[i] < limit or (
                    accepted and float(within[offset, accepted].min()) < limit
                ):
                    near += 1
                else:
                    self._digests.add(digest)
                    accepted.append(i)
        if accepted:
            rows = flat[accepted]
            self._flat = (
                rows if self._flat is None else np.concatenate([self._flat, rows])
            )
        self._images.extend(images[accepted])
        self._class_ids.extend(int(c) for c in np.asarray(class_ids)[accepted])
        self._sources.extend([provenance.source] * len(accepted))
        self._stacked = None
        result = PoolAddResult(len(images), len(accepted), exact, near)
        self.batches.append(
            {
                "site": provenance.site,
                "round": provenance.round,
                "checkpoint-sha256": provenance.checkpoint_sha256,
                "source": provenance.source,
                "n-received": result.n_received,
                "n-added": result.n_added,
                "n-exact-duplicates": exact,
                "n-near-duplicates": near,
                "audit": dict(provenance.audit),
            }
        )
        logger.info(
            "pool: %s sent %d, %d new (%d exact, %d near duplicates)",
            provenance.site,
            result.n_received,
            result.n_added,
            exact,
            near,
        )
        return result

    def _nearest_pooled(self, flat: np.ndarray) -> np.ndarray:
        """Each row's smallest pixel MSE to a pooled image (``inf``: empty pool)."""
        if self._flat is None:
            return np.full(len(flat), np.inf)
        references = ChunkedReferences(self._flat, _CHUNK, "cpu")
        return np.concatenate(
            [
                references.distances(flat[start : start + _CHUNK])
                .min(dim=1)
                .values.numpy()
                for start in range(0, len(flat), _CHUNK)
            ]
        )

    def synthetic_set(self) -> SyntheticSet:
        """Return the pool as the set sites train with."""
        if not self._images:
            raise ValueError("the pool is empty: no site released any image")
        if self._stacked is None:  # stacked once per change, not per use
            self._stacked = SyntheticSet(
                images=np.stack(self._images),
                class_ids=np.asarray(self._class_ids, dtype=np.int64),
                source=np.asarray(self._sources, dtype=str),
            )
        return self._stacked

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(images float16 (N, H, W), class ids int64 (N,))`` to send."""
        pooled = self.synthetic_set()
        return wire_images(pooled.images), pooled.class_ids

    def digest(self) -> str:
        """Hash of the pool's images and labels (sites echo it on receipt)."""
        return pool_digest(*self.arrays())

    def save(
        self,
        directory: Path,
        *,
        spacing_mm: float,
        files: bool = True,
    ) -> Path:
        """Write the pool: arrays, provenance and (``files``) PNG + DICOM per image.

        Parameters
        ----------
        directory
            Output folder (created).
        spacing_mm
            Pixel spacing of the canvas, for the DICOM files.
        files
            Also write one PNG and one DICOM file per image.
        """
        directory.mkdir(parents=True, exist_ok=True)
        pooled = self.synthetic_set()
        pooled.save(directory)
        (directory / "provenance.json").write_text(
            json.dumps(
                {"pool-sha256": self.digest(), "batches": self.batches},
                indent=2,
                default=float,
            )
            + "\n"
        )
        if files:
            self._write_files(directory, pooled, spacing_mm)
        return directory

    def _write_files(
        self, directory: Path, pooled: SyntheticSet, spacing: float
    ) -> None:
        (directory / "png").mkdir(exist_ok=True)
        (directory / "dicom").mkdir(exist_ok=True)
        for i, (image, class_id, source) in enumerate(
            zip(pooled.images, pooled.class_ids, pooled.source, strict=True)
        ):
            name = f"synthetic-{i:06d}-class{int(class_id)}"
            pixels = np.asarray(image, dtype=np.float32)
            write_synthetic_png(pixels, directory / "png" / f"{name}.png")
            site, round_name, checkpoint = str(source).split("/")
            write_synthetic_dicom(
                pixels,
                directory / "dicom" / f"{name}.dcm",
                label_bm=int(class_id) // 2,
                label_ca=int(class_id) % 2,
                provenance={
                    "site": site,
                    "round": round_name.removeprefix("round-"),
                    "generator-sha256": checkpoint,
                },
                spacing_mm=spacing,
                uid_seed=image_digest(pixels),
            )


def pool_digest(images: np.ndarray, class_ids: np.ndarray) -> str:
    """Hash of a pool as sent: images (float16) and class ids."""
    digest = hashlib.sha256(wire_images(images).tobytes())
    digest.update(np.ascontiguousarray(class_ids, dtype=np.int64).tobytes())
    return digest.hexdigest()
