"""A site audits synthetic images another site released (federated GAN).

A federated generator learnt from every contributing site's scans, so an image
the releasing site's audit passed may still sit too close to a scan at another
site. Before the coordinating centre pools or redistributes such images, each
other contributing site audits them against all of its own training scans
under its own release rule (:func:`fedbone.generative.audit.similarity.audit_synthetic`,
the same rule and controls as its own releases) and answers one verdict per
image -- pass (1) or block (0) -- plus the usual audit summary.

The centre learns one bit per image it already holds. Nothing about any real
scan leaves: the verdict says only that some scan here is closer than the
site's real-vs-real control allows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from fedbone.classifier.errors import TrainingError
from fedbone.classifier.runtime import resolve_device
from fedbone.data.cache import SiteCache
from fedbone.errors import Problem
from fedbone.generative.audit.similarity import AuditThresholds, audit_synthetic
from fedbone.generative.fidelity.ssim import ms_ssim
from fedbone.generative.synthesis import site_audit_inputs

__all__ = ["CrossAudit", "cross_audit_at_site"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CrossAudit:
    """Verdicts on received images and the aggregate summary that may leave."""

    passed: np.ndarray
    summary: dict[str, float | int | list[int]]


def _wire_summary(raw: dict[str, object]) -> dict[str, float | int | list[int]]:
    summary: dict[str, float | int | list[int]] = {}
    for key, value in raw.items():
        if key == "nearest-mse-histogram-edges":
            continue
        if isinstance(value, list):
            summary[key] = [int(v) for v in value]
        elif isinstance(value, bool | int):
            summary[key] = int(value)
        elif isinstance(value, float):
            summary[key] = value
    return summary


def cross_audit_at_site(
    cache: SiteCache, images: np.ndarray, audit: AuditThresholds, *, device: str
) -> CrossAudit:
    """Audit received synthetic images against this site's training scans.

    Parameters
    ----------
    cache
        The site's prepared cache (training scans, patient ids, held-out scans).
    images
        ``(N, H, W)`` synthetic images in [0, 1] on the site's canvas.
    audit
        The site's release rule (site config ``privacy.audit``).
    device
        ``auto``, ``cpu`` or ``cuda`` for the distance products.

    Returns
    -------
    CrossAudit
        ``passed``: uint8 0/1 per image; ``summary``: counts, thresholds,
        quantiles, histogram and membership AUC (as for a site's own release).

    Raises
    ------
    TrainingError
        ``not-images`` when the images are not on this site's canvas.
    """
    pixels = np.asarray(images, dtype=np.float32)
    canvas = tuple(cache.images.shape[1:])
    if pixels.ndim != 3 or pixels.shape[1:] != canvas:
        raise TrainingError(
            "cross-audit",
            [
                Problem(
                    "not-images",
                    f"received {pixels.shape}; expected (N, *{canvas}) images on "
                    "this site's canvas",
                )
            ],
        )
    training, patient_ids, held_out = site_audit_inputs(cache)
    if len(pixels) == 0:
        return CrossAudit(np.zeros(0, dtype=np.uint8), {"n-synthetic": 0})
    result = audit_synthetic(
        pixels,
        training,
        training_patient_ids=patient_ids,
        held_out=held_out if len(held_out) else None,
        thresholds=audit,
        ms_ssim_fn=ms_ssim,
        device=str(resolve_device(device)),
    )
    passed = result.released.astype(np.uint8)
    logger.info(
        "cross-audit: %d of %d received images pass this site's rule",
        int(passed.sum()),
        len(passed),
    )
    return CrossAudit(passed, _wire_summary(dict(result.summary())))
