"""Differentiable discriminator augmentation with an adaptive probability (ADA).

The idea is Karras et al.'s adaptive discriminator augmentation (2020): every
image the discriminator sees, real or fake, is augmented with probability
``p``; the transforms are differentiable, so the generator learns through them,
and because fakes are augmented exactly like reals, the augmentations do not
leak into generated images as long as ``p`` stays well below 1.

Transforms for bone scans (each drawn independently per image with
probability ``p``):

* integer **translation** by up to 1/16 of the height and width (zero fill: the
  canvas background is black);
* isotropic **scaling** by ``2 ** N(0, 0.2)`` about the centre;
* **brightness** (add ``N(0, 0.1)``) and **contrast** (scale about the image
  mean by ``2 ** N(0, 0.5)``);
* **cutout** of a zeroed rectangle half the height and width.

There is deliberately **no horizontal flip**: a whole-body scan's left and
right are anatomy (the heart lies left, injection sites and the kidneys are
asymmetric), so a flipped scan is not a plausible scan, and nor any rotation
by 90 degrees.

:class:`AdaptiveProbability` tunes ``p`` from the overfitting heuristic
``r_t = E[sign(D(real))]``: above the target (0.6) the discriminator is too sure
of the reals, so ``p`` rises; below, it falls. The step per adjustment is
``images since the last adjustment / speed_images``, so with the default
500,000 images ``p`` can go from 0 to 1 in half a million real images.
"""

from __future__ import annotations

import torch
from torch.nn import functional

__all__ = ["AdaptiveProbability", "augment"]

_TRANSLATE_FRACTION = 1.0 / 16.0
_SCALE_STD = 0.2
_BRIGHTNESS_STD = 0.1
_CONTRAST_STD = 0.5
_CUTOUT_FRACTION = 0.5


def _chosen(batch: int, p: float, device: torch.device) -> torch.Tensor:
    return (torch.rand(batch, device=device) < p).float()


def _geometric(images: torch.Tensor, p: float) -> torch.Tensor:
    batch, _, height, width = images.shape
    device = images.device
    # Whole-pixel shifts, expressed in the normalised [-1, 1] grid coordinates.
    shift_y = torch.round(
        (torch.rand(batch, device=device) * 2 - 1) * _TRANSLATE_FRACTION * height
    )
    shift_x = torch.round(
        (torch.rand(batch, device=device) * 2 - 1) * _TRANSLATE_FRACTION * width
    )
    translate = _chosen(batch, p, device)
    shift_y, shift_x = shift_y * translate, shift_x * translate
    scale = torch.exp2(torch.randn(batch, device=device) * _SCALE_STD)
    scale = torch.where(_chosen(batch, p, device) > 0, scale, torch.ones_like(scale))
    if not bool((shift_y != 0).any() | (shift_x != 0).any() | (scale != 1).any()):
        return images
    theta = torch.zeros(batch, 2, 3, device=device)
    theta[:, 0, 0] = 1.0 / scale
    theta[:, 1, 1] = 1.0 / scale
    theta[:, 0, 2] = -2.0 * shift_x / width
    theta[:, 1, 2] = -2.0 * shift_y / height
    grid = functional.affine_grid(theta, list(images.shape), align_corners=False)
    return functional.grid_sample(
        images, grid.to(images.dtype), padding_mode="zeros", align_corners=False
    )


def _photometric(images: torch.Tensor, p: float) -> torch.Tensor:
    batch = images.shape[0]
    device = images.device
    brightness = torch.randn(batch, device=device) * _BRIGHTNESS_STD
    brightness = brightness * _chosen(batch, p, device)
    contrast = torch.exp2(torch.randn(batch, device=device) * _CONTRAST_STD)
    contrast = torch.where(
        _chosen(batch, p, device) > 0, contrast, torch.ones_like(contrast)
    )
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = images + brightness[:, None, None, None].to(images.dtype)
    return (images - mean) * contrast[:, None, None, None].to(images.dtype) + mean


def _cutout(images: torch.Tensor, p: float) -> torch.Tensor:
    batch, _, height, width = images.shape
    device = images.device
    centre_y = torch.rand(batch, 1, 1, device=device)
    centre_x = torch.rand(batch, 1, 1, device=device)
    ys = (torch.arange(height, device=device) + 0.5)[None, :, None] / height
    xs = (torch.arange(width, device=device) + 0.5)[None, None, :] / width
    inside = ((ys - centre_y).abs() < _CUTOUT_FRACTION / 2) & (
        (xs - centre_x).abs() < _CUTOUT_FRACTION / 2
    )
    cut = inside.float() * _chosen(batch, p, device)[:, None, None]
    return images * (1.0 - cut[:, None].to(images.dtype))


def augment(images: torch.Tensor, p: float) -> torch.Tensor:
    """Augment a batch ``(B, C, H, W)``, each transform with probability ``p``.

    Parameters
    ----------
    images
        Real or generated images, nominally in ``[0, 1]``.
    p
        Per-image, per-transform probability in ``[0, 1]``; 0 returns the
        input unchanged.

    Returns
    -------
    torch.Tensor
        Augmented images, same shape; differentiable with respect to ``images``.
        Values are not clipped (brightness and contrast may leave ``[0, 1]``),
        as in ADA.
    """
    if p <= 0.0:
        return images
    images = _geometric(images, p)
    images = _photometric(images, p)
    return _cutout(images, p)


class AdaptiveProbability:
    """The augmentation probability ``p``, tuned from the discriminator's outputs.

    Parameters
    ----------
    target
        Target of ``r_t = E[sign(D(real))]`` (0.6 in ADA).
    speed_images
        Real images over which ``p`` can move by 1 (500k in ADA).
    interval
        Discriminator steps between adjustments (``r_t`` averages over them).
    p
        Starting probability.
    """

    def __init__(
        self,
        *,
        target: float = 0.6,
        speed_images: int = 500_000,
        interval: int = 4,
        p: float = 0.0,
    ) -> None:
        self.target = target
        self.speed_images = speed_images
        self.interval = interval
        self.p = min(max(p, 0.0), 1.0)
        self._sign_sum = 0.0
        self._count = 0
        self._steps = 0

    def observe(self, real_logits: torch.Tensor) -> None:
        """Record one step's logits on (augmented) reals; adjust every ``interval``."""
        self._sign_sum += float(torch.sign(real_logits.detach().float()).sum())
        self._count += int(real_logits.numel())
        self._steps += 1
        if self._steps >= self.interval:
            self._adjust()

    @property
    def r_t(self) -> float:
        """The overfitting heuristic over the pending interval (0 when empty)."""
        return self._sign_sum / self._count if self._count else 0.0

    def _adjust(self) -> None:
        direction = 1.0 if self.r_t > self.target else -1.0
        step = direction * self._count / self.speed_images
        self.p = min(max(self.p + step, 0.0), 1.0)
        self._sign_sum, self._count, self._steps = 0.0, 0, 0
