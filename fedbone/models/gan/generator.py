"""Class-conditional style-based generator (the StyleGAN2 ideas, written here).

The generator follows the published design of Karras et al. (StyleGAN2, 2020;
ADA, 2020) without their code:

* a **mapping network** turns a normalised latent ``z`` and an embedded class
  label into a style vector ``w``;
* a **synthesis network** starts from a learned constant at the coarsest
  resolution, which keeps the canvas's aspect ratio (8 x 2 for 256 x 64, 32 x 8
  for 1024 x 256 with five upsamplings): scans are generated natively
  rectangular, never squared and cropped;
* each resolution doubles the size (bilinear) and applies two **style-modulated
  convolutions** (weights scaled per input channel by the style, then
  demodulated so every output channel has unit expected variance), each
  followed by per-pixel noise with a learned per-channel strength;
* **skip** to-image layers: every resolution adds its 1x1 modulated projection
  to the upsampled image so far; the sum is a logit and ``sigmoid`` maps it to
  ``[0, 1]``, the range of the preprocessed canvas;
* a learned full-resolution **image prior** (a logit map, zero at construction)
  is added to that sum. :meth:`ConditionalGenerator.set_image_prior` sets it
  from the per-pixel mean of the training scans, so the generator starts from
  an average body rather than mid-grey: a whole-body scan is mostly black
  background (logit about -5), which a sigmoid output reaches only slowly from 0.

Every layer uses the **equalised learning rate**: weights are drawn from
``N(0, 1)`` and the *input* is scaled by ``1/sqrt(fan_in)`` at run time, which
is exactly a He-scaled weight for the forward pass but lets Adam take steps of
the same relative size in every layer. Scaling the input (not the weight)
keeps each layer a plain ``nn.Conv2d``/``nn.Linear``, which Opacus's per-sample
gradients support.

Not included (documented simplifications): style mixing, path-length
regularisation and FIR (blur) up/down-sampling filters.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional

from fedbone.errors import Problem
from fedbone.models.errors import ModelError

__all__ = [
    "ConditionalGenerator",
    "EqualConv2d",
    "EqualLinear",
    "GanSpec",
    "ModulatedConv2d",
    "class_channels",
]

_LEAK = 0.2
# LeakyReLU followed by this gain keeps unit variance through a layer.
_ACT_GAIN = math.sqrt(2.0)
# The w average used by truncation follows training with this per-step decay.
_W_AVG_BETA = 0.995
# Initial scale of the to-image weights (logit noise per level at the start).
_TO_IMAGE_INIT = 0.1


@dataclass(frozen=True)
class GanSpec:
    """Shape and size of a conditional GAN (generator and discriminator).

    Parameters
    ----------
    height, width
        Canvas size; both must be divisible by ``2 ** upsamplings``.
    latent_dim
        Size of ``z``.
    style_dim
        Size of the style vector ``w``.
    n_classes
        Conditioning classes. fedbone uses 4: ``class = 2 * bm + ca`` (0: no BM,
        no CA; 1: CA only; 2: BM only; 3: both), see
        :func:`fedbone.generative.trainer.class_labels`.
    base_channels
        Channels at the finest resolution; each coarser level doubles them up to
        ``max_channels``.
    max_channels
        Channel cap at coarse resolutions.
    mapping_layers
        Fully connected layers of the mapping network.
    minibatch_stddev
        Discriminator's minibatch standard-deviation feature (off for DP).
    upsamplings
        Doublings from the learned constant to the canvas; the constant is
        ``(height, width) / 2 ** upsamplings``.
    antialias
        The discriminator low-pass filters (``[1, 3, 3, 1]``, the filter of the
        generator's bilinear upsampling) before each 2x downsampling instead of
        averaging 2x2 boxes, which alias fine patterns the generator then
        exploits as a grid texture.
    class_head
        The discriminator also predicts the class from its features (an
        auxiliary classifier, AC-GAN); the trainer uses it when
        :attr:`~fedbone.generative.trainer.GanTrainSpec.class_loss_weight` > 0.
    """

    height: int = 256
    width: int = 64
    latent_dim: int = 128
    style_dim: int = 128
    n_classes: int = 4
    base_channels: int = 64
    max_channels: int = 256
    mapping_layers: int = 4
    minibatch_stddev: bool = True
    upsamplings: int = 5
    antialias: bool = False
    class_head: bool = False

    def __post_init__(self) -> None:
        problems = []
        for name in ("latent_dim", "style_dim", "base_channels", "mapping_layers"):
            if getattr(self, name) < 1:
                problems.append(Problem("not-positive", "must be >= 1", name))
        if self.n_classes < 1:
            problems.append(Problem("not-positive", "must be >= 1", "n_classes"))
        if self.max_channels < self.base_channels:
            problems.append(
                Problem(
                    "channel-cap-too-small",
                    f"{self.max_channels} < base_channels {self.base_channels}; "
                    "raise max_channels",
                    "max_channels",
                )
            )
        if self.upsamplings < 1:
            problems.append(Problem("not-positive", "must be >= 1", "upsamplings"))
        else:
            factor = 2**self.upsamplings
            for name in ("height", "width"):
                size = getattr(self, name)
                if size < factor or size % factor:
                    problems.append(
                        Problem(
                            "canvas-not-divisible",
                            f"{size} is not a positive multiple of 2**upsamplings "
                            f"= {factor}; change the canvas or upsamplings",
                            name,
                        )
                    )
        ModelError.raise_if_any("GanSpec", problems)

    @property
    def initial_size(self) -> tuple[int, int]:
        """The learned constant's ``(height, width)``."""
        factor = 2**self.upsamplings
        return self.height // factor, self.width // factor


def class_channels(spec: GanSpec) -> list[int]:
    """Channels per resolution level, coarsest first (``upsamplings + 1`` levels)."""
    levels = spec.upsamplings + 1
    return [
        min(spec.max_channels, spec.base_channels * 2 ** (levels - 1 - level))
        for level in range(levels)
    ]


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate (``N(0,1)`` weights, scaled input).

    Parameters
    ----------
    in_features, out_features
        Sizes.
    bias_init
        Initial bias (1 for style affines, so styles start at identity).
    lr_multiplier
        Slows this layer's effective learning rate (0.01 in the mapping network).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias_init: float = 0.0,
        lr_multiplier: float = 1.0,
    ) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        with torch.no_grad():
            self.linear.weight.normal_().div_(lr_multiplier)
            self.linear.bias.fill_(bias_init / lr_multiplier)
        self.scale = lr_multiplier / math.sqrt(in_features)
        self.lr_multiplier = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``W (scale x) + lr_multiplier b`` for ``x`` of shape ``(B, in)``."""
        if self.lr_multiplier == 1.0:
            return self.linear(x * self.scale)
        out = functional.linear(x * self.scale, self.linear.weight)
        return out + self.linear.bias * self.lr_multiplier


class EqualConv2d(nn.Module):
    """2-D convolution with equalised learning rate (same padding, stride 1)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int, *, bias: bool = True
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel, padding=kernel // 2, bias=bias
        )
        with torch.no_grad():
            self.conv.weight.normal_()
            if self.conv.bias is not None:
                self.conv.bias.zero_()
        self.scale = 1.0 / math.sqrt(in_channels * kernel * kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve ``x`` of shape ``(B, in, H, W)``."""
        return self.conv(x * self.scale)


class ModulatedConv2d(nn.Module):
    """Convolution whose weights are modulated per sample by a style vector.

    Parameters
    ----------
    in_channels, out_channels, kernel
        Convolution shape (same padding).
    style_dim
        Size of ``w``; an affine layer maps it to one scale per input channel.
    demodulate
        Rescale each sample's output channel weights to unit norm, so the output
        has unit expected variance for unit-variance input (False for to-image).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        style_dim: int,
        *,
        demodulate: bool = True,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(
            torch.randn(out_channels, in_channels, kernel, kernel)
        )
        self.affine = EqualLinear(style_dim, in_channels, bias_init=1.0)
        self.demodulate = demodulate
        self.padding = kernel // 2
        self.scale = 1.0 / math.sqrt(in_channels * kernel * kernel)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Convolve ``x`` ``(B, in, H, W)``, weights modulated by ``w`` ``(B, S)``."""
        styles = self.affine(w)
        weight = self.weight * self.scale
        # Scaling the input channels by the style and the output channels by the
        # demodulation factor equals convolving with per-sample modulated
        # weights, but runs as one ordinary batched convolution (much faster
        # than a grouped convolution, on CPU in particular).
        out = functional.conv2d(
            x * styles[:, :, None, None].to(x.dtype),
            weight.to(x.dtype),
            padding=self.padding,
        )
        if self.demodulate:
            energy = styles.square() @ weight.square().sum(dim=(2, 3)).t()
            out = out * torch.rsqrt(energy + 1e-8)[:, :, None, None].to(out.dtype)
        return out


class _StyledLayer(nn.Module):
    """Modulated 3x3 convolution, per-pixel noise, bias and activation."""

    def __init__(self, in_channels: int, out_channels: int, style_dim: int) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, style_dim)
        self.noise_strength = nn.Parameter(torch.zeros(out_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        x = self.conv(x, w)
        batch, _, height, width = x.shape
        noise = torch.randn(
            (batch, 1, height, width),
            generator=generator,
            device=x.device,
            dtype=x.dtype,
        )
        x = x + noise * self.noise_strength[None, :, None, None]
        x = x + self.bias[None, :, None, None]
        return functional.leaky_relu(x, _LEAK) * _ACT_GAIN


class _MappingNetwork(nn.Module):
    """``(z, label) -> w``: normalised latent and label embedding through an MLP."""

    def __init__(self, spec: GanSpec) -> None:
        super().__init__()
        self.embed = EqualLinear(spec.n_classes, spec.latent_dim)
        layers: list[nn.Module] = []
        width = 2 * spec.latent_dim
        for _ in range(spec.mapping_layers):
            layers.append(EqualLinear(width, spec.style_dim, lr_multiplier=0.01))
            width = spec.style_dim
        self.layers = nn.ModuleList(layers)
        self.n_classes = spec.n_classes

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        one_hot = functional.one_hot(labels, self.n_classes).to(z.dtype)
        # Normalising both parts gives label and latent equal weight in w.
        x = torch.cat([_pixel_norm(z), _pixel_norm(self.embed(one_hot))], dim=1)
        for layer in self.layers:
            x = functional.leaky_relu(layer(x), _LEAK) * _ACT_GAIN
        return x


def _pixel_norm(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


class ConditionalGenerator(nn.Module):
    """Class-conditional style-based generator, ``(z, labels) -> (B, 1, H, W)``.

    Parameters
    ----------
    spec
        Canvas, widths and depth; see :class:`GanSpec`.

    Notes
    -----
    ``w_avg`` holds the running mean of ``w`` per class (updated in training
    mode); truncation pulls ``w`` towards its class's mean, so a truncated
    image still shows its class.
    """

    def __init__(self, spec: GanSpec) -> None:
        super().__init__()
        self.spec = spec
        channels = class_channels(spec)
        self.mapping = _MappingNetwork(spec)
        self.constant = nn.Parameter(torch.randn(channels[0], *spec.initial_size))
        self.layers = nn.ModuleList(
            [_StyledLayer(channels[0], channels[0], spec.style_dim)]
        )
        self.to_image = nn.ModuleList(
            [ModulatedConv2d(channels[0], 1, 1, spec.style_dim, demodulate=False)]
        )
        for previous, current in itertools.pairwise(channels):
            self.layers.append(_StyledLayer(previous, current, spec.style_dim))
            self.layers.append(_StyledLayer(current, current, spec.style_dim))
            self.to_image.append(
                ModulatedConv2d(current, 1, 1, spec.style_dim, demodulate=False)
            )
        with torch.no_grad():
            # The image starts close to the prior; each level then learns its
            # contribution (unscaled to-image weights would add logit noise of
            # about one per level on top of the mean scan).
            for projection in self.to_image:
                assert isinstance(projection, ModulatedConv2d)
                projection.weight.mul_(_TO_IMAGE_INIT)
        self.image_bias = nn.Parameter(torch.zeros(len(channels)))
        self.image_prior = nn.Parameter(torch.zeros(1, 1, spec.height, spec.width))
        self.register_buffer("w_avg", torch.zeros(spec.n_classes, spec.style_dim))

    def forward(
        self,
        z: torch.Tensor,
        labels: torch.Tensor,
        *,
        truncation: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Generate one image per ``(z, label)``.

        Parameters
        ----------
        z
            Latents ``(B, latent_dim)``.
        labels
            Class ids ``(B,)`` (long) in ``[0, n_classes)``.
        truncation
            1 keeps ``w``; below 1 pulls it towards the class mean of ``w``.
        generator
            Draws the per-pixel noise (for reproducible generation); the global
            generator when None.

        Returns
        -------
        torch.Tensor
            ``(B, 1, height, width)`` in ``[0, 1]``.
        """
        w = self.mapping(z, labels)
        if self.training:
            self._track_w_avg(w.detach(), labels)
        if truncation != 1.0:
            anchor = self.get_buffer("w_avg")[labels].to(w.dtype)
            w = anchor + truncation * (w - anchor)
        x = self.constant[None].expand(z.shape[0], -1, -1, -1).to(w.dtype)
        x = self.layers[0](x, w, generator)
        image = self.to_image[0](x, w) + self.image_bias[0]
        for level in range(1, len(self.to_image)):
            x = functional.interpolate(
                x, scale_factor=2.0, mode="bilinear", align_corners=False
            )
            x = self.layers[2 * level - 1](x, w, generator)
            x = self.layers[2 * level](x, w, generator)
            image = functional.interpolate(
                image, scale_factor=2.0, mode="bilinear", align_corners=False
            )
            image = image + self.to_image[level](x, w) + self.image_bias[level]
        return torch.sigmoid(image + self.image_prior.to(image.dtype))

    @torch.no_grad()
    def set_image_prior(self, mean_image: torch.Tensor, *, floor: float = 1e-3) -> None:
        """Start from ``mean_image``: set the prior to its logit.

        Parameters
        ----------
        mean_image
            ``(height, width)`` per-pixel mean of training scans in ``[0, 1]``.
        floor
            Values are clipped to ``[floor, 1 - floor]`` before the logit.
        """
        expected = (self.spec.height, self.spec.width)
        if tuple(mean_image.shape) != expected:
            raise ModelError(
                "image prior",
                [
                    Problem(
                        "image-shape",
                        f"is {tuple(mean_image.shape)}, expected {expected}",
                        "mean_image",
                    )
                ],
            )
        clipped = mean_image.float().clamp(floor, 1.0 - floor)
        self.image_prior.copy_(torch.logit(clipped)[None, None])

    @torch.no_grad()
    def _track_w_avg(self, w: torch.Tensor, labels: torch.Tensor) -> None:
        # Vectorised over classes (no host sync); absent classes keep their mean.
        w_avg = self.get_buffer("w_avg")
        sums = torch.zeros_like(w_avg).index_add_(0, labels, w.float())
        counts = torch.bincount(labels, minlength=w_avg.shape[0]).to(w_avg.dtype)
        means = sums / counts.clamp(min=1)[:, None]
        weight = (counts > 0).to(w_avg.dtype)[:, None] * (1.0 - _W_AVG_BETA)
        w_avg.add_(weight * (means - w_avg))
