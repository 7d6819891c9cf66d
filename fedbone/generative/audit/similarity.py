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
* **realism** -- the same control says how far is too far: an image whose
  nearest training scan is farther than the ``unrealistic_quantile`` of the
  different-patient distances looks like no scan the site has seen. Such an
  image is flagged and counted as "unrealistic", not blocked: the release rule
  is about copies.
* **membership inference** -- the nearest-synthetic distance of training scans
  vs held-out real scans, as an AUC: about 0.5 when the generator leaks nothing.

Everything runs at the site; :meth:`AuditResult.summary` holds the only values
meant to leave it (counts, quantiles, a fixed-bin histogram, the closest pair's
similarity values), never an image or an index. Flower-free: numpy and torch.

:class:`SiteAuditor` computes the real-vs-real control once and audits any
number of batches with it (synthesis generates in batches until each class is
filled); :func:`audit_synthetic` audits one batch. The distance machinery lives
in :mod:`fedbone.generative.audit.pairwise`, the input checks in
:mod:`fedbone.generative.audit.inputs` and the result and its summary in
:mod:`fedbone.generative.audit.result`; this module holds the release rule, the
real-vs-real control and the membership test.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

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
from fedbone.generative.audit.result import (
    HISTOGRAM_EDGES,
    SUMMARY_QUANTILES,
    AuditResult,
    combine_audits,
    quantile,
    quantile_name,
)
from fedbone.validation.metrics import roc_auc

__all__ = [
    "HISTOGRAM_EDGES",
    "AuditResult",
    "AuditThresholds",
    "PairwiseDistances",
    "SiteAuditor",
    "audit_synthetic",
    "combine_audits",
    "pairwise_mse_mae",
    "shift_robust_features",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class _Calibration:
    """The training scans prepared for distances, and their real-vs-real control."""

    training_flat: np.ndarray
    training_refs: ChunkedReferences
    different_sorted: np.ndarray
    threshold_mse: float
    threshold_unrealistic_mse: float
    feature_refs: ChunkedReferences | None
    threshold_feature: float
    control: dict[str, float]


class SiteAuditor:
    """Audits batches of synthetic images against one site's training scans.

    The real-vs-real control (every training scan against every other, the
    costly part) is computed on the first batch and reused for the next ones,
    so every batch is judged by the same thresholds.
    :meth:`membership_auc` runs the membership test once over whatever
    synthetic set it is given (in synthesis: every image audited).

    Parameters
    ----------
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
    """

    def __init__(
        self,
        training: np.ndarray,
        *,
        training_patient_ids: Sequence[str],
        held_out: np.ndarray | None,
        thresholds: AuditThresholds,
        features: FeatureFn | None = None,
        ms_ssim_fn: MsSsimFn | None = None,
        device: str = "cpu",
        chunk: int = 256,
    ) -> None:
        self.training = training
        self.training_patient_ids = list(training_patient_ids)
        self.held_out = held_out
        self.thresholds = thresholds
        self.embed = features if features is not None else shift_robust_features
        self.ms_ssim_fn = ms_ssim_fn
        self.device = device
        self.chunk = chunk
        self._calibration: _Calibration | None = None

    def audit(self, synthetic: np.ndarray) -> AuditResult:
        """Decide which of ``synthetic`` may leave the site (no membership test).

        Parameters
        ----------
        synthetic
            ``(S, H, W)`` generated images in [0, 1].

        Returns
        -------
        AuditResult
            Verdicts, per-image distances (site-only) and the releasable
            summary; ``membership_auc`` is ``nan``.

        Raises
        ------
        EvaluationError
            Listing every problem with the images, patient ids or thresholds.
        """
        self._check(synthetic)
        calibration = self._calibrated()
        rules = self.thresholds
        synthetic_flat = flatten_images(synthetic)
        k = min(rules.top_k, len(calibration.training_refs))
        candidates = nearest_k(
            pixel_blocks(synthetic_flat, calibration.training_refs, self.chunk),
            len(synthetic),
            k,
        )[1]
        candidates, top_mse, mae = candidate_errors(
            synthetic_flat, calibration.training_flat, candidates, self.device
        )
        nearest_mse = top_mse[:, 0]
        blocked = nearest_mse < calibration.threshold_mse
        nearest_feature = np.full(nearest_mse.shape, np.nan)
        if calibration.feature_refs is not None:
            blocks = self._feature_blocks(synthetic, calibration.feature_refs)
            nearest_feature = nearest_k(blocks, len(synthetic), 1)[0][:, 0]
            blocked |= nearest_feature < calibration.threshold_feature
        max_ms_ssim = np.full(nearest_mse.shape, np.nan)
        if self.ms_ssim_fn is not None:
            max_ms_ssim = max_candidate_ms_ssim(
                synthetic, self.training, candidates, self.ms_ssim_fn
            )
            blocked |= max_ms_ssim > rules.ms_ssim_ceiling
        closest = int(np.argmin(nearest_mse))
        return AuditResult(
            released=~blocked,
            nearest_mse=nearest_mse,
            nearest_index=candidates[:, 0],
            nearest_feature=nearest_feature,
            max_ms_ssim=max_ms_ssim,
            nearest_rank=_percentile_rank(calibration.different_sorted, nearest_mse),
            unrealistic=nearest_mse > calibration.threshold_unrealistic_mse,
            threshold_mse=calibration.threshold_mse,
            threshold_feature=calibration.threshold_feature,
            threshold_unrealistic_mse=calibration.threshold_unrealistic_mse,
            control=dict(calibration.control),
            closest_pair={
                "mse": float(nearest_mse[closest]),
                "mae": float(mae[closest, 0]),
                "ms_ssim": float(max_ms_ssim[closest]),
            },
            n_blocked=int(blocked.sum()),
            membership_auc=math.nan,
            thresholds=rules,
        )

    def membership_auc(self, synthetic: np.ndarray) -> float:
        """AUC of "training scan" vs "held-out scan" by nearness to ``synthetic``.

        About 0.5 when the generator leaks nothing; ``nan`` without held-out
        scans or synthetic images. Judged in feature space when the feature
        rule is on (it best catches shifted near-copies), else in pixel MSE.

        Parameters
        ----------
        synthetic
            ``(S, H, W)`` every synthetic image the membership test covers.
        """
        held_out = self.held_out
        if held_out is None or len(synthetic) == 0:
            return math.nan
        self._check(synthetic)
        if self.thresholds.feature_space:
            refs = ChunkedReferences(
                flatten_images(self.embed(synthetic)), self.chunk, self.device
            )
            members = self._feature_blocks(self.training, refs)
            outsiders = self._feature_blocks(held_out, refs)
        else:
            refs = ChunkedReferences(flatten_images(synthetic), self.chunk, self.device)
            members = pixel_blocks(flatten_images(self.training), refs, self.chunk)
            outsiders = pixel_blocks(flatten_images(held_out), refs, self.chunk)
        return _membership_auc(
            nearest_k(members, len(self.training), 1)[0][:, 0],
            nearest_k(outsiders, len(held_out), 1)[0][:, 0],
        )

    def _check(self, synthetic: np.ndarray) -> None:
        check_audit_inputs(
            synthetic,
            self.training,
            self.training_patient_ids,
            self.held_out,
            self.thresholds,
        )

    def _feature_blocks(
        self, images: np.ndarray, refs: ChunkedReferences
    ) -> DistanceBlocks:
        return shifted_feature_blocks(
            images, refs, self.embed, self.thresholds.shift_px, self.chunk
        )

    def _calibrated(self) -> _Calibration:
        if self._calibration is None:
            self._calibration = self._calibrate()
        return self._calibration

    def _calibrate(self) -> _Calibration:
        """Compute the real-vs-real control and the thresholds it gives."""
        rules = self.thresholds
        _, codes = np.unique(np.asarray(self.training_patient_ids), return_inverse=True)
        codes = codes.reshape(-1)
        training_flat = flatten_images(self.training)
        refs = ChunkedReferences(training_flat, self.chunk, self.device)
        different, repeat = _real_controls(
            pixel_blocks(training_flat, refs, self.chunk), codes
        )
        control = _control_quantiles("mse", different, repeat)
        feature_refs, threshold_feature = None, math.nan
        if rules.feature_space:
            feature_refs = ChunkedReferences(
                flatten_images(self.embed(self.training)), self.chunk, self.device
            )
            feature_different, feature_repeat = _real_controls(
                self._feature_blocks(self.training, feature_refs), codes
            )
            threshold_feature = float(
                np.quantile(feature_different, rules.real_quantile)
            )
            control |= _control_quantiles("feature", feature_different, feature_repeat)
        return _Calibration(
            training_flat=training_flat,
            training_refs=refs,
            different_sorted=np.sort(different),
            threshold_mse=float(np.quantile(different, rules.real_quantile)),
            threshold_unrealistic_mse=float(
                np.quantile(different, rules.unrealistic_quantile)
            ),
            feature_refs=feature_refs,
            threshold_feature=threshold_feature,
            control=control,
        )


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
    auditor = SiteAuditor(
        training,
        training_patient_ids=training_patient_ids,
        held_out=held_out,
        thresholds=thresholds,
        features=features,
        ms_ssim_fn=ms_ssim_fn,
        device=device,
        chunk=chunk,
    )
    result = auditor.audit(synthetic)
    result = replace(result, membership_auc=auditor.membership_auc(synthetic))
    logger.info(
        "audit: %d of %d synthetic images released, %d unrealistic "
        "(membership AUC %.3f)",
        int(result.released.sum()),
        result.released.size,
        int(result.unrealistic.sum()),
        result.membership_auc,
    )
    return result


def _percentile_rank(sorted_control: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Fraction of the control at most as large as each value (empirical CDF)."""
    at_most = np.searchsorted(sorted_control, values, side="right")
    return at_most / sorted_control.size


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
    for q in SUMMARY_QUANTILES:
        name = quantile_name(q)
        control[f"different-patient-{space}-{name}"] = quantile(different, q)
        control[f"same-patient-{space}-{name}"] = quantile(repeats, q)
    return control


def _membership_auc(members: np.ndarray, outsiders: np.ndarray) -> float:
    """AUC of "member" by nearness to the synthetic set: ~0.5 when nothing leaks."""
    labels = np.r_[np.ones(members.size), np.zeros(outsiders.size)]
    return roc_auc(labels, -np.r_[members, outsiders])
