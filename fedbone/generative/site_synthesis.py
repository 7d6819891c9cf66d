"""A site makes, curates, audits and releases synthetic images (``synthesize``).

Runs where the generator was trained, with what phase ``gan`` recorded in
``selected.json`` (checkpoint, curation classifier, encoder -- each checked
against its sha256 before use). The audit compares every kept image with all
of the site's training scans under the site's own release rule; released
images are written to the site's release register, which the egress guard
checks before letting any image out. Also here: storing a pool the server
sent, the training view that mixes it in, and the UMAP grid of real vs
synthetic embeddings.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedbone.classifier.errors import TrainingError
from fedbone.classifier.runtime import input_channels, resolve_device, to_model_input
from fedbone.classifier.synthetic_mix import MixedCache, MixSpec, SyntheticSet
from fedbone.classifier.synthetic_mix import mixed_training_cache as _mix
from fedbone.config.synthetic import GanSettings, SynthesisSettings
from fedbone.data.cache import SiteCache
from fedbone.errors import Problem
from fedbone.generative.audit.similarity import AuditThresholds
from fedbone.generative.fidelity.ssim import ms_ssim
from fedbone.generative.fidelity.umap_view import UmapView, umap_real_vs_synthetic
from fedbone.generative.pool import pool_digest
from fedbone.generative.release_register import ReleaseRegister, wire_images
from fedbone.generative.site_gan import (
    SELECTION_FILE,
    gan_state_dir,
    labelled_class_rows,
    load_encoder,
    recorded_site_models,
)
from fedbone.generative.synthesis import SynthesisSpec, site_audit_inputs, synthesize
from fedbone.generative.trainer import GanTrainer
from fedbone.models import ClassifierSpec, build_classifier
from fedbone.models.weights import file_sha256
from fedbone.safe_names import run_folder

__all__ = [
    "SiteRelease",
    "mixed_training_view",
    "store_received_pool",
    "synthesize_at_site",
    "umap_at_site",
    "wire_summary",
]

logger = logging.getLogger(__name__)

_BATCH = 64


@dataclass(frozen=True)
class SiteRelease:
    """Released images and what may be said about them."""

    images: np.ndarray
    class_ids: np.ndarray
    summary: dict[str, float | int | list[int]]
    provenance: dict[str, str]


def _selection(state: Path) -> dict[str, Any]:
    path = state / SELECTION_FILE
    if not path.is_file():
        raise TrainingError(
            str(state),
            [
                Problem(
                    "no-generator",
                    "this site has no selected generator for this run; run "
                    "phase gan (local mode) at this site first",
                )
            ],
        )
    selection: dict[str, Any] = json.loads(path.read_text())
    return selection


def _verified(path: Path, expected: str, what: str) -> Path:
    actual = file_sha256(path)
    if actual != expected:
        raise TrainingError(
            str(path),
            [
                Problem(
                    "sha256-mismatch",
                    f"the {what} changed since phase gan selected it ({actual[:12]}"
                    f" != {expected[:12]}); re-run phase gan",
                )
            ],
        )
    return path


def _classifier_fn(
    spec: ClassifierSpec, weights: Path, device: str
) -> Callable[[np.ndarray], np.ndarray]:
    target = resolve_device(device)
    model = build_classifier(spec)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.to(target).eval()
    channels = input_channels(model)

    @torch.no_grad()
    def classify(images: np.ndarray) -> np.ndarray:
        scores = []
        for start in range(0, len(images), _BATCH):
            batch = torch.from_numpy(np.asarray(images[start : start + _BATCH]))
            logits = model(to_model_input(batch.float(), channels).to(target))
            scores.append(torch.sigmoid(logits.float()).cpu().numpy())
        return np.concatenate(scores) if scores else np.zeros(0)

    return classify


def wire_summary(summary: dict[str, Any]) -> dict[str, float | int | list[int]]:
    """Keep what the ``audit`` record may carry: numbers and the histogram.

    Parameters
    ----------
    summary
        :meth:`~fedbone.generative.synthesis.SynthesisResult.summary`: strings
        and the public histogram edges are dropped, flags become 0/1 and
        ``None`` becomes ``nan``.
    """
    wire: dict[str, float | int | list[int]] = {}
    for key, value in summary.items():
        if key == "nearest-mse-histogram-edges" or isinstance(value, str):
            continue
        if isinstance(value, bool):
            wire[key] = int(value)
        elif isinstance(value, list):
            wire[key] = [int(v) for v in value]
        elif value is None:
            wire[key] = float("nan")
        else:
            wire[key] = value
    return wire


def synthesize_at_site(
    cache: SiteCache,
    task: str,
    settings: SynthesisSettings,
    classifier: ClassifierSpec,
    audit: AuditThresholds,
    *,
    work_dir: Path,
    run_name: str,
    register: ReleaseRegister,
    seed: int,
    device: str,
) -> SiteRelease:
    """Generate, curate, audit; register and return the released images.

    Parameters
    ----------
    cache
        The site's prepared cache (the audit's training and held-out scans).
    task
        The study task; its curation classifier decides agreement.
    settings
        How many images of which classes, in at most how many batches.
    classifier
        The study's classifier architecture (of the curation classifier).
    audit
        The site's release rule (site config).
    work_dir, run_name
        Where phase ``gan`` left the state.
    register
        The site's release register.
    seed
        Seeds the latents.
    device
        ``auto``, ``cpu`` or ``cuda``.
    """
    state = gan_state_dir(work_dir, run_name)
    selection = _selection(state)
    checkpoint = _verified(
        Path(selection["checkpoint"]), selection["checkpoint-sha256"], "checkpoint"
    )
    weights = _verified(
        state / "curation-classifier.pt",
        selection["classifier-sha256"],
        "curation classifier",
    )
    generator = GanTrainer.load(checkpoint, device=device)
    models = recorded_site_models(state)
    training, patient_ids, held_out = site_audit_inputs(cache)
    target = resolve_device(device)
    result = synthesize(
        generator,
        SynthesisSpec(
            n_per_class=settings.n_per_class,
            classes=settings.classes,
            curate_task=task,
            truncation=settings.truncation,
            seed=seed,
            max_attempts=settings.max_attempts,
        ),
        classify=_classifier_fn(classifier, weights, device),
        training=training,
        training_patient_ids=patient_ids,
        held_out=held_out,
        thresholds=audit,
        checkpoint_sha256=selection["checkpoint-sha256"],
        ms_ssim_fn=ms_ssim,
        device=str(target),
        curation_val_auc=models.curation_val_auc if models else float("nan"),
    )
    images = wire_images(result.images)
    summary = wire_summary(result.summary())
    if len(images):
        register.record(
            images,
            run_name=run_name,
            checkpoint_sha256=selection["checkpoint-sha256"],
            audit=summary,
        )
    provenance = {
        "checkpoint-sha256": selection["checkpoint-sha256"],
        "encoder": str(selection["encoder"])[:128],
        "encoder-sha256": selection["encoder-sha256"],
        "classifier-sha256": selection["classifier-sha256"],
        "spacing-mm": f"{cache.spec.spacing_mm:g}",
    }
    logger.info(
        "synthesis: %d generated, %d released of %d wanted (%s)",
        summary.get("n-generated", -1),
        len(images),
        settings.n_per_class * len(settings.classes),
        "audit passed" if summary.get("passed") else "nothing released",
    )
    np.save(state / "released.npy", images)
    np.save(state / "released-classes.npy", result.class_ids.astype(np.int64))
    return SiteRelease(images, result.class_ids.astype(np.int64), summary, provenance)


def umap_at_site(
    cache: SiteCache,
    gan: GanSettings,
    *,
    work_dir: Path,
    run_name: str,
    min_cell: int,
    seed: int,
    device: str,
) -> UmapView:
    """UMAP of held-out real vs released synthetic embeddings, computed here.

    Only :meth:`UmapView.to_record` (coarse grids, small cells suppressed) is
    meant to leave the site.

    Parameters
    ----------
    cache
        The site's prepared cache; note that every scan with both labels known
        is embedded, train split included, not only val and test.
    gan
        The study's GAN settings (which feature encoder to load).
    work_dir, run_name
        Where the run's GAN state is: ``<work_dir>/gan/<run_name>/``, with
        ``released.npy`` from phase ``synthesize``.
    min_cell
        Small-cell threshold: real-grid cells with fewer points are set to 0.
    seed
        UMAP random state.
    device
        ``auto``, ``cpu`` or ``cuda``.

    Raises
    ------
    TrainingError
        ``no-release`` when phase ``synthesize`` has not run at this site.
    """
    state = gan_state_dir(work_dir, run_name)
    released_path = state / "released.npy"
    if not released_path.is_file():
        raise TrainingError(
            str(state),
            [Problem("no-release", "run phase synthesize at this site first")],
        )
    encoder = load_encoder(gan, state, device)
    rows, _ = labelled_class_rows(cache, ("val", "test", "train"))
    real = encoder.embed(np.asarray(cache.images[rows], dtype=np.float32))
    released = np.load(released_path).astype(np.float32)
    synthetic = encoder.embed(released)
    return umap_real_vs_synthetic(real, synthetic, min_cell=min_cell, seed=seed)


def _pool_dir(work_dir: Path, run_name: str) -> Path:
    return run_folder(work_dir, "synthetic", run_name)


def store_received_pool(
    images: np.ndarray,
    class_ids: np.ndarray,
    *,
    expected_sha256: str,
    work_dir: Path,
    run_name: str,
) -> int:
    """Keep a pool the server sent (checked against its digest); return its size.

    Parameters
    ----------
    images
        ``(N, H, W)`` pooled synthetic images as received.
    class_ids
        ``(N,)`` conditioning class ``2 * bm + ca`` of each image.
    expected_sha256
        Digest of the pool the server announced.
    work_dir, run_name
        The pool is saved to ``<work_dir>/synthetic/<run_name>/``, replacing
        any pool stored there before.

    Raises
    ------
    TrainingError
        ``pool-corrupted`` when the pool does not match ``expected_sha256``.
    """
    actual = pool_digest(images, class_ids)
    if actual != expected_sha256:
        raise TrainingError(
            "synthetic pool",
            [
                Problem(
                    "pool-corrupted",
                    f"the received pool hashes to {actual[:12]}, not the "
                    f"announced {expected_sha256[:12]}; ask the server to resend",
                )
            ],
        )
    pooled = SyntheticSet(
        images=wire_images(images),
        class_ids=np.asarray(class_ids, dtype=np.int64),
        source=np.asarray([f"pool:{expected_sha256[:12]}"] * len(images)),
    )
    pooled.save(_pool_dir(work_dir, run_name))
    return len(pooled)


def mixed_training_view(
    cache: SiteCache,
    task: str,
    *,
    ratio: float,
    synthetic_only: bool,
    work_dir: Path,
    run_name: str,
    seed: int,
) -> SiteCache | MixedCache:
    """Return the site's cache, with the run's stored pool mixed in when asked.

    Parameters
    ----------
    cache
        The site's prepared cache.
    task
        ``bm`` or ``ca``: the labels the mix keeps the prevalence of.
    ratio
        Synthetic images per real training scan; 0 or less (without
        ``synthetic_only``) returns ``cache`` unchanged.
    synthetic_only
        Train on synthetic images alone, as many as the real scans;
        ``ratio`` is then ignored.
    work_dir, run_name
        Where the run's pool is: ``<work_dir>/synthetic/<run_name>/``.
    seed
        Seeds the draw from the pool.

    Raises
    ------
    TrainingError
        ``no-synthetic-pool`` when a mix is asked for but the site received
        no pool in this run.
    """
    if ratio <= 0 and not synthetic_only:
        return cache
    directory = _pool_dir(work_dir, run_name)
    if not directory.is_dir():
        raise TrainingError(
            str(directory),
            [
                Problem(
                    "no-synthetic-pool",
                    "training with synthetic images was asked for but this site "
                    "received no pool in this run; add it to synthesis.recipients",
                )
            ],
        )
    spec = MixSpec(
        ratio=None if synthetic_only else ratio,
        synthetic_only=synthetic_only,
        seed=seed,
    )
    return _mix(cache, task, SyntheticSet.load(directory), spec)
