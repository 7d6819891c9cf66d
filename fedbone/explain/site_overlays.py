"""Grad-CAM overlays of a site's own scans, kept in a site-local folder.

Each overlay shows the scan on the classifier's canvas beside the scan with
its Grad-CAM map of the positive class (:func:`fedbone.explain.gradcam.gradcam_maps`)
laid over it, titled with the scan's id, label and the model's probability.
An ``index.html`` lists them. Nothing here is sent anywhere: the folder is
the site's, for its physicians to look at where the model looked.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from fedbone.classifier.local import labelled_rows, predict_images
from fedbone.data.cache import SiteCache
from fedbone.explain.gradcam import gradcam_maps
from fedbone.models import ClassifierSpec, build_classifier
from fedbone.models.parameters import load_arrays

__all__ = ["Overlay", "write_site_overlays"]


@dataclass(frozen=True)
class Overlay:
    """One written overlay: the scan, its label, the model's score, the file."""

    scan_id: str
    label: int
    probability: float
    path: Path


def write_site_overlays(
    cache: SiteCache,
    spec: ClassifierSpec,
    arrays: dict[str, np.ndarray],
    out_dir: Path,
    *,
    task: str = "bm",
    split: str = "test",
    limit: int = 20,
) -> list[Overlay]:
    """Write Grad-CAM overlays of up to ``limit`` scans of ``split``.

    Positive scans come first (where a physician wants to see the evidence).

    Parameters
    ----------
    cache
        The site's prepared cache.
    spec
        The classifier's architecture.
    arrays
        Its weights (the study's model file).
    out_dir
        The site-local folder (created).
    task
        ``bm`` or ``ca``: the label shown; unlabelled scans are skipped.
    split
        The split drawn from.
    limit
        Most overlays written.
    """
    rows, labels = labelled_rows(cache, task, split)
    order = np.argsort(-labels, kind="stable")[:limit]
    rows, labels = rows[order], labels[order]
    model = build_classifier(spec)
    load_arrays(model, arrays)
    images = np.asarray(cache.images[np.sort(rows)], dtype=np.float32)
    images = images[np.argsort(np.argsort(rows))]  # back to the chosen order
    probabilities = predict_images(model, images, device="cpu")
    maps = gradcam_maps(model, images)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for row, label, image, cam, p in zip(
        rows, labels, images, maps, probabilities, strict=True
    ):
        scan_id = cache.index[int(row)].scan_id
        path = out_dir / f"{scan_id.replace('/', '_')}.png"
        fig, axes = plt.subplots(
            1, 2, figsize=(4, 2.2 * image.shape[0] / image.shape[1] / 2)
        )
        axes[0].imshow(image, cmap="gray_r", vmin=0, vmax=1)
        axes[1].imshow(image, cmap="gray_r", vmin=0, vmax=1)
        axes[1].imshow(cam, cmap="jet", alpha=0.45 * (cam > 0.05), vmin=0, vmax=1)
        for ax in axes:
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(f"{scan_id}  label {int(label)}  p={p:.2f}", fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(Overlay(scan_id, int(label), float(p), path))
    rows_html = "".join(
        f"<tr><td>{html.escape(o.scan_id)}</td><td>{o.label}</td>"
        f"<td>{o.probability:.3f}</td><td><img src='{html.escape(o.path.name)}'"
        " height='320'></td></tr>"
        for o in written
    )
    (out_dir / "index.html").write_text(
        "<!doctype html><meta charset='utf-8'><title>Grad-CAM (site-local)</title>"
        "<p>Grad-CAM of the positive class on this site's own scans. Site-local: "
        "never sent.</p><table><tr><th>scan</th><th>label</th><th>probability</th>"
        f"<th>scan | Grad-CAM</th></tr>{rows_html}</table>",
        encoding="utf-8",
    )
    return written
