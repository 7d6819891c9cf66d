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
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional

from fedbone.errors import Problem
from fedbone.evaluation.errors import EvaluationError
from fedbone.evaluation.metrics import roc_auc

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

MsSsimFn = Callable[[Tensor, Tensor], Tensor]
FeatureFn = Callable[[np.ndarray], np.ndarray]

# Fixed log-spaced bins of nearest MSE (images in [0, 1]): fixed so that the
# histograms of several sites and rounds add up bin by bin.
HISTOGRAM_EDGES: tuple[float, ...] = tuple(float(10.0**e) for e in range(-6, 1))
_SUMMARY_QUANTILES = (0.01, 0.05, 0.25, 0.5)
_MAE_ROWS = 32  # synthetic images per exact |a - b| batch (k x D floats each)


@dataclass(frozen=True)
class AuditThresholds:
    """A site's release rule (site config, never the study config).

    Parameters
    ----------
    real_quantile
        Quantile of the different-patient nearest-neighbour distances under
        which a synthetic image is blocked: 0.01 blocks images closer to a
        training scan than 99% of training scans are to another patient.
    ms_ssim_ceiling
        Block an image whose MS-SSIM to one of its ``top_k`` nearest training
        scans exceeds this. 0.95 leaves margin above the paper's most similar
        released pair (MS-SSIM 0.89) while still catching near-replicas, which
        score close to 1.
    top_k
        Nearest candidates (by MSE) per synthetic image on which MAE and
        MS-SSIM are computed exactly.
    feature_space
        Also apply the rule to shift-robust feature distances, which catch
        copies moved by a few pixels that pixel MSE misses.
    shift_px
        Feature distances are minimised over shifts of the synthetic image by
        even offsets up to this many pixels along each axis (4: 25 shifts,
        8 mm at 2 mm pixels); 0 compares unshifted images only.
    """

    real_quantile: float = 0.01
    ms_ssim_ceiling: float = 0.95
    top_k: int = 5
    feature_space: bool = True
    shift_px: int = 4


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
    _raise_if_any(
        "pairwise_mse_mae",
        _check_images({"synthetic": synthetic, "training": training})
        + _check_positive({"top_k": top_k, "chunk": chunk}),
    )
    queries, references = _flat(synthetic), _flat(training)
    mse = np.empty((queries.shape[0], references.shape[0]), dtype=np.float64)
    blocks = _pixel_blocks(queries, _References(references, chunk, device), chunk)
    for start, block in blocks:
        mse[start : start + block.shape[0]] = block.cpu().numpy()
    k = min(top_k, references.shape[0])
    candidates = np.argsort(mse, axis=1, kind="stable")[:, :k]
    candidates, exact_mse, mae = _candidate_errors(
        queries, references, candidates, device
    )
    np.put_along_axis(mse, candidates, exact_mse, axis=1)
    return PairwiseDistances(mse=mse, mae=mae, candidates=candidates)


def shift_robust_features(images: np.ndarray) -> np.ndarray:
    """Blur and downsample images so that shifts of a few pixels barely matter.

    An overlapping 8 x 8 box average with stride 4: a copy moved by 1-3 pixels
    keeps most of every window's content, while a different anatomy does not.
    This is the default feature space of :func:`audit_synthetic`, used where no
    learned embedding (e.g. the site classifier's penultimate layer) is given.

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
    _check_audit_inputs(synthetic, training, training_patient_ids, held_out, thresholds)
    synthetic_flat, training_flat = _flat(synthetic), _flat(training)
    _, patient_codes = np.unique(np.asarray(training_patient_ids), return_inverse=True)
    k = min(thresholds.top_k, training_flat.shape[0])

    training_refs = _References(training_flat, chunk, device)
    candidates = _nearest_k(
        _pixel_blocks(synthetic_flat, training_refs, chunk), len(synthetic), k
    )[1]
    candidates, top_mse, mae = _candidate_errors(
        synthetic_flat, training_flat, candidates, device
    )
    nearest_mse, nearest_index = top_mse[:, 0], candidates[:, 0]
    different, repeat = _real_controls(
        _pixel_blocks(training_flat, training_refs, chunk), patient_codes
    )
    threshold_mse = float(np.quantile(different, thresholds.real_quantile))
    control = _control_quantiles("mse", different, repeat)
    blocked = nearest_mse < threshold_mse

    nearest_feature = np.full(nearest_mse.shape, np.nan)
    threshold_feature = float("nan")
    if thresholds.feature_space:
        embed = features if features is not None else shift_robust_features
        feature_refs = _References(_flat(embed(training)), chunk, device)

        def feature_blocks(images: np.ndarray, refs: _References) -> Blocks:
            return _shifted_feature_blocks(
                images, refs, embed, thresholds.shift_px, chunk
            )

        nearest_feature = _nearest_k(
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
            synthetic_refs = _References(_flat(embed(synthetic)), chunk, device)
            members = feature_blocks(training, synthetic_refs)
            outsiders = feature_blocks(held_out, synthetic_refs)
        else:
            synthetic_refs = _References(synthetic_flat, chunk, device)
            members = _pixel_blocks(training_flat, synthetic_refs, chunk)
            outsiders = _pixel_blocks(_flat(held_out), synthetic_refs, chunk)
        membership_auc = _membership_auc(
            _nearest_k(members, len(training), 1)[0][:, 0],
            _nearest_k(outsiders, len(held_out), 1)[0][:, 0],
        )

    max_ms_ssim = np.full(nearest_mse.shape, np.nan)
    if ms_ssim_fn is not None:
        max_ms_ssim = _max_candidate_ms_ssim(
            synthetic, training, candidates, ms_ssim_fn
        )
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


def _flat(images: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(images, dtype=np.float32).reshape(len(images), -1)


class _References:
    """Reference vectors ready for ``||a||^2 + ||b||^2 - 2 a.b`` products."""

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


Blocks = Iterator[tuple[int, Tensor]]


def _pixel_blocks(queries: np.ndarray, references: _References, chunk: int) -> Blocks:
    """Yield ``(first row, rows x R distances)`` for flattened queries."""
    for start in range(0, queries.shape[0], chunk):
        yield start, references.distances(queries[start : start + chunk])


def _shifted_feature_blocks(
    images: np.ndarray,
    references: _References,
    embed: FeatureFn,
    shift_px: int,
    chunk: int,
) -> Blocks:
    """Feature distances minimised over shifts of the query images.

    Shifts are the even offsets up to ``shift_px``: the default 8 x 8 blur
    absorbs the odd pixel, and a quarter of the shifts costs a quarter of the
    time. Rolling wraps around, harmless as scan borders are background.
    """
    steps = range(-(shift_px // 2) * 2, shift_px + 1, 2)
    shifts = [(dy, dx) for dy in steps for dx in steps if (dy, dx) != (0, 0)]
    for start in range(0, len(images), chunk):
        part = np.asarray(images[start : start + chunk])
        best = references.distances(_flat(embed(part)))
        for shift in shifts:
            moved = np.roll(part, shift, axis=(1, 2))
            best = torch.minimum(best, references.distances(_flat(embed(moved))))
        yield start, best


def _nearest_k(blocks: Blocks, n_queries: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Distances and indices of each query's ``k`` nearest references."""
    distances = np.empty((n_queries, k))
    indices = np.empty((n_queries, k), dtype=np.int64)
    for start, block in blocks:
        values, where = torch.topk(block, k, dim=1, largest=False, sorted=True)
        distances[start : start + block.shape[0]] = values.cpu().numpy()
        indices[start : start + block.shape[0]] = where.cpu().numpy()
    return distances, indices


def _real_controls(
    blocks: Blocks, patient_codes: np.ndarray
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


def _candidate_errors(
    queries: np.ndarray, references: np.ndarray, candidates: np.ndarray, device: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact float64 MSE and MAE to each query's candidates, re-sorted by MSE.

    Returns the candidates, their MSE and their MAE, nearest first.
    """
    mse = np.empty(candidates.shape)
    mae = np.empty(candidates.shape)
    for start in range(0, queries.shape[0], _MAE_ROWS):
        stop = start + _MAE_ROWS
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


def _max_candidate_ms_ssim(
    synthetic: np.ndarray,
    training: np.ndarray,
    candidates: np.ndarray,
    ms_ssim_fn: MsSsimFn,
) -> np.ndarray:
    k = candidates.shape[1]
    best = np.empty(candidates.shape[0])
    for start in range(0, candidates.shape[0], _MAE_ROWS):
        picked = candidates[start : start + _MAE_ROWS]
        rows = np.repeat(synthetic[start : start + _MAE_ROWS], k, axis=0)
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


def _membership_auc(members: np.ndarray, outsiders: np.ndarray) -> float:
    """AUC of "member" by nearness to the synthetic set: ~0.5 when nothing leaks."""
    labels = np.r_[np.ones(members.size), np.zeros(outsiders.size)]
    return roc_auc(labels, -np.r_[members, outsiders])


def _quantile(values: np.ndarray, q: float) -> float:
    return float(np.quantile(values, q)) if values.size else float("nan")


def _check_audit_inputs(
    synthetic: np.ndarray,
    training: np.ndarray,
    training_patient_ids: Sequence[str],
    held_out: np.ndarray | None,
    thresholds: AuditThresholds,
) -> None:
    images = {"synthetic": synthetic, "training": training}
    if held_out is not None:
        images["held_out"] = held_out
    problems = _check_images(images)
    problems += _check_positive({"top_k": thresholds.top_k})
    if thresholds.shift_px < 0:
        problems.append(
            Problem(
                "bad-shift-px",
                f"shift_px is {thresholds.shift_px}, expected an integer >= 0",
                "thresholds.shift_px",
            )
        )
    if not 0.0 < thresholds.real_quantile < 1.0:
        problems.append(
            Problem(
                "bad-real-quantile",
                f"real_quantile is {thresholds.real_quantile}, expected a value "
                "in (0, 1) such as 0.01: fix the site's audit thresholds",
                "thresholds.real_quantile",
            )
        )
    if not 0.0 < thresholds.ms_ssim_ceiling <= 1.0:
        problems.append(
            Problem(
                "bad-ms-ssim-ceiling",
                f"ms_ssim_ceiling is {thresholds.ms_ssim_ceiling}, expected a "
                "value in (0, 1] such as 0.95: fix the site's audit thresholds",
                "thresholds.ms_ssim_ceiling",
            )
        )
    ids = list(training_patient_ids)
    if len(ids) != len(np.asarray(training)):
        problems.append(
            Problem(
                "patient-ids-length-mismatch",
                f"{len(ids)} patient ids for {len(np.asarray(training))} training "
                "scans; pass one id per training scan",
                "training_patient_ids",
            )
        )
    elif len(set(ids)) < 2:
        problems.append(
            Problem(
                "too-few-patients",
                f"{len(set(ids))} distinct patient(s) in the training scans; the "
                "different-patient control needs at least 2",
                "training_patient_ids",
            )
        )
    _raise_if_any("audit_synthetic", problems)


def _check_images(images: dict[str, np.ndarray]) -> list[Problem]:
    problems: list[Problem] = []
    sizes: dict[str, tuple[int, ...]] = {}
    for name, value in images.items():
        array = np.asarray(value)
        if array.ndim != 3 or array.shape[0] == 0 or array.dtype.kind not in "uif":
            problems.append(
                Problem(
                    "bad-image-stack",
                    f"{name} has shape {array.shape} and dtype {array.dtype}; "
                    "expected a non-empty numeric (N, H, W) stack",
                    name,
                )
            )
            continue
        sizes[name] = array.shape[1:]
        if not np.isfinite(array).all():
            problems.append(
                Problem(
                    "images-not-finite",
                    f"{name} holds NaN or infinite pixels; expected finite values "
                    "in [0, 1]",
                    name,
                )
            )
        elif array.min() < 0.0 or array.max() > 1.0:
            problems.append(
                Problem(
                    "images-outside-unit-interval",
                    f"{name} spans {array.min():.4g}..{array.max():.4g}; expected "
                    "[0, 1]: preprocess (clip and scale) as for training",
                    name,
                )
            )
    if len(set(sizes.values())) > 1:
        shown = ", ".join(f"{name} {size}" for name, size in sizes.items())
        problems.append(
            Problem(
                "image-size-mismatch",
                f"image sizes differ ({shown}); compare images on one canvas",
            )
        )
    return problems


def _check_positive(settings: dict[str, int]) -> list[Problem]:
    return [
        Problem(
            f"bad-{name.replace('_', '-')}",
            f"{name} is {value}, expected an integer >= 1",
            name,
        )
        for name, value in settings.items()
        if value < 1
    ]


def _raise_if_any(subject: str, problems: list[Problem]) -> None:
    EvaluationError.raise_if_any(subject, problems)
