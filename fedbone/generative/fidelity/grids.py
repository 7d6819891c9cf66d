"""Image grids for a human eye: rows of scans, labelled, on one grey scale.

The site's fidelity page puts real training scans beside synthetic images; the
centre's report shows the released synthetic pool. Both draw with
:func:`write_image_grid`: ``gray_r`` with ``vmin=0`` and ``vmax=1`` (tracer
uptake dark on white, as a reader of bone scans expects), so grey levels mean
the same in every row and every figure. Figures are drawn without pyplot's
global state (matplotlib Agg canvas).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["GRID_COLUMNS", "write_image_grid"]

#: Images per row of a grid.
GRID_COLUMNS = 8

_CELL_INCHES = 1.1


def write_image_grid(
    rows: Sequence[tuple[str, np.ndarray]], path: Path, *, title: str
) -> Path:
    """Draw labelled rows of ``(N, H, W)`` images in [0, 1] to a PNG.

    Parameters
    ----------
    rows
        ``(label, images)`` per row; at most :data:`GRID_COLUMNS` images of
        each are drawn, a row with none says so.
    path
        Output PNG (its folder is created).
    title
        Figure title.

    Returns
    -------
    Path
        ``path``.
    """
    heights = [np.asarray(images).shape[1:] for _, images in rows if len(images)]
    height, width = heights[0] if heights else (2, 1)
    aspect = height / max(width, 1)
    figure = Figure(
        figsize=(GRID_COLUMNS * _CELL_INCHES, len(rows) * _CELL_INCHES * aspect + 0.6),
        dpi=100,
        layout="constrained",
    )
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(rows), GRID_COLUMNS, squeeze=False)
    for row_axes, (label, images) in zip(axes, rows, strict=True):
        _draw_row(row_axes, label, np.asarray(images[:GRID_COLUMNS]))
    figure.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def _draw_row(axes: Sequence[Axes], label: str, images: np.ndarray) -> None:
    for column, ax in enumerate(axes):
        ax.set_xticks([])
        ax.set_yticks([])
        if column < len(images):
            pixels = np.asarray(images[column], dtype=np.float32)
            ax.imshow(pixels, cmap="gray_r", vmin=0.0, vmax=1.0)
        else:
            ax.set_axis_off()
    axes[0].set_ylabel(label, fontsize=8)
    if not len(images):
        axes[0].set_axis_on()
        axes[0].text(0.5, 0.5, "none", ha="center", va="center", fontsize=8)
