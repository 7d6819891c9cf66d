"""Whole-scan inference of a trained enhancer.

The networks are fully convolutional, so a whole canvas goes through at once:
no tiling, no seams. :func:`enhance` works on network-scaled images (the
evaluation code's view); :func:`enhance_counts` takes one fast scan's counts
and returns counts of a standard acquisition, refusing speeds the model was
not trained near.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from fedbone.classifier.runtime import resolve_device
from fedbone.enhance.errors import EnhanceError
from fedbone.enhance.model_file import EnhancerModel
from fedbone.enhance.scaling import network_input, to_counts
from fedbone.errors import Problem, ProblemsError
from fedbone.models.enhancers import EnhancerSpec, build_enhancer, generator_arrays
from fedbone.models.errors import ModelError
from fedbone.models.parameters import load_arrays

__all__ = [
    "SPEED_TOLERANCE",
    "enhance",
    "enhance_counts",
    "speed_problems",
]

#: A model serves speeds from ``min(speeds) / 1.25`` to ``max(speeds) * 1.25``.
SPEED_TOLERANCE = 1.25
_MULTIPLE = 4


def _shape_problems(shape: tuple[int, ...], where: str) -> list[Problem]:
    if any(side % _MULTIPLE for side in shape[-2:]) or min(shape[-2:]) < _MULTIPLE:
        return [
            Problem(
                "size-not-multiple-of-4",
                f"the image is {shape[-2]}x{shape[-1]}; enhancers take heights "
                "and widths that are multiples of 4 (place the scan on the "
                "study's canvas first)",
                where,
            )
        ]
    return []


def enhance(
    spec: EnhancerSpec,
    arrays: Mapping[str, np.ndarray],
    inputs: np.ndarray,
    *,
    batch_size: int = 8,
    device: str = "cpu",
) -> np.ndarray:
    """Enhance network-scaled images with a trained enhancer.

    Parameters
    ----------
    spec
        The method and size.
    arrays
        The enhancer's arrays, or a federated GAN's (``generator.`` keys are
        used, the discriminator ignored).
    inputs
        ``(N, H, W)`` network inputs, ``H`` and ``W`` multiples of 4.
    batch_size
        Images per forward pass.
    device
        ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.

    Returns
    -------
    numpy.ndarray
        ``(N, H, W)`` float32 outputs (divide-by-level scale, not clipped).

    Raises
    ------
    EnhanceError
        For inputs not ``(N, H, W)``, with non-finite values or sides that are
        not multiples of 4, or arrays that do not fit ``spec``.
    """
    images = np.asarray(inputs, dtype=np.float32)
    problems = []
    if images.ndim != 3:
        problems.append(
            Problem("bad-shape", f"got shape {images.shape}, need (N, H, W)", "inputs")
        )
    else:
        problems += _shape_problems(images.shape, "inputs")
        if not np.isfinite(images).all():
            problems.append(Problem("non-finite", "NaN or infinite values", "inputs"))
    EnhanceError.raise_if_any("images to enhance", problems)
    network = build_enhancer(spec)
    try:
        load_arrays(network, generator_arrays(spec, arrays))
    except ModelError as error:
        raise EnhanceError("enhancer arrays", error.problems) from error
    torch_device = resolve_device(device)
    network.to(torch_device).eval()
    outputs = np.empty_like(images)
    with torch.no_grad():
        for start in range(0, len(images), max(1, batch_size)):
            batch = torch.from_numpy(images[start : start + batch_size, None])
            result = network(batch.to(torch_device))
            outputs[start : start + batch_size] = result[:, 0].cpu().numpy()
    return outputs


def speed_problems(model: EnhancerModel, speed: float) -> list[Problem]:
    """Return ``speed-out-of-range`` unless ``model`` serves ``speed``.

    It serves ``[min(speeds) / SPEED_TOLERANCE, max(speeds) * SPEED_TOLERANCE]``.
    """
    low = min(model.speeds) / SPEED_TOLERANCE
    high = max(model.speeds) * SPEED_TOLERANCE
    if low <= speed <= high:
        return []
    return [
        Problem(
            "speed-out-of-range",
            f"speed {speed:g}; this enhancer was trained for speeds "
            f"{', '.join(f'{s:g}' for s in model.speeds)} and serves "
            f"{low:.3g} to {high:.3g}; use an enhancer trained for this speed",
            "speed",
        )
    ]


def enhance_counts(
    model: EnhancerModel, fast_counts: np.ndarray, speed: float
) -> np.ndarray:
    """Turn one fast scan's counts into counts of a standard acquisition.

    The fast counts are scaled by ``speed`` and the intensity level
    (:func:`fedbone.enhance.scaling.network_input` with the model's
    percentile), enhanced, and multiplied back by the level. Nothing is padded
    or cropped.

    Parameters
    ----------
    model
        A loaded enhancer.
    fast_counts
        ``(H, W)`` counts of the fast (low-count) acquisition, ``H`` and ``W``
        multiples of 4.
    speed
        Standard counts over fast counts; within ``[min(model.speeds) / 1.25,
        max(model.speeds) * 1.25]``.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` float32 non-negative counts on the standard acquisition's
        scale.

    Raises
    ------
    EnhanceError
        For a speed the model was not trained near, an image that is not 2-D or
        whose sides are not multiples of 4, or an empty or non-finite image.
    """
    counts = np.asarray(fast_counts, dtype=np.float32)
    problems = speed_problems(model, speed)
    if counts.ndim != 2:
        problems.append(
            Problem(
                "bad-shape", f"got shape {counts.shape}, need (H, W)", "fast_counts"
            )
        )
    else:
        problems += _shape_problems(counts.shape, "fast_counts")
    EnhanceError.raise_if_any("fast scan", problems)
    try:
        x, level = network_input(counts, speed, model.clip_percentile)
    except ProblemsError as error:
        raise EnhanceError("fast scan", error.problems) from error
    output = enhance(model.spec, model.arrays, x[None])[0]
    return to_counts(output, level)
