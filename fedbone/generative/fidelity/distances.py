"""Distribution statistics of synthetic images, from feature vectors.

Everything here takes features already extracted from real and synthetic images
(``(N, D)`` arrays, one row per image) and returns a number; the extractor is
elsewhere. Model selection by FID follows Haberl et al. (2025);
:func:`frechet_distance_from_moments` exists so a site can share the mean and
covariance of its real features instead of the features themselves.

References
----------
Heusel et al. (2017), GANs trained by a two time-scale update rule converge to a
local Nash equilibrium (FID). Bińkowski et al. (2018), Demystifying MMD GANs
(KID). Kynkäänniemi et al. (2019), Improved precision and recall metric for
assessing generative models.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import linalg

from fedbone.errors import Problem
from fedbone.validation.errors import EvaluationError

__all__ = [
    "PrecisionRecall",
    "frechet_distance",
    "frechet_distance_from_moments",
    "kernel_inception_distance",
    "precision_recall",
]

logger = logging.getLogger(__name__)

Features = npt.NDArray[np.float64]

# A product of covariances whose square root has imaginary parts larger than this
# is not a numerical artefact but a sign of broken inputs (pytorch-fid uses 1e-3).
_IMAGINARY_TOLERANCE = 1e-3


@dataclass(frozen=True)
class PrecisionRecall:
    """Improved precision and recall of a synthetic set (Kynkäänniemi et al.).

    Attributes
    ----------
    precision
        Fraction of synthetic samples inside the real manifold (fidelity).
    recall
        Fraction of real samples inside the synthetic manifold (coverage).
    """

    precision: float
    recall: float


def frechet_distance(
    real: npt.ArrayLike, fake: npt.ArrayLike, *, eps: float = 1e-6
) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (FID).

    Parameters
    ----------
    real, fake
        Features, shape ``(N, D)`` each with the same ``D`` and ``N >= 2``.
    eps
        Diagonal offset used only if the matrix square root fails; see
        :func:`frechet_distance_from_moments`.

    Returns
    -------
    float
        ``||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2))``, in float64,
        with sample covariances (``N - 1`` denominator).

    Raises
    ------
    EvaluationError
        ``not-two-dimensional``, ``too-few-samples``, ``feature-size-mismatch``,
        ``features-not-finite``.
    """
    real_features, fake_features = _check_feature_pair(
        "frechet_distance", real, fake, min_samples=2
    )
    return frechet_distance_from_moments(
        real_features.mean(axis=0),
        np.atleast_2d(np.cov(real_features, rowvar=False)),
        fake_features.mean(axis=0),
        np.atleast_2d(np.cov(fake_features, rowvar=False)),
        eps=eps,
    )


def frechet_distance_from_moments(
    mu1: npt.ArrayLike,
    sigma1: npt.ArrayLike,
    mu2: npt.ArrayLike,
    sigma2: npt.ArrayLike,
    *,
    eps: float = 1e-6,
) -> float:
    """Fréchet distance between two Gaussians given by mean and covariance.

    Parameters
    ----------
    mu1, mu2
        Means, shape ``(D,)``.
    sigma1, sigma2
        Covariances, shape ``(D, D)``.
    eps
        If ``sqrtm(sigma1 @ sigma2)`` is not finite (singular covariances, e.g.
        fewer samples than features), ``eps * I`` is added to both covariances
        and the root is taken again; a warning is logged because the result is
        then slightly biased.

    Returns
    -------
    float
        ``||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))``.
        Imaginary parts of the root below 1e-3 (round-off) are dropped.

    Raises
    ------
    EvaluationError
        ``bad-moment-shape``, ``moments-not-finite``, or
        ``complex-covariance-root`` when the root has large imaginary parts
        (covariances that are not positive semi-definite).
    """
    mean1, cov1, mean2, cov2 = _check_moments(mu1, sigma1, mu2, sigma2)
    root = _product_root(cov1, cov2, eps)
    difference = mean1 - mean2
    trace = np.trace(cov1) + np.trace(cov2) - 2.0 * np.trace(root)
    return float(difference @ difference + trace)


def kernel_inception_distance(
    real: npt.ArrayLike,
    fake: npt.ArrayLike,
    *,
    subset_size: int = 1000,
    n_subsets: int = 100,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel distance (KID): unbiased MMD² with a cubic polynomial kernel.

    Each of ``n_subsets`` rounds draws ``subset_size`` rows of each set without
    replacement and computes the unbiased MMD² with
    ``k(x, y) = (x . y / D + 1) ** 3``.

    Parameters
    ----------
    real, fake
        Features, shape ``(N, D)`` each with the same ``D`` and ``N >= 2``.
    subset_size
        Rows per subset, at least 2; capped at ``min(N_real, N_fake)``.
    n_subsets
        Number of subsets, at least 1.
    seed
        Seed of the subset draws, for reproducible values.

    Returns
    -------
    tuple of float
        Mean and population standard deviation (``ddof=0``) of MMD² over the
        subsets. The mean can be slightly negative: the estimator is unbiased.

    Raises
    ------
    EvaluationError
        The feature problems of :func:`frechet_distance`, plus
        ``bad-subset-size`` and ``bad-subset-count``.
    """
    problems = []
    if subset_size < 2:
        problems.append(
            Problem(
                "bad-subset-size",
                f"subset_size is {subset_size}; use at least 2 (the unbiased "
                "estimator leaves the diagonal out), e.g. 1000",
            )
        )
    if n_subsets < 1:
        problems.append(
            Problem(
                "bad-subset-count",
                f"n_subsets is {n_subsets}; use at least 1, e.g. 100",
            )
        )
    EvaluationError.raise_if_any("kernel_inception_distance", problems)
    real_features, fake_features = _check_feature_pair(
        "kernel_inception_distance", real, fake, min_samples=2
    )
    size = min(subset_size, len(real_features), len(fake_features))
    rng = np.random.default_rng(seed)
    values = np.empty(n_subsets)
    for index in range(n_subsets):
        real_rows = rng.choice(len(real_features), size, replace=False)
        fake_rows = rng.choice(len(fake_features), size, replace=False)
        values[index] = _unbiased_polynomial_mmd(
            real_features[real_rows], fake_features[fake_rows]
        )
    return float(values.mean()), float(values.std())


def precision_recall(
    real: npt.ArrayLike, fake: npt.ArrayLike, *, k: int = 3, batch: int = 1024
) -> PrecisionRecall:
    """Improved precision and recall from k-nearest-neighbour manifolds.

    Each sample's manifold ball has the radius of its ``k``-th nearest
    neighbour in its own set (itself excluded). A sample is inside the other
    set's manifold if it lies in at least one ball, boundary included.

    Parameters
    ----------
    real, fake
        Features, shape ``(N, D)`` each with the same ``D`` and ``N > k``.
    k
        Neighbour defining the radii; 3 as in Kynkäänniemi et al.
    batch
        Rows per distance block: memory stays ``O(batch * N)`` rather than
        ``O(N^2)``. The result does not depend on it.

    Returns
    -------
    PrecisionRecall
        Precision (synthetic inside real) and recall (real inside synthetic).

    Raises
    ------
    EvaluationError
        The feature problems of :func:`frechet_distance` (with ``N > k``),
        plus ``bad-neighbour-count`` and ``bad-batch-size``.
    """
    problems = []
    if k < 1:
        problems.append(
            Problem("bad-neighbour-count", f"k is {k}; use at least 1, e.g. 3")
        )
    if batch < 1:
        problems.append(
            Problem("bad-batch-size", f"batch is {batch}; use at least 1, e.g. 1024")
        )
    EvaluationError.raise_if_any("precision_recall", problems)
    real_features, fake_features = _check_feature_pair(
        "precision_recall", real, fake, min_samples=k + 1
    )
    real_radii = _knn_radii(real_features, k, batch)
    fake_radii = _knn_radii(fake_features, k, batch)
    precision = _fraction_inside(fake_features, real_features, real_radii, batch)
    recall = _fraction_inside(real_features, fake_features, fake_radii, batch)
    return PrecisionRecall(precision=precision, recall=recall)


def _product_root(
    cov1: npt.NDArray[np.float64], cov2: npt.NDArray[np.float64], eps: float
) -> npt.NDArray[np.float64]:
    root = linalg.sqrtm(cov1 @ cov2)
    if not np.isfinite(root).all():
        logger.warning(
            "sqrtm of the covariance product is not finite (singular covariances?); "
            "adding %g * I to both covariances",
            eps,
        )
        offset = eps * np.eye(len(cov1))
        root = linalg.sqrtm((cov1 + offset) @ (cov2 + offset))
    if np.iscomplexobj(root):
        largest = float(np.max(np.abs(np.diagonal(root).imag)))
        if largest > _IMAGINARY_TOLERANCE:
            EvaluationError.raise_if_any(
                "frechet_distance",
                [
                    Problem(
                        "complex-covariance-root",
                        f"sqrtm(sigma1 @ sigma2) has imaginary diagonal up to "
                        f"{largest:.3g}; the covariances must be symmetric positive "
                        "semi-definite (compute them with np.cov on real features)",
                    )
                ],
            )
        root = root.real
    return np.asarray(root, dtype=np.float64)


def _unbiased_polynomial_mmd(x: Features, y: Features) -> float:
    dimension = x.shape[1]
    k_xx = (x @ x.T / dimension + 1.0) ** 3
    k_yy = (y @ y.T / dimension + 1.0) ** 3
    k_xy = (x @ y.T / dimension + 1.0) ** 3
    m = len(x)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.mean())


def _squared_distances(rows: Features, points: Features) -> Features:
    # The expanded form is one matrix product; clipping removes the tiny
    # negatives round-off gives for coincident points.
    squared = (
        np.einsum("ij,ij->i", rows, rows)[:, np.newaxis]
        + np.einsum("ij,ij->i", points, points)[np.newaxis, :]
        - 2.0 * rows @ points.T
    )
    return np.maximum(squared, 0.0)


def _knn_radii(features: Features, k: int, batch: int) -> Features:
    """Squared distance of each row to its k-th nearest other row."""
    radii = np.empty(len(features))
    for start in range(0, len(features), batch):
        block = _squared_distances(features[start : start + batch], features)
        # Column k of the sorted row is the k-th neighbour: column 0 is the
        # point itself at distance 0.
        radii[start : start + batch] = np.partition(block, k, axis=1)[:, k]
    return radii


def _fraction_inside(
    samples: Features, manifold: Features, radii: Features, batch: int
) -> float:
    inside = 0
    for start in range(0, len(samples), batch):
        block = _squared_distances(samples[start : start + batch], manifold)
        inside += int((block <= radii[np.newaxis, :]).any(axis=1).sum())
    return inside / len(samples)


def _check_feature_pair(
    subject: str, real: npt.ArrayLike, fake: npt.ArrayLike, *, min_samples: int
) -> tuple[Features, Features]:
    problems: list[Problem] = []
    arrays = {"real": np.asarray(real), "fake": np.asarray(fake)}
    for name, array in arrays.items():
        if array.ndim != 2:
            problems.append(
                Problem(
                    "not-two-dimensional",
                    f"{name} has shape {array.shape}; pass one feature vector per "
                    "row, shape (N, D) (reshape a single vector with [None, :])",
                    name,
                )
            )
            continue
        if len(array) < min_samples:
            problems.append(
                Problem(
                    "too-few-samples",
                    f"{name} has {len(array)} rows; this statistic needs at least "
                    f"{min_samples}; pass more images",
                    name,
                )
            )
        if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
            problems.append(
                Problem(
                    "features-not-finite",
                    f"{name} holds non-numeric, NaN or infinite values; check the "
                    "feature extractor's input",
                    name,
                )
            )
    shapes = [array.shape for array in arrays.values()]
    if all(len(shape) == 2 for shape in shapes) and shapes[0][1] != shapes[1][1]:
        problems.append(
            Problem(
                "feature-size-mismatch",
                f"real has {shapes[0][1]} features per row and fake {shapes[1][1]}; "
                "extract both with the same network and layer",
            )
        )
    EvaluationError.raise_if_any(subject, problems)
    return (
        arrays["real"].astype(np.float64, copy=False),
        arrays["fake"].astype(np.float64, copy=False),
    )


def _check_moments(
    mu1: npt.ArrayLike,
    sigma1: npt.ArrayLike,
    mu2: npt.ArrayLike,
    sigma2: npt.ArrayLike,
) -> tuple[Features, Features, Features, Features]:
    means = [np.atleast_1d(np.asarray(mu, dtype=np.float64)) for mu in (mu1, mu2)]
    covariances = [
        np.atleast_2d(np.asarray(sigma, dtype=np.float64)) for sigma in (sigma1, sigma2)
    ]
    dimension = means[0].shape[0]
    problems: list[Problem] = []
    for index, (mean, covariance) in enumerate(
        zip(means, covariances, strict=True), start=1
    ):
        if mean.shape != (dimension,) or covariance.shape != (dimension, dimension):
            problems.append(
                Problem(
                    "bad-moment-shape",
                    f"mu{index} has shape {mean.shape} and sigma{index} "
                    f"{covariance.shape}; expected ({dimension},) and "
                    f"({dimension}, {dimension}) (a mean vector and its covariance)",
                    f"moments {index}",
                )
            )
        elif not (np.isfinite(mean).all() and np.isfinite(covariance).all()):
            problems.append(
                Problem(
                    "moments-not-finite",
                    f"mu{index} or sigma{index} holds NaN or infinite values; "
                    "recompute them from finite features",
                    f"moments {index}",
                )
            )
    EvaluationError.raise_if_any("frechet_distance_from_moments", problems)
    return means[0], covariances[0], means[1], covariances[1]
