"""Validation statistics: site-side metrics with CIs, DeLong, pooled ROC.

Per-site metrics (:mod:`~fedbone.evaluation.metrics`,
:mod:`~fedbone.evaluation.delong`) run at the site on raw scores, which never
leave it; pooled metrics (:mod:`~fedbone.evaluation.pooled_roc`) run at the
server on per-site aggregates only. Flower-free: numpy and scipy.
"""

from __future__ import annotations

from fedbone.evaluation.bootstrap import (
    BatchStatistic,
    auc_statistic,
    bootstrap_ci,
    sensitivity_statistic,
    specificity_statistic,
)
from fedbone.evaluation.delong import (
    PairedComparison,
    auc_normal_ci,
    delong_auc_variance,
    delong_ci,
    delong_paired_test,
)
from fedbone.evaluation.errors import EvaluationError
from fedbone.evaluation.estimate import Estimate
from fedbone.evaluation.fidelity import (
    PrecisionRecall,
    frechet_distance,
    frechet_distance_from_moments,
    kernel_inception_distance,
    precision_recall,
)
from fedbone.evaluation.histograms import (
    DEFAULT_BINS,
    MIN_BINS,
    ScoreHistograms,
    auc_from_counts,
    pool_histograms,
    score_histograms,
)
from fedbone.evaluation.metrics import BinaryMetrics, binary_metrics, roc_auc
from fedbone.evaluation.pooled_delong import (
    ComponentSums,
    PairedComponentSums,
    paired_component_sums,
    pooled_paired_test,
)
from fedbone.evaluation.pooled_roc import PooledROC, pooled_roc
from fedbone.evaluation.ssim import MS_SSIM_WEIGHTS, ms_ssim, ms_ssim_scales, ssim

__all__ = [
    "DEFAULT_BINS",
    "MIN_BINS",
    "MS_SSIM_WEIGHTS",
    "BatchStatistic",
    "BinaryMetrics",
    "ComponentSums",
    "Estimate",
    "EvaluationError",
    "PairedComparison",
    "PairedComponentSums",
    "PooledROC",
    "PrecisionRecall",
    "ScoreHistograms",
    "auc_from_counts",
    "auc_normal_ci",
    "auc_statistic",
    "binary_metrics",
    "bootstrap_ci",
    "delong_auc_variance",
    "delong_ci",
    "delong_paired_test",
    "frechet_distance",
    "frechet_distance_from_moments",
    "kernel_inception_distance",
    "ms_ssim",
    "ms_ssim_scales",
    "paired_component_sums",
    "pool_histograms",
    "pooled_paired_test",
    "pooled_roc",
    "precision_recall",
    "roc_auc",
    "score_histograms",
    "sensitivity_statistic",
    "specificity_statistic",
    "ssim",
]
