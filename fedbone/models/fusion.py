"""Multi-view fusion network (the review: Hajianfar et al.), written here.

Anterior and posterior views arrive stacked as two channels
(``model.in_channels: 2``). Each view goes through a convolutional backbone
(one shared by both views, or one per view), then

- **squeeze-and-excitation** (Hu et al. 2018): the view's channels are
  re-weighted by a small gate computed from their global averages;
- **spatial pyramid pooling** (He et al. 2015): max pooling over 1x1, 2x2
  and 4x4 grids, concatenated, so a focal hot spot keeps its rough position
  and survives pooling;
- **attention aggregation**: a learned score per view, softmax over the two
  views, and the weighted sum of their pooled features.

The classifier's head turns the fused features into one logit.
"""

from __future__ import annotations

import torch
from monai.networks.layers.utils import get_norm_layer
from torch import nn

__all__ = ["FUSION_WIDTHS", "PYRAMID_LEVELS", "MultiViewFusion"]

#: Channels of each view's conv-norm-ReLU-pool blocks.
FUSION_WIDTHS: tuple[int, ...] = (16, 32, 64, 128)
#: Grid sizes of the spatial pyramid.
PYRAMID_LEVELS: tuple[int, ...] = (1, 2, 4)
_SE_REDUCTION = 8


def _backbone(
    widths: tuple[int, ...], norm: str | tuple[str, dict[str, object]]
) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 1
    for index, width in enumerate(widths):
        layers += [
            nn.Conv2d(channels, width, kernel_size=3, padding=1, bias=False),
            get_norm_layer(name=norm, spatial_dims=2, channels=width),
            nn.ReLU(inplace=True),
        ]
        if index < len(widths) - 1:
            layers.append(nn.MaxPool2d(2))
        channels = width
    return nn.Sequential(*layers)


class _SqueezeExcitation(nn.Module):
    """Channel gate from global averages (one view's feature maps)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(1, channels // _SE_REDUCTION)
        self.gate = nn.Sequential(
            nn.Linear(channels, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels),
            nn.Sigmoid(),
        )

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        weights = self.gate(maps.mean(dim=(2, 3)))
        return maps * weights[:, :, None, None]


def _pyramid(maps: torch.Tensor) -> torch.Tensor:
    """Max-pool over each grid of :data:`PYRAMID_LEVELS`; concatenate."""
    pooled = [
        nn.functional.adaptive_max_pool2d(maps, level).flatten(1)
        for level in PYRAMID_LEVELS
    ]
    return torch.cat(pooled, dim=1)


class MultiViewFusion(nn.Module):
    """Two views in, fused features out: ``(B, 2, H, W) -> (B, n_features)``.

    Parameters
    ----------
    norm
        Normalisation of the backbones (MONAI's ``get_norm_layer`` argument).
    shared
        One backbone for both views (fewer weights) or one per view.
    widths
        Channels of the backbone's blocks.
    """

    #: The views arrive stacked as channels; each backbone takes one.
    input_channels = 2

    def __init__(
        self,
        norm: str | tuple[str, dict[str, object]],
        *,
        shared: bool = True,
        widths: tuple[int, ...] = FUSION_WIDTHS,
    ) -> None:
        super().__init__()
        first = _backbone(widths, norm)
        self.backbones = nn.ModuleList(
            [first] if shared else [first, _backbone(widths, norm)]
        )
        self.excitation = _SqueezeExcitation(widths[-1])
        self.n_features = widths[-1] * sum(level * level for level in PYRAMID_LEVELS)
        self.attention = nn.Linear(self.n_features, 1)
        self.last_view_weights: torch.Tensor | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Return the attention-weighted sum of the two views' pooled features."""
        per_view = []
        for view in range(2):
            backbone = self.backbones[min(view, len(self.backbones) - 1)]
            maps = self.excitation(backbone(images[:, view : view + 1]))
            per_view.append(_pyramid(maps))
        stacked = torch.stack(per_view, dim=1)  # (B, 2, features)
        weights = torch.softmax(self.attention(stacked).squeeze(-1), dim=1)
        self.last_view_weights = weights.detach()
        return (weights[:, :, None] * stacked).sum(dim=1)
