"""RRDBNet generator of Qi et al. (2024), written from the published ideas.

The generator follows the paper's Fig. 1 and ESRGAN (Wang et al. 2018):

* a 3x3 convolution to ``width`` feature maps;
* a trunk of **residual-in-residual dense blocks** (RRDB): each holds three
  dense blocks of five 3x3 convolutions, where every convolution sees the
  block input and all earlier outputs (``growth`` new maps each); a dense
  block adds ``0.2`` times its output to its input and the RRDB adds ``0.2``
  times the result of its three dense blocks to its own input (residual
  scaling keeps a deep trunk stable); a convolution after the trunk and a
  long skip around it;
* **ESPCN sub-pixel upsampling** (a convolution to ``4 * width`` maps, then
  :class:`torch.nn.PixelShuffle` to twice the size) followed by a
  **stride-2 convolution** back to the input size: the scan is refined on a
  finer grid but the output keeps the input's pixel spacing, so counts stay
  comparable pixel by pixel;
* two output convolutions, and a **global residual**: the network predicts the
  correction to its input; the last convolution starts at zero, so the
  untrained network returns its input.

No normalisation layer: batch statistics would differ between hospitals and
FedAvg of their running means is meaningless; ESRGAN dropped batch norm for
the same artefact-free reason. Dense-block convolutions are initialised with
Kaiming weights scaled by ``0.1`` (ESRGAN's smaller initialisation), so the
untrained trunk is a small perturbation.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

__all__ = ["RRDBNet", "ResidualDenseBlock", "ResidualInResidualDenseBlock"]

_LEAK = 0.2
_RESIDUAL_SCALE = 0.2
_INIT_SCALE = 0.1
_DENSE_CONVS = 5
_DENSE_BLOCKS = 3


def _act(x: torch.Tensor) -> torch.Tensor:
    return functional.leaky_relu(x, _LEAK)


def _conv(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convolutions with a scaled residual.

    Parameters
    ----------
    width
        Channels in and out.
    growth
        Channels each inner convolution adds to the running concatenation.
    """

    def __init__(self, width: int, growth: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            _conv(width + index * growth, growth) for index in range(_DENSE_CONVS - 1)
        )
        self.fuse = _conv(width + (_DENSE_CONVS - 1) * growth, width)
        for conv in [*self.convs, self.fuse]:
            nn.init.kaiming_normal_(conv.weight, a=_LEAK)
            with torch.no_grad():
                conv.weight.mul_(_INIT_SCALE)
                conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x + 0.2 * fuse([x, y1, ..., y4])``."""
        features = [x]
        for conv in self.convs:
            features.append(_act(conv(torch.cat(features, dim=1))))
        return x + _RESIDUAL_SCALE * self.fuse(torch.cat(features, dim=1))


class ResidualInResidualDenseBlock(nn.Module):
    """Three dense blocks in sequence, with a scaled residual around them.

    Parameters
    ----------
    width
        Channels in and out.
    growth
        Growth of each dense block.
    """

    def __init__(self, width: int, growth: int) -> None:
        super().__init__()
        self.dense = nn.Sequential(
            *(ResidualDenseBlock(width, growth) for _ in range(_DENSE_BLOCKS))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x + 0.2 * dense(x)``."""
        return x + _RESIDUAL_SCALE * self.dense(x)


class RRDBNet(nn.Module):
    """``(B, 1, H, W) -> (B, 1, H, W)``: a fast scan to a standard-like scan.

    Parameters
    ----------
    width
        Feature maps of the trunk.
    blocks
        Residual-in-residual dense blocks in the trunk (the paper: 9).
    growth
        Growth channels of every dense block.
    """

    def __init__(self, width: int = 32, blocks: int = 3, growth: int = 16) -> None:
        super().__init__()
        self.head = _conv(1, width)
        self.trunk = nn.Sequential(
            *(ResidualInResidualDenseBlock(width, growth) for _ in range(blocks))
        )
        self.trunk_conv = _conv(width, width)
        self.upsample = _conv(width, 4 * width)
        self.shuffle = nn.PixelShuffle(2)
        self.downsample = _conv(width, width, stride=2)
        self.refine = _conv(width, width)
        self.tail = _conv(width, 1)
        # A zero last layer makes the untrained network the identity (the
        # scaled fast scan), the natural start of a residual enhancer.
        for parameter in self.tail.parameters():
            nn.init.zeros_(parameter)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the enhanced scan, the input plus a learned correction.

        Parameters
        ----------
        x
            ``(B, 1, H, W)`` network input (fast counts scaled to the standard
            acquisition and divided by the intensity level).
        """
        features = self.head(x)
        features = features + self.trunk_conv(self.trunk(features))
        fine = _act(self.shuffle(self.upsample(features)))
        features = _act(self.downsample(fine))
        return x + self.tail(_act(self.refine(features)))
