"""The site's own fidelity page: its real scans beside its generator's images.

Written into the run's GAN folder, ``<work_dir>/gan/<run>/fidelity.html``,
with one PNG per class of the study task. The page shows real training scans,
so it stays at the site: nothing here is sent, and the folder is the site's
own. The figures table is the one whose scalars the site does send
(:meth:`~fedbone.generative.fidelity.reference.FidelityReference.to_metrics`),
with the number of images on each side added for the site's reader.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np

from fedbone.generative.fidelity.grids import GRID_COLUMNS, write_image_grid
from fedbone.generative.fidelity.reference import (
    CLASS_GROUPS,
    GROUP_LABELS,
    MEASURES,
    SOURCES,
    FidelityReference,
    LabelledImages,
    group_rows,
)

__all__ = ["FIDELITY_PAGE", "fidelity_table_rows", "write_fidelity_page"]

FIDELITY_PAGE = "fidelity.html"

_COMPARISONS = {
    "synthetic": "synthetic vs held-out real",
    "real": "training real vs held-out real",
}
_COLUMNS = ("class", "comparison", "n held-out", "n other", *MEASURES)


def fidelity_table_rows(reference: FidelityReference) -> list[dict[str, str]]:
    """Return the figures table: one row per class group and comparison."""
    return [
        {
            "class": f"{reference.task} {GROUP_LABELS[item.group]}",
            "comparison": _COMPARISONS[source],
            "n held-out": str(item.of(source).n_held_out),
            "n other": str(item.of(source).n_other),
            **{m: _figure(item.of(source).value(m)) for m in MEASURES},
        }
        for item in reference.classes
        for source in SOURCES
    ]


def write_fidelity_page(
    state: Path,
    reference: FidelityReference,
    training: LabelledImages,
    synthetic: LabelledImages,
    *,
    seed: int,
) -> Path:
    """Write ``fidelity.html`` and its grids (site-local; never sent).

    Parameters
    ----------
    state
        The run's GAN folder.
    reference
        The figures, from
        :func:`~fedbone.generative.fidelity.reference.fidelity_reference`.
    training
        The site's training scans; a seeded few per class are shown.
    synthetic
        Images of the selected generator; the first few per class are shown.
    seed
        Seeds which training scans are shown.

    Returns
    -------
    Path
        The page.
    """
    rng = np.random.default_rng(seed)
    grids = [
        _class_grid(state, reference.task, group, training, synthetic, rng)
        for group in CLASS_GROUPS
    ]
    page = state / FIDELITY_PAGE
    page.write_text(_page(reference, grids), encoding="utf-8")
    return page


def _class_grid(
    state: Path,
    task: str,
    group: str,
    training: LabelledImages,
    synthetic: LabelledImages,
    rng: np.random.Generator,
) -> Path:
    real_rows = group_rows(training.class_ids, task, group)
    shown = np.sort(rng.permutation(real_rows)[:GRID_COLUMNS])
    fake_rows = group_rows(synthetic.class_ids, task, group)[:GRID_COLUMNS]
    label = f"{task} {GROUP_LABELS[group]}"
    return write_image_grid(
        [
            ("real (training)", training.take(shown).images),
            ("synthetic", synthetic.take(fake_rows).images),
        ],
        state / f"fidelity-{group}.png",
        title=f"{label}: real training scans (top) and the selected generator",
    )


def _figure(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4g}"


def _table(rows: list[dict[str, str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in _COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(r[c])}</td>" for c in _COLUMNS) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _page(reference: FidelityReference, grids: list[Path]) -> str:
    images = "".join(
        f'<p><img alt="{html.escape(p.stem)}" src="{html.escape(p.name)}"></p>'
        for p in grids
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<title>Generator fidelity (site-local)</title>"
        "<style>table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:3px 8px;font-size:13px}</style></head><body>"
        "<h1>Generator fidelity (site-local, never sent)</h1>"
        "<p>Held-out real scans (val and test) compared, in this site's feature "
        "encoder, with the selected generator's images and with this site's "
        "training scans (same number of images on each side). The training vs "
        "held-out row is the floor: what two real samples of this site differ "
        "by. FD and KID: lower is closer; precision (synthetic inside the real "
        "manifold) and recall (real covered by the synthetic): higher is "
        "better. n/a: fewer than 4 images on a side.</p>"
        f"{_table(fidelity_table_rows(reference))}"
        "<h2>Real training scans and synthetic images, per class</h2>"
        f"{images}</body></html>"
    )
