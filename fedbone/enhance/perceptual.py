"""Perceptual features and an LPIPS-like distance from the site's own encoder.

Qi et al. (2024) train their generator with a perceptual loss and report LPIPS
(Zhang et al. 2018), both built on ImageNet networks. fedbone downloads no
weights, so both use the site-trained
:class:`~fedbone.generative.fidelity.encoders.SiteEncoder` instead: the
feature maps after each of its four strided blocks (16, 32, 64 and 128
channels at 1/2, 1/4, 1/8 and 1/16 of the image size).

:func:`perceptual_distance` is LPIPS without learned channel weights: at each
block the feature vector of every position is divided by its Euclidean norm,
the squared distance between the two images' unit vectors is summed over
channels (in ``[0, 4]``) and averaged over positions, and the blocks'
averages are averaged. Lower is more similar; 0 for identical images. Values
depend on the encoder, so they compare methods within one site and study, not
with published LPIPS values.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional

from fedbone.errors import Problem
from fedbone.generative.fidelity.encoders import SiteEncoder, TorchScriptEncoder
from fedbone.validation.errors import EvaluationError

__all__ = [
    "PerceptualFeatures",
    "TorchScriptPerceptual",
    "perceptual_distance",
]

# Pairs per forward pass of perceptual_distance.
_BATCH = 16
# Keeps the unit normalisation finite where a feature vector is all zeros.
_NORM_EPS = 1e-10


class PerceptualFeatures:
    """Feature maps of a frozen copy of a site encoder's blocks.

    The encoder's network is copied, so freezing it (no parameter gradients,
    evaluation mode) leaves the caller's encoder untouched; the copy follows
    the input to its device. Gradients flow to the input, so the features can
    drive a perceptual training loss.

    Parameters
    ----------
    encoder
        A trained site encoder (:func:`~fedbone.generative.fidelity.encoders.
        train_site_encoder` or :meth:`SiteEncoder.load`).
    """

    def __init__(self, encoder: SiteEncoder) -> None:
        self.blocks = copy.deepcopy(encoder.network.blocks).eval()
        self.blocks.requires_grad_(False)
        self.name = encoder.name
        self.sha256 = encoder.sha256

    def __call__(self, x: Tensor) -> list[Tensor]:
        """Return the output of each block for a ``(B, 1, H, W)`` batch.

        Parameters
        ----------
        x
            Floating-point images; any size (the blocks are convolutional).

        Returns
        -------
        list of torch.Tensor
            One ``(B, C_k, H_k, W_k)`` map per block, finest first.

        Raises
        ------
        EvaluationError
            ``not-image-batch`` or ``not-floating-point``.
        """
        problems = []
        if x.ndim != 4 or x.shape[1] != 1 or x.shape[0] == 0:
            problems.append(
                Problem(
                    "not-image-batch",
                    f"got shape {tuple(x.shape)}; pass a non-empty (B, 1, H, W) "
                    "batch, e.g. images.unsqueeze(1)",
                )
            )
        if not x.is_floating_point():
            problems.append(
                Problem("not-floating-point", f"got dtype {x.dtype}; use .float()")
            )
        EvaluationError.raise_if_any("perceptual features input", problems)
        first = next(self.blocks.parameters())
        if first.device != x.device or first.dtype != x.dtype:
            self.blocks.to(device=x.device, dtype=x.dtype)
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return features


def perceptual_distance(
    features: PerceptualFeatures, a: np.ndarray, b: np.ndarray
) -> np.ndarray:
    """LPIPS-like distance of each pair of two ``(N, H, W)`` batches.

    Parameters
    ----------
    features
        The feature extractor.
    a, b
        ``(N, H, W)`` images paired along the first axis, e.g. standard and
        enhanced scans on the standard's unit range.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` float64 distances in ``[0, 4]`` (see the module notes).

    Raises
    ------
    EvaluationError
        ``not-image-batch``, ``shape-mismatch``, ``non-finite-values``.
    """
    first = np.asarray(a, dtype=np.float32)
    second = np.asarray(b, dtype=np.float32)
    problems = []
    for name, images in (("a", first), ("b", second)):
        if images.ndim != 3 or images.shape[0] == 0:
            problems.append(
                Problem(
                    "not-image-batch",
                    f"{name} has shape {images.shape}; pass non-empty (N, H, W) images",
                    name,
                )
            )
    if first.shape != second.shape:
        problems.append(
            Problem(
                "shape-mismatch",
                f"a has shape {first.shape} and b {second.shape}; pair images of "
                "the same canvas",
            )
        )
    if not (np.isfinite(first).all() and np.isfinite(second).all()):
        problems.append(
            Problem("non-finite-values", "the images hold NaN or infinite values")
        )
    EvaluationError.raise_if_any("perceptual distance", problems)
    device = next(features.blocks.parameters()).device
    distances = []
    with torch.no_grad():
        for start in range(0, len(first), _BATCH):
            stop = start + _BATCH
            pair = torch.from_numpy(
                np.concatenate([first[start:stop], second[start:stop]])
            )
            maps = features(pair.unsqueeze(1).to(device))
            count = len(first[start:stop])
            per_block = [_block_distance(m[:count], m[count:]) for m in maps]
            distances.append(torch.stack(per_block).mean(dim=0).double().cpu().numpy())
    return np.concatenate(distances)


def _block_distance(first: Tensor, second: Tensor) -> Tensor:
    """Mean over positions of the squared distance of channel-unit vectors."""
    unit_first = functional.normalize(first, dim=1, eps=_NORM_EPS)
    unit_second = functional.normalize(second, dim=1, eps=_NORM_EPS)
    return (unit_first - unit_second).square().sum(dim=1).mean(dim=(1, 2))


class TorchScriptPerceptual:
    """Features of a site-approved TorchScript network (e.g. a local VGG).

    Qi et al.'s perceptual loss used an ImageNet network. A site that has one
    as a local TorchScript file (listed with its sha256 in
    ``policy.encoders``, named by the study's
    ``enhance.perceptual_encoder_sha256``) gets its output as the one feature
    map of the loss. The scan is resized to the network's input size,
    repeated into its channels and mapped to its value range, all in torch, so
    gradients reach the scan; the network is frozen.

    Parameters
    ----------
    encoder
        The loaded :class:`~fedbone.generative.fidelity.encoders.TorchScriptEncoder`.
    """

    def __init__(self, encoder: TorchScriptEncoder) -> None:
        self.encoder = encoder
        self.encoder.module.eval()
        for parameter in self.encoder.module.parameters():
            parameter.requires_grad_(False)
        self.name = encoder.name
        self.sha256 = encoder.sha256

    def __call__(self, x: Tensor) -> list[Tensor]:
        """Return ``[features]`` for a ``(B, 1, H, W)`` batch.

        Parameters
        ----------
        x
            Floating-point images in about [0, 1].
        """
        low, high = self.encoder.value_range
        resized = functional.interpolate(
            x, size=self.encoder.input_size, mode="bilinear", align_corners=False
        )
        inputs = low + (high - low) * resized.repeat(1, self.encoder.channels, 1, 1)
        output = self.encoder.module(inputs, **self.encoder.forward_kwargs)
        if isinstance(output, tuple | list):
            output = output[0]
        return [output.reshape(len(x), -1)]
