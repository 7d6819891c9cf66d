"""The centre's pool: provenance, duplicates removed, files marked synthetic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom

from fedbone.classifier.synthetic_mix import SyntheticSet
from fedbone.data.dicom_read import read_nm_scan
from fedbone.generative.export import SYNTHETIC_DESCRIPTION
from fedbone.generative.pool import BatchProvenance, SyntheticPool, pool_digest


def _batch(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((n, 32, 16)).astype(np.float32), np.arange(n) % 4


def _provenance(site: str) -> BatchProvenance:
    return BatchProvenance(site, 0, "ab" * 32, {"n-released": 3, "passed": 1})


def test_exact_and_near_duplicates_are_dropped() -> None:
    # Prepare
    images, labels = _batch(3, seed=0)
    near = images[:1] + 1e-4  # far below the near-duplicate MSE

    # Execute
    pool = SyntheticPool()
    first = pool.add(images, labels, _provenance("A"))
    again = pool.add(np.concatenate([images[1:2], near]), labels[:2], _provenance("B"))

    # Assert
    assert (first.n_added, again.n_added) == (3, 0)
    assert (again.n_exact_duplicates, again.n_near_duplicates) == (1, 1)
    assert len(pool) == 3


def test_saved_pool_has_provenance_arrays_png_and_synthetic_dicom(
    tmp_path: Path,
) -> None:
    # Prepare
    pool = SyntheticPool()
    pool.add(*_batch(2, seed=1), _provenance("A"))
    pool.add(*_batch(1, seed=2), _provenance("C"))

    # Execute
    pool.save(tmp_path / "pool", spacing_mm=8.0)

    # Assert
    provenance = json.loads((tmp_path / "pool" / "provenance.json").read_text())
    assert [b["site"] for b in provenance["batches"]] == ["A", "C"]
    assert provenance["pool-sha256"] == pool.digest() == pool_digest(*pool.arrays())
    reloaded = SyntheticSet.load(tmp_path / "pool")
    assert len(reloaded) == 3 and reloaded.source[2].startswith("C/round-0/")
    assert len(list((tmp_path / "pool" / "png").glob("*.png"))) == 3
    dicoms = sorted((tmp_path / "pool" / "dicom").glob("*.dcm"))
    dataset = pydicom.dcmread(dicoms[0])
    assert dataset.SeriesDescription == SYNTHETIC_DESCRIPTION
    assert read_nm_scan(dicoms[0], default_view=None).views
