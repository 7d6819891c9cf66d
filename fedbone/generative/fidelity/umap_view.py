"""Site-local UMAP of real vs synthetic embeddings, released only as density grids.

Haberl et al. show a UMAP of real and synthetic images to argue that the two
distributions align. A scatter of real points would place every patient on a
public picture, so fedbone computes the UMAP **at the site**, on feature vectors
(e.g. :meth:`fedbone.generative.fidelity.encoders.SiteEncoder.embed`), never on
images, and keeps only counts on a coarse shared grid: :class:`UmapView` holds
the two grids, :meth:`UmapView.png` draws them, and :meth:`UmapView.to_record`
is what may leave the site. Real embeddings and per-point coordinates never
leave.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fedbone.errors import Problem
from fedbone.validation.errors import EvaluationError

__all__ = ["UmapView", "umap_real_vs_synthetic"]

logger = logging.getLogger(__name__)

#: Fewest rows per set: UMAP needs neighbours, a density needs points.
MIN_ROWS = 5
# Margin around the embedded points, as a fraction of their span, so that no
# point sits on the grid's outer edge.
_MARGIN = 0.05


@dataclass(frozen=True)
class UmapView:
    """Binned 2-D UMAP of real and synthetic embeddings, safe to release.

    Attributes
    ----------
    grid_real
        ``(bins, bins)`` int counts of real points; rows follow the second UMAP
        axis (upwards), columns the first. Cells with fewer than ``min_cell``
        real points are 0 (small-cell suppression).
    grid_synthetic
        Counts of synthetic points on the same grid (not suppressed: synthetic
        images are no patient's data).
    extent
        ``(x_min, x_max, y_min, y_max)`` of the grid in UMAP coordinates.
    min_cell
        The small-cell threshold applied to ``grid_real``.
    n_real, n_synthetic
        Number of embeddings of each kind (before suppression).
    """

    grid_real: np.ndarray
    grid_synthetic: np.ndarray
    extent: tuple[float, float, float, float]
    min_cell: int
    n_real: int
    n_synthetic: int

    def png(self) -> bytes:
        """Render real density, synthetic density and their overlay as a PNG.

        The overlay shows real density in magenta and synthetic density in
        green, so aligned distributions look white-grey; no point is drawn.
        """
        figure = Figure(figsize=(10.5, 3.6), dpi=100, layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.subplots(1, 3, sharex=True, sharey=True)
        options = {"origin": "lower", "extent": self.extent, "aspect": "auto"}
        for ax, grid, title, colours in (
            (axes[0], self.grid_real, f"real (n={self.n_real})", "magma"),
            (
                axes[1],
                self.grid_synthetic,
                f"synthetic (n={self.n_synthetic})",
                "viridis",
            ),
        ):
            image = ax.imshow(grid, cmap=colours, **options)
            figure.colorbar(image, ax=ax, label="count")
            ax.set_title(title)
        real = _unit(self.grid_real)
        synthetic = _unit(self.grid_synthetic)
        axes[2].imshow(np.stack([real, synthetic, real], axis=-1), **options)
        axes[2].set_title("overlay\nreal magenta, synthetic green")
        for ax in axes:
            ax.set_xlabel("UMAP 1")
        axes[0].set_ylabel("UMAP 2")
        figure.suptitle(
            f"UMAP of embeddings, {len(self.grid_real)}x{len(self.grid_real)} grid, "
            f"real cells under {self.min_cell} suppressed"
        )
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        return buffer.getvalue()

    def to_record(self) -> dict[str, list[int] | int | float]:
        """Return what may leave the site: grids, shape, extent, counts.

        Grids are flattened row by row; their size depends on ``bins`` only,
        never on the number of images.
        """
        x_min, x_max, y_min, y_max = self.extent
        return {
            "grid-real": [int(v) for v in self.grid_real.ravel()],
            "grid-synthetic": [int(v) for v in self.grid_synthetic.ravel()],
            "bins": int(self.grid_real.shape[0]),
            "x-min": x_min,
            "x-max": x_max,
            "y-min": y_min,
            "y-max": y_max,
            "min-cell": self.min_cell,
            "n-real": self.n_real,
            "n-synthetic": self.n_synthetic,
        }


def _unit(grid: np.ndarray) -> np.ndarray:
    peak = grid.max()
    return grid / peak if peak > 0 else np.zeros(grid.shape)


def _check_inputs(
    real: np.ndarray, synthetic: np.ndarray, bins: int, min_cell: int, n_neighbors: int
) -> list[Problem]:
    problems = []
    for name, features in (("real", real), ("synthetic", synthetic)):
        if features.ndim != 2:
            problems.append(
                Problem(
                    "feature-shape",
                    f"expected (N, D) embeddings, got shape {features.shape}; "
                    "embed images first",
                    name,
                )
            )
        elif len(features) < MIN_ROWS:
            problems.append(
                Problem(
                    "too-few-rows",
                    f"{len(features)} rows, need at least {MIN_ROWS}",
                    name,
                )
            )
        elif not np.isfinite(features).all():
            problems.append(
                Problem("not-finite", "embeddings hold NaN or infinity", name)
            )
    if real.ndim == 2 and synthetic.ndim == 2 and real.shape[1] != synthetic.shape[1]:
        problems.append(
            Problem(
                "feature-dim-mismatch",
                f"real has {real.shape[1]} features, synthetic {synthetic.shape[1]}; "
                "embed both with the same encoder",
                "synthetic",
            )
        )
    if bins < 2:
        problems.append(Problem("bins", "must be at least 2", "bins"))
    if min_cell < 0:
        problems.append(Problem("min-cell", "must be non-negative", "min_cell"))
    if n_neighbors < 2:
        problems.append(Problem("n-neighbors", "must be at least 2", "n_neighbors"))
    return problems


def _extent(points: np.ndarray) -> tuple[float, float, float, float]:
    low = points.min(axis=0)
    high = points.max(axis=0)
    margin = np.maximum((high - low) * _MARGIN, 1e-6)
    return (
        float(low[0] - margin[0]),
        float(high[0] + margin[0]),
        float(low[1] - margin[1]),
        float(high[1] + margin[1]),
    )


def _counts(
    points: np.ndarray, extent: tuple[float, float, float, float], bins: int
) -> np.ndarray:
    x_min, x_max, y_min, y_max = extent
    # histogram2d(y, x) puts the second axis in rows, as imshow draws it.
    grid, _, _ = np.histogram2d(
        points[:, 1], points[:, 0], bins=bins, range=[[y_min, y_max], [x_min, x_max]]
    )
    return grid.astype(np.int64)


def umap_real_vs_synthetic(
    real: np.ndarray,
    synthetic: np.ndarray,
    *,
    bins: int = 24,
    min_cell: int = 5,
    seed: int = 0,
    n_neighbors: int = 15,
) -> UmapView:
    """Fit one UMAP on real and synthetic embeddings and bin it on a shared grid.

    Small-cell suppression: any cell of the real grid holding fewer than
    ``min_cell`` real points is set to 0, so the released grid cannot single
    out a patient in a sparse region.

    Parameters
    ----------
    real, synthetic
        ``(N, D)`` and ``(M, D)`` feature vectors (not images), at least
        :data:`MIN_ROWS` rows each.
    bins
        Cells per axis.
    min_cell
        Small-cell threshold for the real grid (the site's setting).
    seed
        UMAP random state; a seeded run is reproducible (single-threaded).
    n_neighbors
        UMAP neighbourhood size (clipped to the number of points minus one).

    Returns
    -------
    UmapView
        The two grids and their extent.

    Raises
    ------
    EvaluationError
        On embeddings that are not 2-D, too short, non-finite or of different
        widths, or on invalid settings.
    """
    real = np.asarray(real, dtype=np.float64)
    synthetic = np.asarray(synthetic, dtype=np.float64)
    EvaluationError.raise_if_any(
        "UMAP inputs", _check_inputs(real, synthetic, bins, min_cell, n_neighbors)
    )
    # Imported here: umap-learn takes seconds to import and JIT-compile, which
    # only callers of this function should pay.
    import umap

    features = np.concatenate([real, synthetic])
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=min(n_neighbors, len(features) - 1),
        random_state=seed,
        n_jobs=1,
    )
    points = np.asarray(reducer.fit_transform(features), dtype=np.float64)
    extent = _extent(points)
    grid_real = _counts(points[: len(real)], extent, bins)
    grid_synthetic = _counts(points[len(real) :], extent, bins)
    suppressed = (grid_real > 0) & (grid_real < min_cell)
    grid_real[suppressed] = 0
    logger.info(
        "UMAP of %d real and %d synthetic embeddings: %d occupied real cells "
        "of %d suppressed (under %d points)",
        len(real),
        len(synthetic),
        int(suppressed.sum()),
        bins * bins,
        min_cell,
    )
    return UmapView(
        grid_real=grid_real,
        grid_synthetic=grid_synthetic,
        extent=extent,
        min_cell=min_cell,
        n_real=len(real),
        n_synthetic=len(synthetic),
    )
