"""Grad-CAM maps of the study classifier, with MONAI's ``GradCAM``.

Ibrahim et al. (2023) showed where their two-view network looked with
Grad-CAM. fedbone computes the maps with :class:`monai.visualize.GradCAM` on
the classifier's last convolution, for the positive class. MONAI's default
post-processing (``default_normalizer``) maps each map's (min, max) to
(1, 0), which **inverts** it: the least relevant region would look the most
relevant. :func:`gradcam_maps` therefore passes its own post-processing:
each map is divided by its own maximum, so 1 is the most relevant pixel and
0 stays "no evidence for the positive class" (Grad-CAM's ReLU already
removed negative evidence); an all-zero map stays zero.

:func:`pointing_game` is the sanity measure on phantoms: the share of maps
whose peak lies inside (or within ``tolerance`` pixels of) a planted lesion.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch
from monai.visualize import GradCAM
from scipy import ndimage
from torch import nn

from fedbone.classifier.runtime import input_channels, to_model_input
from fedbone.errors import Problem
from fedbone.validation.errors import EvaluationError

__all__ = ["gradcam_maps", "last_convolution", "pointing_game"]


class _PositiveLogit(nn.Module):
    """The classifier with a ``(B, 1)`` output, as MONAI's CAM expects."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).reshape(len(x), 1)


def last_convolution(model: nn.Module) -> str:
    """Return the name of ``model``'s last ``Conv2d`` (Grad-CAM's usual layer).

    Raises
    ------
    EvaluationError
        When the model has no 2-D convolution.
    """
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not names:
        raise EvaluationError(
            "Grad-CAM",
            [Problem("no-convolution", "the model has no Conv2d layer to explain")],
        )
    return names[-1]


def _scale_by_maximum(maps: torch.Tensor) -> torch.Tensor:
    """Divide each map by its maximum (no inversion, zeros stay zero)."""
    flat = maps.reshape(len(maps), -1)
    peak = flat.max(dim=1).values.clamp_min(torch.finfo(maps.dtype).tiny)
    return (flat / peak[:, None]).reshape(maps.shape)


def gradcam_maps(
    model: nn.Module,
    images: npt.NDArray[np.float32],
    *,
    target_layer: str | None = None,
    batch_size: int = 16,
) -> npt.NDArray[np.float32]:
    """Grad-CAM maps of the positive class, one per image, in [0, 1].

    Parameters
    ----------
    model
        A classifier mapping ``(B, C, H, W)`` to ``(B,)`` logits (put in eval
        mode here).
    images
        ``(N, H, W)`` canvases in [0, 1] (two views side by side when the
        model takes two channels).
    target_layer
        Dotted name of the layer to explain; default its last convolution.
    batch_size
        Images per pass.

    Returns
    -------
    numpy.ndarray
        ``(N, H, W)`` float32 maps, 1 at each map's most relevant pixel. A
        two-channel model sees the two views stacked as channels, so its one
        map is shown on both halves of the side-by-side canvas.
    """
    model.eval()
    channels = input_channels(model)
    wrapped = _PositiveLogit(model)
    layer = f"model.{target_layer or last_convolution(model)}"
    cam = GradCAM(
        nn_module=wrapped, target_layers=layer, postprocessing=_scale_by_maximum
    )
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(
            np.ascontiguousarray(images[start : start + batch_size], dtype=np.float32)
        )
        x = to_model_input(batch, channels)
        maps = cam(x, class_idx=0)
        maps = maps.detach().reshape(len(batch), -1, *x.shape[2:]).mean(dim=1)
        if channels == 2:  # back to the side-by-side canvas
            maps = torch.cat([maps, maps], dim=-1)
        outputs.append(maps.numpy().astype(np.float32))
    return np.concatenate(outputs) if outputs else np.zeros((0, *images.shape[1:]))


def pointing_game(
    maps: npt.NDArray[np.floating],
    lesion_masks: Sequence[npt.NDArray[np.bool_]] | npt.NDArray[np.bool_],
    *,
    tolerance: int = 1,
) -> float:
    """Share of maps whose peak lies in a lesion (dilated by ``tolerance`` px).

    Parameters
    ----------
    maps
        ``(N, H, W)`` Grad-CAM maps.
    lesion_masks
        ``(N, H, W)`` masks of the planted lesions, same canvas.
    tolerance
        Pixels a peak may miss a lesion by (Zhang et al.'s pointing game
        allows 15 px at 224 px; one canvas pixel is 8 mm on the CPU profile).

    Raises
    ------
    EvaluationError
        For shapes that differ, or an image without any lesion.
    """
    maps = np.asarray(maps)
    masks = np.asarray(lesion_masks, dtype=bool)
    problems = []
    if maps.shape != masks.shape or maps.ndim != 3:
        problems.append(
            Problem(
                "shape-mismatch",
                f"maps {maps.shape} and masks {masks.shape} must both be (N, H, W)",
            )
        )
    elif not masks.reshape(len(masks), -1).any(axis=1).all():
        problems.append(
            Problem("no-lesion", "every image in the pointing game needs a lesion")
        )
    EvaluationError.raise_if_any("pointing game", problems)
    if len(maps) == 0:
        return float("nan")
    structure = ndimage.generate_binary_structure(2, 2)
    hits = 0
    for cam, mask in zip(maps, masks, strict=True):
        grown = (
            ndimage.binary_dilation(mask, structure, iterations=tolerance)
            if tolerance > 0
            else mask
        )
        peak = np.unravel_index(int(np.argmax(cam)), cam.shape)
        hits += bool(grown[peak])
    return hits / len(maps)
