"""DDSRCNN-style encoder-decoder denoiser (the review's Ito et al.), written here.

Ito et al. denoised low-count bone scintigraphy with a deep denoising
encoder-decoder (DDSRCNN, after the symmetric-skip networks of Mao et al.
2016) that beat DnCNN and classical filters. The design here:

* **encoder**: at each level two 3x3 convolutions with ReLU; ``levels`` times
  a 2x2 max-pooling and two more convolutions, doubling the channels (capped
  at ``4 * width``);
* **decoder**: nearest-neighbour 2x upsampling and a 3x3 convolution back to
  the finer level's channels, two convolutions, and the encoder's features of
  that level **added** (symmetric skip connections carry the fine detail the
  pooling discarded);
* an output convolution and the outermost skip, from the input image to the
  output (Mao et al.'s first symmetric skip): the network learns the
  correction to its input; the output convolution starts at zero, so the
  untrained network returns its input.

No normalisation layer, so nothing but weights is averaged by FedAvg. Images
whose sides are not multiples of ``2 ** levels`` are padded (edge values) on
the bottom and right before the encoder and cropped back after the decoder, so
any size works and the output always has the input's size.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

__all__ = ["DDSRCNN"]

_MAX_WIDTH_FACTOR = 4


def _double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, 3, padding=1),
        nn.ReLU(),
    )


class _Up(nn.Module):
    """Nearest 2x upsampling, a 3x3 convolution to ``out_channels`` and a ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional.relu(
            self.conv(functional.interpolate(x, scale_factor=2.0, mode="nearest"))
        )


class DDSRCNN(nn.Module):
    """``(B, 1, H, W) -> (B, 1, H, W)``: encoder-decoder with additive skips.

    Parameters
    ----------
    width
        Channels of the finest level.
    levels
        Downsamplings of the encoder (and upsamplings of the decoder); at
        least 1.
    """

    def __init__(self, width: int = 32, levels: int = 3) -> None:
        super().__init__()
        channels = [
            width * min(2**level, _MAX_WIDTH_FACTOR) for level in range(levels + 1)
        ]
        self.levels = levels
        self.encoder = nn.ModuleList(
            [_double_conv(1, width)]
            + [_double_conv(channels[i], channels[i + 1]) for i in range(levels)]
        )
        self.up = nn.ModuleList(
            _Up(channels[i + 1], channels[i]) for i in reversed(range(levels))
        )
        self.decoder = nn.ModuleList(
            _double_conv(channels[i], channels[i]) for i in reversed(range(levels))
        )
        self.output = nn.Conv2d(width, 1, 3, padding=1)
        # Zero correction at the start: the untrained network is the identity.
        for parameter in self.output.parameters():
            nn.init.zeros_(parameter)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the input plus the decoded correction.

        Parameters
        ----------
        x
            ``(B, 1, H, W)`` network input, any ``H`` and ``W``.
        """
        height, width = x.shape[-2:]
        multiple = 2**self.levels
        padded = functional.pad(
            x, (0, -width % multiple, 0, -height % multiple), mode="replicate"
        )
        skips = []
        features = padded
        for level, encode in enumerate(self.encoder):
            if level:
                features = functional.max_pool2d(features, 2)
            features = encode(features)
            skips.append(features)
        skips.pop()
        for up, decode in zip(self.up, self.decoder, strict=True):
            features = decode(up(features)) + skips.pop()
        correction = self.output(features)[..., :height, :width]
        return x + correction
