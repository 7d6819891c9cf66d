"""Site-local privacy audit: no synthetic image may copy a training scan.

Haberl et al. compared every synthetic image with every training image by
pixel-wise MSE, MAE and MS-SSIM and by shift-robust feature-space neighbours.
fedbone turns that comparison into a release rule calibrated on the site's own
real data, since "how close is too close" depends on the cohort:

* **control** -- for each training scan, its nearest training scan of a
  *different* patient (and, where a patient has repeat scans, its nearest other
  scan of the *same* patient). Two different people are never a privacy leak,
  so the ``real_quantile`` quantile of the different-patient distances is the
  distance under which a synthetic image is suspiciously close.
* **release rule** -- a synthetic image is blocked when its nearest training
  scan is nearer than that quantile in pixel MSE or in feature space, or when
  its MS-SSIM to one of its ``top_k`` nearest candidates exceeds the ceiling.
* **membership inference** -- the nearest-synthetic distance of training scans
  vs held-out real scans, as an AUC: about 0.5 when the generator leaks nothing.

Everything runs at the site; :meth:`AuditResult.summary` holds the only values
meant to leave it (counts, quantiles, a fixed-bin histogram, the closest pair's
similarity values), never an image or an index. Flower-free: numpy and torch.

The distance machinery lives in :mod:`fedbone.generative.audit.pairwise` and the
input checks in :mod:`fedbone.generative.audit.inputs`; this module holds the
release rule, the real-vs-real control and the membership test.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from fedbone.config.site import AuditThresholds
from fedbone.generative.audit.inputs import check_audit_inputs
from fedbone.generative.audit.pairwise import (
    ChunkedReferences,
    DistanceBlocks,
    FeatureFn,
    MsSsimFn,
    PairwiseDistances,
    candidate_errors,
    flatten_images,
    max_candidate_ms_ssim,
    nearest_k,
    pairwise_mse_mae,
    pixel_blocks,
    shift_robust_features,
    shifted_feature_blocks,
)
from fedbone.validation.metrics import roc_auc

__all__ = [
    "HISTOGRAM_EDGES",
    "AuditResult",
    "AuditThresholds",
    "PairwiseDistances",
    "audit_synthetic",
    "pairwise_mse_mae",
    "shift_robust_features",
]

logger = logging.getLogger(__name__)

# Fixed log-spaced bins of nearest MSE (images in [0, 1]): fixed so that the
# histograms of several sites and rounds add up bin by bin.
HISTOGRAM_EDGES: tuple[float, ...] = tuple(float(10.0**e) for e in range(-6, 1))
_SUMMARY_QUANTILES = (0.01, 0.05, 0.25, 0.5)


@dataclass(frozen=True)
class AuditResult:
    """The outcome of auditing one batch of synthetic images at one site.

    ``nearest_index`` and the per-image arrays never leave the site; only
    :meth:`summary` does.

    Parameters
    ----------
    released
        Per synthetic image: passed every rule.
    nearest_mse, nearest_index
        Pixel MSE to, and index of, the nearest training scan.
    nearest_feature
        Feature-space distance to the nearest training scan (``nan`` when the
        feature rule is off).
    max_ms_ssim
        Highest MS-SSIM to the ``top_k`` candidates (``nan`` without an
        MS-SSIM function).
    threshold_mse, threshold_feature
        Release thresholds from the different-patient control.
    control
        Real-vs-real quantiles: ``different-patient-*`` and, where repeat scans
        exist, ``same-patient-*`` (``same-patient-n`` counts such scans).
    closest_pair
        ``mse``, ``mae`` and ``ms_ssim`` of the most similar synthetic/training
        pair by MSE.
    n_blocked
        Synthetic images withheld.
    membership_auc
        AUC of "training scan" vs "held-out scan" by nearness to the synthetic
        set; ``nan`` without held-out scans.
    thresholds
        The rule applied.
    """

    released: np.ndarray
    nearest_mse: np.ndarray
    nearest_index: np.ndarray
    nearest_feature: np.ndarray
    max_ms_ssim: np.ndarray
    threshold_mse: float
    threshold_feature: float
    control: dict[str, float]
    closest_pair: dict[str, float]
    n_blocked: int
    membership_auc: float
    thresholds: AuditThresholds = field(default_factory=AuditThresholds)

    def summary(self) -> dict[str, float | int | list[float] | list[int]]:
        """Return the aggregates that may leave the site, kebab-case keys.

        Counts (also per rule), thresholds, quantiles of the nearest MSE, its
        histogram over :data:`HISTOGRAM_EDGES` (values outside fall in the end
        bins), the real-vs-real control, the closest pair's MSE/MAE/MS-SSIM and
        the membership AUC. No image, no index.
        """
        rules = self.thresholds
        clipped = np.clip(self.nearest_mse, HISTOGRAM_EDGES[0], HISTOGRAM_EDGES[-1])
        histogram, _ = np.histogram(clipped, bins=np.asarray(HISTOGRAM_EDGES))
        summary: dict[str, float | int | list[float] | list[int]] = {
            "n-synthetic": int(self.released.size),
            "n-released": int(self.released.sum()),
            "n-blocked": self.n_blocked,
            "n-blocked-mse": int((self.nearest_mse < self.threshold_mse).sum()),
            "n-blocked-feature": int(
                (self.nearest_feature < self.threshold_feature).sum()
            ),
            "n-blocked-ms-ssim": int((self.max_ms_ssim > rules.ms_ssim_ceiling).sum()),
            "real-quantile": rules.real_quantile,
            "ms-ssim-ceiling": rules.ms_ssim_ceiling,
            "threshold-mse": self.threshold_mse,
            "threshold-feature": self.threshold_feature,
            "nearest-mse-histogram": [int(count) for count in histogram],
            "nearest-mse-histogram-edges": list(HISTOGRAM_EDGES),
            "membership-auc": self.membership_auc,
        }
        for q in _SUMMARY_QUANTILES:
            summary[f"nearest-mse-q{round(q * 100):02d}"] = _quantile(
                self.nearest_mse, q
            )
        summary.update(self.control)
        summary.update(
            {
                f"closest-pair-{key.replace('_', '-')}": value
                for key, value in self.closest_pair.items()
            }
        )
        return summary


def audit_synthetic(
    synthetic: np.ndarray,
    training: np.ndarray,
    *,
    training_patient_ids: Sequence[str],
    held_out: np.ndarray | None,
    thresholds: AuditThresholds,
    features: FeatureFn | None = None,
    ms_ssim_fn: MsSsimFn | None = None,
    device: str = "cpu",
    chunk: int = 256,
) -> AuditResult:
    """Decide which synthetic images may leave the site.

    Parameters
    ----------
    synthetic
        ``(S, H, W)`` generated images in [0, 1].
    training
        ``(T, H, W)`` the generator's training scans in [0, 1].
    training_patient_ids
        One patient id per training scan; scans sharing an id are repeat scans.
    held_out
        ``(R, H, W)`` real scans the generator never saw, for the membership
        test; ``None`` skips it (AUC ``nan``).
    thresholds
        The site's release rule.
    features
        Maps ``(N, H, W)`` images to ``(N, ...)`` features; distances are mean
        squared differences. Default :func:`shift_robust_features`. Only used
        when ``thresholds.feature_space``.
    ms_ssim_fn
        Takes two ``(B, 1, H, W)`` float tensors in [0, 1] and returns ``(B,)``
        MS-SSIM values; ``None`` skips the MS-SSIM rule.
    device
        Torch device for the distance products.
    chunk
        Images per matrix product.

    Returns
    -------
    AuditResult
        Verdicts, per-image distances (site-only) and the releasable summary.

    Raises
    ------
    EvaluationError
        Listing every problem with the images, patient ids or thresholds.
    """
    check_audit_inputs(synthetic, training, training_patient_ids, held_out, thresholds)
    synthetic_flat, training_flat = flatten_images(synthetic), flatten_images(training)
    _, patient_codes = np.unique(np.asarray(training_patient_ids), return_inverse=True)
    k = min(thresholds.top_k, training_flat.shape[0])

    training_refs = ChunkedReferences(training_flat, chunk, device)
    candidates = nearest_k(
        pixel_blocks(synthetic_flat, training_refs, chunk), len(synthetic), k
    )[1]
    candidates, top_mse, mae = candidate_errors(
        synthetic_flat, training_flat, candidates, device
    )
    nearest_mse, nearest_index = top_mse[:, 0], candidates[:, 0]
    different, repeat = _real_controls(
        pixel_blocks(training_flat, training_refs, chunk), patient_codes
    )
    threshold_mse = float(np.quantile(different, thresholds.real_quantile))
    control = _control_quantiles("mse", different, repeat)
    blocked = nearest_mse < threshold_mse

    nearest_feature = np.full(nearest_mse.shape, np.nan)
    threshold_feature = float("nan")
    if thresholds.feature_space:
        embed = features if features is not None else shift_robust_features
        feature_refs = ChunkedReferences(flatten_images(embed(training)), chunk, device)

        def feature_blocks(
            images: np.ndarray, refs: ChunkedReferences
        ) -> DistanceBlocks:
            return shifted_feature_blocks(
                images, refs, embed, thresholds.shift_px, chunk
            )

        nearest_feature = nearest_k(
            feature_blocks(synthetic, feature_refs), len(synthetic), 1
        )[0][:, 0]
        feature_different, feature_repeat = _real_controls(
            feature_blocks(training, feature_refs), patient_codes
        )
        threshold_feature = float(
            np.quantile(feature_different, thresholds.real_quantile)
        )
        control |= _control_quantiles("feature", feature_different, feature_repeat)
        blocked |= nearest_feature < threshold_feature

    # Membership is judged in the space that best catches near-copies.
    membership_auc = float("nan")
    if held_out is not None:
        if thresholds.feature_space:
            synthetic_refs = ChunkedReferences(
                flatten_images(embed(synthetic)), chunk, device
            )
            members = feature_blocks(training, synthetic_refs)
            outsiders = feature_blocks(held_out, synthetic_refs)
        else:
            synthetic_refs = ChunkedReferences(synthetic_flat, chunk, device)
            members = pixel_blocks(training_flat, synthetic_refs, chunk)
            outsiders = pixel_blocks(flatten_images(held_out), synthetic_refs, chunk)
        membership_auc = _membership_auc(
            nearest_k(members, len(training), 1)[0][:, 0],
            nearest_k(outsiders, len(held_out), 1)[0][:, 0],
        )

    max_ms_ssim = np.full(nearest_mse.shape, np.nan)
    if ms_ssim_fn is not None:
        max_ms_ssim = max_candidate_ms_ssim(synthetic, training, candidates, ms_ssim_fn)
        blocked |= max_ms_ssim > thresholds.ms_ssim_ceiling

    closest = int(np.argmin(nearest_mse))
    result = AuditResult(
        released=~blocked,
        nearest_mse=nearest_mse,
        nearest_index=nearest_index,
        nearest_feature=nearest_feature,
        max_ms_ssim=max_ms_ssim,
        threshold_mse=threshold_mse,
        threshold_feature=threshold_feature,
        control=control,
        closest_pair={
            "mse": float(nearest_mse[closest]),
            "mae": float(mae[closest, 0]),
            "ms_ssim": float(max_ms_ssim[closest]),
        },
        n_blocked=int(blocked.sum()),
        membership_auc=membership_auc,
        thresholds=thresholds,
    )
    logger.info(
        "audit: %d of %d synthetic images released (membership AUC %.3f)",
        int(result.released.sum()),
        result.released.size,
        result.membership_auc,
    )
    return result


def _real_controls(
    blocks: DistanceBlocks, patient_codes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest different-patient and nearest same-patient-other-scan distances.

    ``blocks`` compare the training scans with themselves. The second array is
    ``nan`` for scans of patients with a single scan.
    """
    n = patient_codes.size
    different = np.empty(n)
    repeat = np.empty(n)
    for start, block in blocks:
        stop = start + block.shape[0]
        codes = torch.from_numpy(patient_codes).to(block.device)
        same = codes[start:stop, None] == codes[None, :]
        rows = torch.arange(start, stop, device=block.device)
        itself = rows[:, None] == torch.arange(n, device=block.device)[None, :]
        inf = torch.tensor(float("inf"), dtype=block.dtype, device=block.device)
        different[start:stop] = torch.where(same, inf, block).amin(1).cpu().numpy()
        others = torch.where(same & ~itself, block, inf).amin(1).cpu().numpy()
        repeat[start:stop] = np.where(np.isinf(others), np.nan, others)
    return different, repeat


def _control_quantiles(
    space: str, different: np.ndarray, repeat: np.ndarray
) -> dict[str, float]:
    control: dict[str, float] = {}
    repeats = repeat[~np.isnan(repeat)]
    control[f"same-patient-{space}-n"] = float(repeats.size)
    for q in _SUMMARY_QUANTILES:
        name = f"q{round(q * 100):02d}"
        control[f"different-patient-{space}-{name}"] = _quantile(different, q)
        control[f"same-patient-{space}-{name}"] = _quantile(repeats, q)
    return control


def _membership_auc(members: np.ndarray, outsiders: np.ndarray) -> float:
    """AUC of "member" by nearness to the synthetic set: ~0.5 when nothing leaks."""
    labels = np.r_[np.ones(members.size), np.zeros(outsiders.size)]
    return roc_auc(labels, -np.r_[members, outsiders])


def _quantile(values: np.ndarray, q: float) -> float:
    return float(np.quantile(values, q)) if values.size else float("nan")
