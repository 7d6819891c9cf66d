"""Site-local UMAP of real vs synthetic embeddings, released as density grids."""

from __future__ import annotations

import numpy as np
import pytest

from fedbone.generative.fidelity.umap_view import UmapView, umap_real_vs_synthetic
from fedbone.validation.errors import EvaluationError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def embeddings(count: int, seed: int, dim: int = 8) -> np.ndarray:
    """Two Gaussian clusters of feature vectors."""
    rng = np.random.default_rng(seed)
    centres = np.where(np.arange(count)[:, None] % 2 == 0, 0.0, 4.0)
    return centres + rng.normal(size=(count, dim))


@pytest.fixture(scope="module")
def unsuppressed() -> UmapView:
    return umap_real_vs_synthetic(
        embeddings(60, 0), embeddings(50, 1), bins=12, min_cell=0, seed=3
    )


def test_grids_count_every_point_without_suppression(unsuppressed: UmapView) -> None:
    assert unsuppressed.grid_real.shape == (12, 12)
    assert unsuppressed.grid_synthetic.shape == (12, 12)
    assert unsuppressed.grid_real.sum() == unsuppressed.n_real == 60
    assert unsuppressed.grid_synthetic.sum() == unsuppressed.n_synthetic == 50
    assert np.issubdtype(unsuppressed.grid_real.dtype, np.integer)


def test_real_cells_under_the_threshold_are_suppressed(
    unsuppressed: UmapView,
) -> None:
    view = umap_real_vs_synthetic(
        embeddings(60, 0), embeddings(50, 1), bins=12, min_cell=3, seed=3
    )

    full = unsuppressed.grid_real
    assert ((full > 0) & (full < 3)).any()
    np.testing.assert_array_equal(view.grid_real, np.where(full >= 3, full, 0))
    np.testing.assert_array_equal(view.grid_synthetic, unsuppressed.grid_synthetic)
    assert view.grid_real.sum() == 60 - full[full < 3].sum()
    assert view.n_real == 60


def test_seeded_runs_are_reproducible(unsuppressed: UmapView) -> None:
    again = umap_real_vs_synthetic(
        embeddings(60, 0), embeddings(50, 1), bins=12, min_cell=0, seed=3
    )

    np.testing.assert_array_equal(again.grid_real, unsuppressed.grid_real)
    np.testing.assert_array_equal(again.grid_synthetic, unsuppressed.grid_synthetic)
    assert again.extent == unsuppressed.extent


def test_png_is_a_png_image(unsuppressed: UmapView) -> None:
    image = unsuppressed.png()

    assert image.startswith(PNG_SIGNATURE)


def test_record_size_does_not_depend_on_the_number_of_points(
    unsuppressed: UmapView,
) -> None:
    larger = umap_real_vs_synthetic(
        embeddings(150, 4), embeddings(120, 5), bins=12, min_cell=0, seed=3
    )

    small_record = unsuppressed.to_record()
    large_record = larger.to_record()

    assert small_record.keys() == large_record.keys()
    for key, value in small_record.items():
        other = large_record[key]
        if isinstance(value, list):
            assert isinstance(other, list)
            assert len(value) == len(other) == 12 * 12
    assert large_record["n-real"] == 150
    assert sum(large_record["grid-synthetic"]) == 120  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("real", "synthetic", "settings", "codes"),
    [
        (np.zeros(10), embeddings(10, 1), {}, ["feature-shape"]),
        (embeddings(3, 0), embeddings(10, 1), {}, ["too-few-rows"]),
        (embeddings(10, 0, dim=4), embeddings(10, 1), {}, ["feature-dim-mismatch"]),
        (np.full((10, 8), np.nan), embeddings(10, 1), {}, ["not-finite"]),
        (
            embeddings(10, 0),
            embeddings(10, 1),
            {"bins": 1, "min_cell": -1, "n_neighbors": 1},
            ["bins", "min-cell", "n-neighbors"],
        ),
    ],
)
def test_bad_inputs_are_refused_with_every_problem(
    real: np.ndarray,
    synthetic: np.ndarray,
    settings: dict[str, int],
    codes: list[str],
) -> None:
    with pytest.raises(EvaluationError) as caught:
        umap_real_vs_synthetic(real, synthetic, **settings)

    assert caught.value.codes == codes
