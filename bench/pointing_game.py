"""Grad-CAM sanity on phantoms: does the map's peak fall on a planted lesion?

Generates phantom site A (CPU profile), prepares its cache, trains the small
CNN on its training split (BM task), and computes Grad-CAM maps
(:func:`fedbone.explain.gradcam.gradcam_maps`) of the test split's
true-positive scans (positive and scored >= 0.5). Each scan's planted lesions
are re-rendered from its plan and carried onto the canvas exactly as its
counts were (:func:`fedbone.data.preprocess.counts_on_canvas` with the scan's
own placements), giving a lesion mask per scan; the pointing game counts the
maps whose peak lies within one canvas pixel (8 mm) of a lesion::

    .venv/bin/python bench/pointing_game.py

Writes ``bench/results/pointing_game.{json,md}`` and an overlay grid PNG.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_data import machine_info

from fedbone.classifier.local import TrainSpec, labelled_rows, predict, train_local
from fedbone.classifier.sampling import Sampling
from fedbone.config.profiles import profile_spec
from fedbone.data.cache import SiteCache
from fedbone.data.phantom import generate_site_cohort, render_planned_scan
from fedbone.data.phantom.plan import plan_site_cohort
from fedbone.data.prepare import prepare_site_cache
from fedbone.data.preprocess import counts_on_canvas
from fedbone.data.scan import NMScan, ScanMetadata, ScanView, View
from fedbone.explain.gradcam import gradcam_maps, pointing_game
from fedbone.models import Architecture, ClassifierSpec, Norm, build_classifier

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SITE, SCALE, MIN_SCANS, SEED = "A", 0.1, 200, 0
EPOCHS = 12
TOLERANCES = (0, 1, 2, 4, 8)
#: The small CNN's last convolution runs after three 2x2 poolings.
CAM_CELL_PX = 8
#: A lesion's mask: pixels within this many sigmas of its centre (native grid).
MASK_SIGMAS = 2.0


def _scan(views: dict[View, np.ndarray], spacing: tuple[float, float]) -> NMScan:
    metadata = ScanMetadata(
        patient_id="phantom",
        source_path="phantom",
        sop_class_uid="",
        transfer_syntax_uid="",
    )
    return NMScan(
        metadata=metadata,
        views={
            v: ScanView(view=v, counts=c, spacing_mm=spacing) for v, c in views.items()
        },
    )


def _lesion_mask(plan, spec) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The plan's planted lesions on the canvas, placed as its counts were."""
    rendered = render_planned_scan(plan)
    spacing = rendered.spacing_mm
    standard = counts_on_canvas(_scan(rendered.views, spacing), spec)
    anterior = rendered.views[View.ANTERIOR]
    rows, cols = np.indices(anterior.shape)
    mask = np.zeros(anterior.shape, dtype=np.float32)
    for lesion in rendered.lesions:
        radius = max(MASK_SIGMAS * lesion.sigma_mm / spacing[0], 1.5)
        mask[(rows - lesion.row) ** 2 + (cols - lesion.column) ** 2 <= radius**2] = 1.0
    views = {View.ANTERIOR: mask, View.POSTERIOR: mask[:, ::-1].copy()}
    on_canvas = counts_on_canvas(
        _scan(views, spacing), spec, placements=standard.placements
    )
    return on_canvas.image > 0.05


def main() -> int:
    """Run the check and write the figures."""
    started = time.perf_counter()
    spec = profile_spec("cpu")
    torch.manual_seed(SEED)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cohort = generate_site_cohort(
            SITE,
            folder / "site",
            scale=SCALE,
            min_scans=MIN_SCANS,
            seed=SEED,
            workers=2,
        )
        prepare_site_cache(cohort.manifest, folder / "cache", spec, workers=2)
        cache = SiteCache.open(folder / "cache")
        classifier = ClassifierSpec(
            architecture=Architecture.SMALL_CNN, norm=Norm.BATCH
        )
        model = build_classifier(classifier)
        train_local(
            model,
            cache,
            "bm",
            TrainSpec(epochs=EPOCHS, sampling=Sampling.BALANCED, device="cpu"),
        )
        rows, labels = labelled_rows(cache, "bm", "test")
        scores = predict(model, cache, rows, device="cpu")
        hits = rows[(labels == 1) & (scores >= 0.5)]
        plans = {
            p.scan_id: p
            for p in plan_site_cohort(SITE, scale=SCALE, min_scans=MIN_SCANS, seed=SEED)
        }
        images = np.asarray(cache.images[np.sort(hits)], dtype=np.float32)
        ids = [cache.index[int(r)].scan_id for r in np.sort(hits)]
        masks = np.stack([_lesion_mask(plans[i], spec) for i in ids])
        maps = gradcam_maps(model, images)
        scores = {t: pointing_game(maps, masks, tolerance=t) for t in TOLERANCES}
        n_positive = int(labels.sum())
        sensitivity = len(hits) / n_positive if n_positive else float("nan")
        _grid(images[:8], maps[:8], masks[:8], RESULTS / "pointing_game.png")
    seconds = time.perf_counter() - started
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    payload = {
        "date": when,
        "site": SITE,
        "scale": SCALE,
        "min_scans": MIN_SCANS,
        "epochs": EPOCHS,
        "n_test_positive": n_positive,
        "n_true_positive": len(ids),
        "sensitivity_at_0.5": sensitivity,
        "pointing_game_by_tolerance_px": scores,
        "cam_cell_px": CAM_CELL_PX,
        "seconds": seconds,
        "machine": machine_info(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pointing_game.json").write_text(json.dumps(payload, indent=2) + "\n")
    text = "\n".join(
        [
            "# Grad-CAM pointing game on phantoms",
            "",
            f"Measured {when} with `python bench/pointing_game.py` ({seconds:.0f} s).",
            f"Machine: {json.dumps(payload['machine'])}",
            "",
            f"Phantom site {SITE} (scale {SCALE}, at least {MIN_SCANS} scans, CPU "
            f"profile 256x64 at 8 mm); small CNN trained {EPOCHS} epochs on its "
            "training split (BM); Grad-CAM (MONAI, last convolution, positive "
            "class) on the test split's true positives.",
            "",
            f"Test positives {n_positive}, true positives (p >= 0.5) {len(ids)}. "
            "Share of true positives whose Grad-CAM peak lies on a planted "
            "lesion or within the tolerance (1 px = 8 mm). The small CNN's last "
            f"convolution works on a grid of {CAM_CELL_PX} px cells (64 mm), "
            "so its maps are coarse: a tolerance below one cell is strict.",
            "",
            "| tolerance (px) | " + " | ".join(str(t) for t in TOLERANCES) + " |",
            "|---|" + "---|" * len(TOLERANCES),
            "| pointing game | "
            + " | ".join(f"{scores[t]:.3f}" for t in TOLERANCES)
            + " |",
            "",
            "![overlays](pointing_game.png)",
            "",
        ]
    )
    (RESULTS / "pointing_game.md").write_text(text)
    sys.stdout.write(text)
    return 0


def _grid(images: np.ndarray, maps: np.ndarray, masks: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(images)
    if count == 0:
        return
    fig, axes = plt.subplots(1, count, figsize=(1.2 * count, 4.2), squeeze=False)
    for ax, image, cam, mask in zip(axes[0], images, maps, masks, strict=True):
        ax.imshow(image, cmap="gray_r", vmin=0, vmax=1)
        ax.imshow(cam, cmap="jet", alpha=0.4, vmin=0, vmax=1)
        ax.contour(mask, levels=[0.5], colors="lime", linewidths=0.6)
        peak = np.unravel_index(int(np.argmax(cam)), cam.shape)
        ax.plot(peak[1], peak[0], "w+", markersize=6)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Grad-CAM (jet), planted lesions (green), peak (+)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
