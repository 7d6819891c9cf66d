"""Chunked image-to-image distances for the privacy audit.

Every query image is compared with every reference image through
``||a||^2 + ||b||^2 - 2 a.b`` matrix products, a chunk of queries at a time so
that memory stays at ``chunk x R`` float64 whatever the cohort size; the few
nearest candidates of each query are then compared exactly (MSE, MAE,
MS-SSIM). :mod:`fedbone.generative.audit.similarity` builds its release rule on these.
Flower-free: numpy and torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional

from fedbone.generative.audit.inputs import check_image_stacks, check_positive
from fedbone.validation.errors import EvaluationError

__all__ = [
    "CANDIDATE_ROWS",
    "ChunkedReferences",
    "DistanceBlocks",
    "FeatureFn",
    "MsSsimFn",
    "PairwiseDistances",
    "candidate_errors",
    "flatten_images",
    "max_candidate_ms_ssim",
    "nearest_k",
    "pairwise_mse_mae",
    "pixel_blocks",
    "shift_robust_features",
    "shifted_feature_blocks",
]

MsSsimFn = Callable[[Tensor, Tensor], Tensor]
FeatureFn = Callable[[np.ndarray], np.ndarray]
DistanceBlocks = Iterator[tuple[int, Tensor]]
"""``(first query row, rows x R distances)`` pairs, in query order."""

CANDIDATE_ROWS = 32  # synthetic images per exact |a - b| batch (k x D floats each)


class PairwiseDistances(NamedTuple):
    """Pixel distances between synthetic and training images.

    Attributes
    ----------
    mse
        ``(S, T)`` mean squared error of every pair.
    mae
        ``(S, k)`` mean absolute error to each synthetic image's ``k`` nearest
        training images by MSE, nearest first.
    candidates
        ``(S, k)`` training indices of those candidates.
    """

    mse: np.ndarray
    mae: np.ndarray
    candidates: np.ndarray


def pairwise_mse_mae(
    synthetic: np.ndarray,
    training: np.ndarray,
    *,
    top_k: int = 5,
    chunk: int = 256,
    device: str = "cpu",
) -> PairwiseDistances:
    """Compute every pair's MSE, and the MAE to each image's nearest candidates.

    MSE uses ``||a||^2 + ||b||^2 - 2 a.b`` as chunked matrix products: the dot
    products in float32 (the fast BLAS/GPU path), the norms and the sum in
    float64, after subtracting the training mean image from both sides (MSE
    does not change, and the smaller magnitudes limit the cancellation error
    to ~1e-8 absolute). MAE has no such matrix form -- it needs ``|a - b|``
    pixel by pixel -- so it is computed exactly, but only for each synthetic
    image's ``top_k`` nearest training images by MSE; those candidates' MSE is
    recomputed exactly (float64) at the same time, so near-copies, the pairs
    that matter, carry exact values.

    Parameters
    ----------
    synthetic, training
        ``(S, H, W)`` and ``(T, H, W)`` images in [0, 1].
    top_k
        Candidates per synthetic image for the MAE (capped at ``T``).
    chunk
        Synthetic images per matrix product; bounds memory at
        ``chunk x T`` float64.
    device
        Torch device (``"cuda"`` for a GPU).

    Returns
    -------
    PairwiseDistances
        ``mse`` ``(S, T)``, ``mae`` and ``candidates`` ``(S, k)``.

    Raises
    ------
    EvaluationError
        For images that are not 3-D, of different sizes, empty, non-finite or
        outside [0, 1], or a ``top_k``/``chunk`` below 1.
    """
    EvaluationError.raise_if_any(
        "pairwise_mse_mae",
        check_image_stacks({"synthetic": synthetic, "training": training})
        + check_positive({"top_k": top_k, "chunk": chunk}),
    )
    queries, references = flatten_images(synthetic), flatten_images(training)
    mse = np.empty((queries.shape[0], references.shape[0]), dtype=np.float64)
    blocks = pixel_blocks(queries, ChunkedReferences(references, chunk, device), chunk)
    for start, block in blocks:
        mse[start : start + block.shape[0]] = block.cpu().numpy()
    k = min(top_k, references.shape[0])
    candidates = np.argsort(mse, axis=1, kind="stable")[:, :k]
    candidates, exact_mse, mae = candidate_errors(
        queries, references, candidates, device
    )
    np.put_along_axis(mse, candidates, exact_mse, axis=1)
    return PairwiseDistances(mse=mse, mae=mae, candidates=candidates)


def shift_robust_features(images: np.ndarray) -> np.ndarray:
    """Blur and downsample images so that shifts of a few pixels barely matter.

    An overlapping 8 x 8 box average with stride 4: a copy moved by 1-3 pixels
    keeps most of every window's content, while a different anatomy does not.
    This is the default feature space of
    :func:`fedbone.generative.audit.similarity.audit_synthetic`, used where no learned
    embedding (e.g. the site classifier's penultimate layer) is given.

    Parameters
    ----------
    images
        ``(N, H, W)`` images.

    Returns
    -------
    numpy.ndarray
        ``(N, ceil(H / 4), ceil(W / 4))`` float32 features.
    """
    tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    pooled = functional.avg_pool2d(
        tensor[:, None], kernel_size=8, stride=4, padding=2, count_include_pad=False
    )
    return pooled[:, 0].numpy()


def flatten_images(images: np.ndarray) -> np.ndarray:
    """Return ``(N, ...)`` images as contiguous float32 ``(N, D)`` vectors."""
    return np.ascontiguousarray(images, dtype=np.float32).reshape(len(images), -1)


class ChunkedReferences:
    """Reference vectors ready for ``||a||^2 + ||b||^2 - 2 a.b`` products.

    Parameters
    ----------
    vectors
        ``(R, D)`` float32 reference vectors.
    chunk
        Rows per norm computation.
    device
        Torch device holding the references.
    """

    def __init__(self, vectors: np.ndarray, chunk: int, device: str) -> None:
        self.centre = vectors.mean(axis=0, dtype=np.float64).astype(np.float32)
        self.device = device
        self.vectors = torch.from_numpy(vectors - self.centre).to(device)
        self.squared_norms = torch.cat(
            [(part.double() ** 2).sum(dim=1) for part in self.vectors.split(chunk)]
        )

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def distances(self, queries: np.ndarray) -> Tensor:
        """Return the ``rows x R`` float64 mean squared distances."""
        rows = torch.from_numpy(queries - self.centre).to(self.device)
        row_sq = (rows.double() ** 2).sum(dim=1)
        dots = (rows @ self.vectors.T).double()
        block = row_sq[:, None] + self.squared_norms[None, :] - 2.0 * dots
        return (block / queries.shape[1]).clamp_min_(0.0)


def pixel_blocks(
    queries: np.ndarray, references: ChunkedReferences, chunk: int
) -> DistanceBlocks:
    """Yield ``(first row, rows x R distances)`` for flattened queries.

    Parameters
    ----------
    queries
        ``(S, D)`` flattened float32 query images.
    references
        The ``R`` flattened reference images.
    chunk
        Query rows per block.
    """
    for start in range(0, queries.shape[0], chunk):
        yield start, references.distances(queries[start : start + chunk])


def shifted_feature_blocks(
    images: np.ndarray,
    references: ChunkedReferences,
    embed: FeatureFn,
    shift_px: int,
    chunk: int,
) -> DistanceBlocks:
    """Yield feature distances minimised over shifts of the query images.

    Shifts are the even offsets up to ``shift_px``: the default 8 x 8 blur
    absorbs the odd pixel, and a quarter of the shifts costs a quarter of the
    time. Rolling wraps around, harmless as scan borders are background.

    Parameters
    ----------
    images
        ``(N, H, W)`` query images.
    references
        Embedded reference images.
    embed
        Maps images to features, as for the references.
    shift_px
        Largest offset along each axis.
    chunk
        Query images per block.
    """
    steps = range(-(shift_px // 2) * 2, shift_px + 1, 2)
    shifts = [(dy, dx) for dy in steps for dx in steps if (dy, dx) != (0, 0)]
    for start in range(0, len(images), chunk):
        part = np.asarray(images[start : start + chunk])
        best = references.distances(flatten_images(embed(part)))
        for shift in shifts:
            moved = np.roll(part, shift, axis=(1, 2))
            best = torch.minimum(
                best, references.distances(flatten_images(embed(moved)))
            )
        yield start, best


def nearest_k(
    blocks: DistanceBlocks, n_queries: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return distances and indices of each query's ``k`` nearest references.

    Parameters
    ----------
    blocks
        ``(first row, rows x R distances)`` blocks covering every query, e.g.
        from :func:`pixel_blocks`.
    n_queries
        Number of queries the blocks cover.
    k
        Neighbours kept per query; at most the number of references.

    Returns
    -------
    tuple of numpy.ndarray
        Distances and reference indices, each ``(n_queries, k)``, nearest
        first.
    """
    distances = np.empty((n_queries, k))
    indices = np.empty((n_queries, k), dtype=np.int64)
    for start, block in blocks:
        values, where = torch.topk(block, k, dim=1, largest=False, sorted=True)
        distances[start : start + block.shape[0]] = values.cpu().numpy()
        indices[start : start + block.shape[0]] = where.cpu().numpy()
    return distances, indices


def candidate_errors(
    queries: np.ndarray, references: np.ndarray, candidates: np.ndarray, device: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact float64 MSE and MAE to each query's candidates, re-sorted by MSE.

    Parameters
    ----------
    queries, references
        Flattened ``(S, D)`` and ``(T, D)`` images.
    candidates
        ``(S, k)`` reference indices per query.
    device
        Torch device for the differences.

    Returns
    -------
    tuple of numpy.ndarray
        The candidates, their MSE and their MAE, each ``(S, k)``, nearest
        first.
    """
    mse = np.empty(candidates.shape)
    mae = np.empty(candidates.shape)
    for start in range(0, queries.shape[0], CANDIDATE_ROWS):
        stop = start + CANDIDATE_ROWS
        rows = torch.from_numpy(queries[start:stop]).to(device).double()
        picked = torch.from_numpy(references[candidates[start:stop]]).to(device)
        difference = rows[:, None] - picked
        mse[start:stop] = (difference**2).mean(dim=2).cpu().numpy()
        mae[start:stop] = difference.abs().mean(dim=2).cpu().numpy()
    order = np.argsort(mse, axis=1, kind="stable")
    return (
        np.take_along_axis(candidates, order, axis=1),
        np.take_along_axis(mse, order, axis=1),
        np.take_along_axis(mae, order, axis=1),
    )


def max_candidate_ms_ssim(
    synthetic: np.ndarray,
    training: np.ndarray,
    candidates: np.ndarray,
    ms_ssim_fn: MsSsimFn,
) -> np.ndarray:
    """Return each synthetic image's highest MS-SSIM to its candidates.

    Parameters
    ----------
    synthetic, training
        ``(S, H, W)`` and ``(T, H, W)`` images in [0, 1].
    candidates
        ``(S, k)`` training indices per synthetic image.
    ms_ssim_fn
        Takes two ``(B, 1, H, W)`` float tensors and returns ``(B,)`` values.

    Returns
    -------
    numpy.ndarray
        ``(S,)`` float64 maxima.
    """
    k = candidates.shape[1]
    best = np.empty(candidates.shape[0])
    for start in range(0, candidates.shape[0], CANDIDATE_ROWS):
        picked = candidates[start : start + CANDIDATE_ROWS]
        rows = np.repeat(synthetic[start : start + CANDIDATE_ROWS], k, axis=0)
        first = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))
        second = torch.from_numpy(
            np.ascontiguousarray(training[picked.ravel()], dtype=np.float32)
        )
        with torch.no_grad():
            scores = ms_ssim_fn(first[:, None], second[:, None])
        best[start : start + len(picked)] = (
            scores.detach().cpu().double().numpy().reshape(len(picked), k).max(axis=1)
        )
    return best
