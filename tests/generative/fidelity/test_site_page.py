"""The site's fidelity page: the figures table and real-beside-synthetic grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedbone.generative.fidelity.reference import LabelledImages, fidelity_reference
from fedbone.generative.fidelity.site_page import (
    FIDELITY_PAGE,
    fidelity_table_rows,
    write_fidelity_page,
)


def band_means(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), 8, -1).mean(axis=2)


def _images(class_ids: list[int], seed: int) -> LabelledImages:
    rng = np.random.default_rng(seed)
    return LabelledImages(
        rng.uniform(0.0, 1.0, size=(len(class_ids), 32, 16)),
        np.asarray(class_ids, dtype=np.int64),
    )


def test_the_page_holds_the_figures_table_and_one_grid_per_class(
    tmp_path: Path,
) -> None:
    # Prepare: three bm-positive held-out scans, too few for that class
    training = _images([0, 1, 2, 3] * 5, seed=1)
    held_out = _images([0, 1] * 4 + [2, 3, 2], seed=2)
    synthetic = _images(list(held_out.class_ids), seed=3)
    reference = fidelity_reference(
        training, held_out, synthetic, embed=band_means, task="bm", seed=0
    )

    # Execute
    page = write_fidelity_page(tmp_path, reference, training, synthetic, seed=0)

    # Assert
    text = page.read_text()
    assert page == tmp_path / FIDELITY_PAGE
    assert "synthetic vs held-out real" in text
    assert "training real vs held-out real" in text
    assert "bm positive" in text and "n/a" in text
    for group in ("neg", "pos"):
        grid = tmp_path / f"fidelity-{group}.png"
        assert grid.read_bytes().startswith(b"\x89PNG")
        assert f'src="{grid.name}"' in text


def test_the_table_has_a_row_per_class_and_comparison() -> None:
    # Prepare
    training = _images([0, 1, 2, 3] * 3, seed=1)
    held_out = _images([0, 1, 2, 3] * 2, seed=2)
    reference = fidelity_reference(
        training, held_out, held_out, embed=band_means, task="ca", seed=0
    )

    # Execute
    rows = fidelity_table_rows(reference)

    # Assert
    assert [(r["class"], r["comparison"][:4]) for r in rows] == [
        ("ca negative", "synt"),
        ("ca negative", "trai"),
        ("ca positive", "synt"),
        ("ca positive", "trai"),
        ("ca all", "synt"),
        ("ca all", "trai"),
    ]
    assert rows[-1]["n held-out"] == "8" and rows[-1]["n other"] == "8"
