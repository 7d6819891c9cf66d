"""Projection discriminator with residual downsampling blocks.

The design follows the published StyleGAN2 residual discriminator and the
projection discriminator of Miyato & Koyama (2018), written here:

* a 1x1 from-image layer at the canvas resolution;
* one residual block per generator upsampling: two 3x3 convolutions and a 2x
  downsampling, plus a 1x1 downsampled skip, summed and divided by ``sqrt(2)``
  to keep unit variance; the downsampling low-pass filters with ``[1, 3, 3, 1]``
  (``spec.antialias``) or averages 2x2 boxes;
* at the coarsest resolution (the generator's constant size) an optional
  **minibatch standard-deviation** feature (groups of up to four images; it
  shows the discriminator a lack of variety in fakes), a 3x3 convolution and a
  fully connected layer to a feature vector ``phi(x)``;
* the logit is ``linear(phi(x)) + <embed(label), phi(x)>``: the projection term
  ties the real/fake decision to the conditioning class;
* with ``spec.class_head`` a linear layer on ``phi(x)`` also predicts the class
  (an auxiliary classifier, Odena et al. 2017), returned by
  :meth:`ProjectionDiscriminator.classify`.

There is no normalisation layer at all. With ``dp_compatible=True`` the
minibatch-stddev feature is dropped, so every operation is per sample: a
sample's logit does not depend on the rest of its batch, as DP-SGD's
per-sample gradient clipping requires. All layers are plain ``nn.Conv2d``,
``nn.Linear`` and ``nn.Embedding`` modules (Opacus-supported).
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn
from torch.nn import functional

from fedbone.models.gan.generator import (
    EqualConv2d,
    EqualLinear,
    GanSpec,
    class_channels,
)

__all__ = ["ProjectionDiscriminator", "build_discriminator"]

_LEAK = 0.2
_ACT_GAIN = math.sqrt(2.0)
_STDDEV_GROUP = 4


def _act(x: torch.Tensor) -> torch.Tensor:
    return functional.leaky_relu(x, _LEAK) * _ACT_GAIN


def _lowpass_kernel() -> torch.Tensor:
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
    kernel = torch.outer(taps, taps)
    return (kernel / kernel.sum())[None, None]


def _downsample(x: torch.Tensor, antialias: bool) -> torch.Tensor:
    """Halve ``x``: ``[1, 3, 3, 1]`` low-pass with stride 2, or 2x2 box average."""
    if not antialias:
        return functional.avg_pool2d(x, 2)
    channels = x.shape[1]
    kernel = _lowpass_kernel().to(x.device).expand(channels, 1, 4, 4)
    # In float32 even under autocast: a bfloat16 depthwise convolution runs
    # about 4x slower on CPU than casting there and back.
    with torch.autocast(x.device.type, enabled=False):
        out = functional.conv2d(x.float(), kernel, stride=2, padding=1, groups=channels)
    return out.to(x.dtype)


class _ResidualDown(nn.Module):
    """Two 3x3 convolutions then 2x downsampling, with a 1x1 downsampled skip."""

    def __init__(self, in_channels: int, out_channels: int, antialias: bool) -> None:
        super().__init__()
        self.conv0 = EqualConv2d(in_channels, in_channels, 3)
        self.conv1 = EqualConv2d(in_channels, out_channels, 3)
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False)
        self.antialias = antialias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.skip(_downsample(x, self.antialias))
        x = _act(self.conv0(x))
        x = _act(self.conv1(_downsample(x, self.antialias)))
        return (x + skip) / math.sqrt(2.0)


def _minibatch_stddev(x: torch.Tensor) -> torch.Tensor:
    """Append the within-group standard deviation, averaged, as one channel."""
    batch, channels, height, width = x.shape
    group = min(_STDDEV_GROUP, batch)
    while batch % group:
        group -= 1
    y = x.reshape(group, batch // group, channels, height, width).float()
    std = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))
    feature = std.repeat(group)[:, None, None, None].expand(-1, 1, height, width)
    return torch.cat([x, feature.to(x.dtype)], dim=1)


class ProjectionDiscriminator(nn.Module):
    """``(images (B, 1, H, W) in [0, 1], labels (B,)) -> (B,)`` logits.

    Parameters
    ----------
    spec
        Canvas and widths, mirroring the generator's.
    minibatch_stddev
        Add the minibatch standard-deviation feature (couples a batch's samples).
    class_head
        Add the auxiliary class head.
    """

    def __init__(
        self,
        spec: GanSpec,
        *,
        minibatch_stddev: bool = True,
        class_head: bool = True,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.minibatch_stddev = minibatch_stddev
        channels = class_channels(spec)[::-1]
        self.from_image = EqualConv2d(1, channels[0], 1)
        self.blocks = nn.ModuleList(
            _ResidualDown(a, b, spec.antialias) for a, b in itertools.pairwise(channels)
        )
        top = channels[-1]
        self.final_conv = EqualConv2d(top + int(minibatch_stddev), top, 3)
        height, width = spec.initial_size
        self.features = EqualLinear(top * height * width, top)
        self.output = EqualLinear(top, 1)
        self.embed = nn.Embedding(spec.n_classes, top)
        with torch.no_grad():
            self.embed.weight.normal_().div_(math.sqrt(top))
        self.class_head = EqualLinear(top, spec.n_classes) if class_head else None

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Return one real/fake logit per image, conditioned on its class.

        Parameters
        ----------
        images
            ``(B, 1, height, width)``, values nominally in ``[0, 1]``.
        labels
            ``(B,)`` long class ids.
        """
        return self.classify(images, labels)[0]

    def classify(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return the real/fake logits and the class logits (None without a head).

        Parameters
        ----------
        images
            ``(B, 1, height, width)``, values nominally in ``[0, 1]``.
        labels
            ``(B,)`` long class ids.

        Returns
        -------
        tuple
            ``(B,)`` real/fake logits and ``(B, n_classes)`` class logits.
        """
        # Centre the [0, 1] canvas so the first layer sees zero-mean input.
        x = _act(self.from_image(images * 2.0 - 1.0))
        for block in self.blocks:
            x = block(x)
        if self.minibatch_stddev:
            x = _minibatch_stddev(x)
        x = _act(self.final_conv(x))
        phi = _act(self.features(x.flatten(1)))
        projection = (self.embed(labels).to(phi.dtype) * phi).sum(dim=1)
        logits = self.output(phi).squeeze(1) + projection / math.sqrt(phi.shape[1])
        classes = self.class_head(phi) if self.class_head is not None else None
        return logits, classes


def build_discriminator(
    spec: GanSpec, *, dp_compatible: bool = False
) -> ProjectionDiscriminator:
    """Build the discriminator for ``spec``.

    Parameters
    ----------
    spec
        GAN shape; ``spec.minibatch_stddev`` switches the minibatch feature.
    dp_compatible
        Only per-sample operations (no minibatch-stddev; there is never a batch
        norm), so DP-SGD's per-sample gradients are valid; no class head either
        (DP training does not use it, and every parameter must get a gradient).

    Returns
    -------
    ProjectionDiscriminator
        A freshly initialised discriminator.
    """
    return ProjectionDiscriminator(
        spec,
        minibatch_stddev=spec.minibatch_stddev and not dp_compatible,
        class_head=spec.class_head and not dp_compatible,
    )
