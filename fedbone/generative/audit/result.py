"""The outcome of a similarity audit and the summary that may leave the site.

:class:`AuditResult` holds per-image verdicts and distances (site-only) and
builds :meth:`AuditResult.summary`, the only part meant to leave the site:
counts, thresholds, quantiles and a fixed-bin histogram, never an image or an
index. :func:`combine_audits` joins the audits of several batches of one
synthesis run (same site, same calibration) into one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fedbone.config.site import AuditThresholds

__all__ = [
    "HISTOGRAM_EDGES",
    "SUMMARY_QUANTILES",
    "AuditResult",
    "combine_audits",
    "quantile",
    "quantile_name",
]

# Fixed log-spaced bins of nearest MSE (images in [0, 1]): fixed so that the
# histograms of several sites and rounds add up bin by bin.
HISTOGRAM_EDGES: tuple[float, ...] = tuple(float(10.0**e) for e in range(-6, 1))
SUMMARY_QUANTILES = (0.01, 0.05, 0.25, 0.5)
_RANK_QUANTILES = (0.05, 0.5, 0.95)


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
    nearest_rank
        Per synthetic image, the fraction of training scans whose nearest
        different-patient scan is at most as far as this image's nearest
        training scan (pixel MSE): near 0 is suspiciously close, near 1 is
        farther than real scans ever are from one another.
    unrealistic
        Per synthetic image: its nearest MSE is above
        ``threshold_unrealistic_mse``. A flag, not a verdict: it does not
        block the image.
    threshold_mse, threshold_feature
        Release thresholds from the different-patient control.
    threshold_unrealistic_mse
        The ``unrealistic_quantile`` of the different-patient nearest MSE.
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
    nearest_rank: np.ndarray
    unrealistic: np.ndarray
    threshold_mse: float
    threshold_feature: float
    threshold_unrealistic_mse: float
    control: dict[str, float]
    closest_pair: dict[str, float]
    n_blocked: int
    membership_auc: float
    thresholds: AuditThresholds = field(default_factory=AuditThresholds)

    def summary(self) -> dict[str, float | int | list[float] | list[int]]:
        """Return the aggregates that may leave the site, kebab-case keys.

        Counts (also per rule), thresholds, quantiles of the nearest MSE, its
        histogram over :data:`HISTOGRAM_EDGES` (values outside fall in the end
        bins), the real-vs-real control, the closest pair's MSE/MAE/MS-SSIM,
        the membership AUC, and how many images are unrealistic with the
        quantiles of their nearest ranks. No image, no index.
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
        for q in SUMMARY_QUANTILES:
            summary[f"nearest-mse-{quantile_name(q)}"] = quantile(self.nearest_mse, q)
        summary.update(self._realism())
        summary.update(self.control)
        summary.update(
            {
                f"closest-pair-{key.replace('_', '-')}": value
                for key, value in self.closest_pair.items()
            }
        )
        return summary

    def _realism(self) -> dict[str, float | int]:
        """How far the images are from the training scans, against real pairs."""
        n = int(self.unrealistic.size)
        n_unrealistic = int(self.unrealistic.sum())
        realism: dict[str, float | int] = {
            "unrealistic-quantile": self.thresholds.unrealistic_quantile,
            "threshold-unrealistic-mse": self.threshold_unrealistic_mse,
            "n-unrealistic": n_unrealistic,
            "fraction-unrealistic": n_unrealistic / n if n else math.nan,
        }
        for q in _RANK_QUANTILES:
            realism[f"nearest-rank-{quantile_name(q)}"] = quantile(self.nearest_rank, q)
        return realism


def combine_audits(
    audits: Sequence[AuditResult],
    thresholds: AuditThresholds,
    *,
    membership_auc: float = math.nan,
) -> AuditResult:
    """Join the audits of several batches against the same training scans.

    Per-image arrays are concatenated in order; thresholds and the real-vs-real
    control are those of the first audit (every batch of one run is audited
    with the same calibration); the closest pair is the closest of all.

    Parameters
    ----------
    audits
        Audits of successive batches by one
        :class:`~fedbone.generative.audit.similarity.SiteAuditor`; none gives
        the audit of zero images (no thresholds, no closest pair).
    thresholds
        The rule applied.
    membership_auc
        The membership AUC over every audited image, computed once
        (:meth:`~fedbone.generative.audit.similarity.SiteAuditor.membership_auc`).
    """
    if not audits:
        return _empty_audit(thresholds, membership_auc)
    first = audits[0]
    closest = min(audits, key=lambda audit: audit.closest_pair["mse"])
    return AuditResult(
        released=np.concatenate([a.released for a in audits]),
        nearest_mse=np.concatenate([a.nearest_mse for a in audits]),
        nearest_index=np.concatenate([a.nearest_index for a in audits]),
        nearest_feature=np.concatenate([a.nearest_feature for a in audits]),
        max_ms_ssim=np.concatenate([a.max_ms_ssim for a in audits]),
        nearest_rank=np.concatenate([a.nearest_rank for a in audits]),
        unrealistic=np.concatenate([a.unrealistic for a in audits]),
        threshold_mse=first.threshold_mse,
        threshold_feature=first.threshold_feature,
        threshold_unrealistic_mse=first.threshold_unrealistic_mse,
        control=dict(first.control),
        closest_pair=dict(closest.closest_pair),
        n_blocked=sum(a.n_blocked for a in audits),
        membership_auc=membership_auc,
        thresholds=thresholds,
    )


def _empty_audit(thresholds: AuditThresholds, membership_auc: float) -> AuditResult:
    """Return the audit of zero images: no verdicts, thresholds or closest pair."""
    empty = np.zeros(0)
    return AuditResult(
        released=np.zeros(0, dtype=bool),
        nearest_mse=empty,
        nearest_index=np.zeros(0, dtype=np.int64),
        nearest_feature=empty,
        max_ms_ssim=empty,
        nearest_rank=empty,
        unrealistic=np.zeros(0, dtype=bool),
        threshold_mse=math.nan,
        threshold_feature=math.nan,
        threshold_unrealistic_mse=math.nan,
        control={},
        closest_pair={"mse": math.nan, "mae": math.nan, "ms_ssim": math.nan},
        n_blocked=0,
        membership_auc=membership_auc,
        thresholds=thresholds,
    )


def quantile(values: np.ndarray, q: float) -> float:
    """Return the ``q`` quantile of ``values``, ``nan`` when there are none."""
    return float(np.quantile(values, q)) if values.size else math.nan


def quantile_name(q: float) -> str:
    """Return the key suffix of quantile ``q``: ``q05`` for 0.05."""
    return f"q{round(q * 100):02d}"
