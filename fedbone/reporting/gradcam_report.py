"""The report's Grad-CAM section: where the model looks on synthetic scans.

The centre holds the pooled synthetic images (released by the sites' audits)
and the federated classifier, so it can show Grad-CAM overlays without any
site's scan: a few synthetic images of each task-positive class, the model's
probability above each. Real-scan overlays stay at the sites
(``fedbone explain``).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from fedbone.classifier.local import predict_images
from fedbone.classifier.synthetic_mix import SyntheticSet
from fedbone.explain.gradcam import gradcam_maps
from fedbone.models import ClassifierSpec, build_classifier
from fedbone.models.parameters import load_arrays
from fedbone.reporting.synthetic_report import ReportSection

__all__ = ["write_synthetic_gradcam"]


def _positive(class_ids: np.ndarray, task: str) -> np.ndarray:
    """Whether each conditioning class ``2 * bm + ca`` is positive for ``task``."""
    return (class_ids // 2 == 1) if task == "bm" else (class_ids % 2 == 1)


def write_synthetic_gradcam(
    pool: SyntheticSet,
    spec: ClassifierSpec,
    arrays: dict[str, np.ndarray],
    out_dir: Path,
    *,
    task: str,
    count: int = 6,
) -> ReportSection | None:
    """Write ``gradcam_synthetic.png``; return its section (None: nothing to show).

    Parameters
    ----------
    pool
        The centre's pooled synthetic images.
    spec, arrays
        The federated classifier.
    out_dir
        The report folder.
    task
        ``bm`` or ``ca``: which synthetic images are positive.
    count
        Overlays shown (positives first, then negatives).
    """
    class_ids = np.asarray(pool.class_ids)
    positive = np.flatnonzero(_positive(class_ids, task))
    negative = np.flatnonzero(~_positive(class_ids, task))
    chosen = np.concatenate([positive[: count - count // 3], negative[: count // 3]])
    if chosen.size == 0:
        return None
    images = np.asarray(pool.images[np.sort(chosen)], dtype=np.float32)
    labels = _positive(class_ids[np.sort(chosen)], task)
    model = build_classifier(spec)
    load_arrays(model, arrays)
    probabilities = predict_images(model, images, device="cpu")
    maps = gradcam_maps(model, images)
    fig, axes = plt.subplots(1, len(images), figsize=(1.3 * len(images), 4.2))
    for ax, image, cam, p, label in zip(
        np.atleast_1d(axes), images, maps, probabilities, labels, strict=True
    ):
        ax.imshow(image, cmap="gray_r", vmin=0, vmax=1)
        ax.imshow(cam, cmap="jet", alpha=0.4, vmin=0, vmax=1)
        ax.set_title(f"{'pos' if label else 'neg'} p={p:.2f}", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Grad-CAM of the federated model on synthetic images", fontsize=8)
    fig.tight_layout()
    path = out_dir / "gradcam_synthetic.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return ReportSection(
        heading="Grad-CAM on synthetic images",
        notes=(
            "Grad-CAM (MONAI, last convolution, positive class; maps scaled by "
            "their maximum, not inverted) of the federated classifier on "
            "released synthetic images the centre pooled. No site's scan is "
            "shown: sites see overlays of their own scans with `fedbone "
            "explain`. The pointing game on phantoms is in "
            "bench/results/pointing_game.md.",
        ),
        images=(path,),
    )
