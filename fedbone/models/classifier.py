"""Classifier factory: MONAI networks or a small CPU network, one logit per image.

Every classifier is a :class:`SingleLogitClassifier`: a ``backbone`` that maps a
``(B, C, H, W)`` batch to pooled features ``(B, F)``, optional dropout, and a
linear ``head`` to one logit per image, so ``(B, C, H, W) -> (B,)``. Keeping the
head outside the backbone gives every architecture the same dropout and the
same key layout (``backbone.*``, ``head.*``), and lets ImageNet-style weights
load into the backbone without their 1000-class layer.

Inputs may be any size the network's downsampling allows: the CPU canvas
256 x 64, the paper canvas 1024 x 256, and two views side by side (1024 x 512,
one channel).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import torch
from monai.networks.layers.utils import get_norm_layer
from monai.networks.nets import DenseNet121, EfficientNetBN, resnet18, resnet50
from torch import nn

from fedbone.errors import Problem
from fedbone.models.errors import ModelError
from fedbone.models.fusion import MultiViewFusion
from fedbone.models.weights import load_pretrained

__all__ = [
    "SMALL_CNN_NARROW_WIDTHS",
    "SMALL_CNN_WIDTHS",
    "VGG16_BLOCKS",
    "VGG_SMALL_BLOCKS",
    "Architecture",
    "ClassifierSpec",
    "Norm",
    "SingleLogitClassifier",
    "build_classifier",
]

logger = logging.getLogger(__name__)

#: Channels of the small CNN's conv-norm-ReLU-pool blocks (about 100k weights).
SMALL_CNN_WIDTHS: tuple[int, ...] = (16, 32, 64, 128)
#: Half those widths (about 25k weights): DP-SGD's noise per step is the same
#: whatever the model, so fewer weights keep more signal per weight.
SMALL_CNN_NARROW_WIDTHS: tuple[int, ...] = (8, 16, 32, 64)
# Eight groups divide every channel count of the supported networks (DenseNet
# grows by 32, ResNets use multiples of 64, EfficientNet-B0 multiples of 8).
_GROUPS = 8
_NORM_TYPES: dict[str, tuple[type[nn.Module], ...]] = {
    "batch": (nn.modules.batchnorm._BatchNorm,),
    "group": (nn.GroupNorm,),
    "instance": (nn.modules.instancenorm._InstanceNorm,),
}


class Architecture(StrEnum):
    """Classifier backbones fedbone can build."""

    DENSENET121 = "densenet121"
    RESNET18 = "resnet18"
    RESNET50 = "resnet50"
    EFFICIENTNET_B0 = "efficientnet-b0"
    SMALL_CNN = "small-cnn"
    SMALL_CNN_NARROW = "small-cnn-narrow"
    VGG16 = "vgg16"
    VGG_SMALL = "vgg-small"
    FUSION_SHARED = "fusion-shared"
    FUSION_SEPARATE = "fusion-separate"


class Norm(StrEnum):
    """Normalisation layers; ``group``/``instance`` suit FedBN and DP-SGD."""

    BATCH = "batch"
    GROUP = "group"
    INSTANCE = "instance"


@dataclass(frozen=True)
class ClassifierSpec:
    """What classifier to build.

    Parameters
    ----------
    architecture
        Backbone; strings are accepted and converted.
    in_channels
        Image channels: 1 for a canvas (one view, or two views side by side),
        2 for anterior and posterior stacked as channels.
    norm
        Normalisation layers used throughout the backbone.
    pretrained_weights
        Optional local file of backbone weights (never downloaded).
    pretrained_sha256
        Expected sha256 of ``pretrained_weights``; required with it.
    dropout
        Dropout probability before the final linear layer, in ``[0, 1)``.

    Raises
    ------
    ModelError
        Listing every invalid setting.
    """

    architecture: Architecture = Architecture.DENSENET121
    in_channels: int = 1
    norm: Norm = Norm.BATCH
    pretrained_weights: Path | None = None
    pretrained_sha256: str | None = None
    dropout: float = 0.0

    def __post_init__(self) -> None:
        problems: list[Problem] = []
        for name, enum in (("architecture", Architecture), ("norm", Norm)):
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, enum(value))
            except ValueError:
                choices = ", ".join(member.value for member in enum)
                problems.append(
                    Problem(
                        f"unknown-{name}",
                        f"{value!r} is not supported; choose one of: {choices}",
                        name,
                    )
                )
        if not isinstance(self.in_channels, int) or self.in_channels < 1:
            problems.append(
                Problem(
                    "bad-in-channels",
                    f"got {self.in_channels!r}; expected a positive integer "
                    "(1 for a canvas, 2 for views as channels)",
                    "in_channels",
                )
            )
        if not 0.0 <= self.dropout < 1.0:
            problems.append(
                Problem(
                    "bad-dropout",
                    f"got {self.dropout!r}; expected a probability in [0, 1)",
                    "dropout",
                )
            )
        if self.pretrained_weights is not None and not self.pretrained_sha256:
            problems.append(
                Problem(
                    "missing-sha256",
                    "pretrained weights need their sha256 so a wrong or damaged "
                    "file is never loaded; add pretrained_sha256 (`sha256sum FILE`)",
                    "pretrained_sha256",
                )
            )
        ModelError.raise_if_any("classifier spec", problems)


class SingleLogitClassifier(nn.Module):
    """Backbone features, dropout, and a linear layer to one logit per image.

    Parameters
    ----------
    backbone
        Maps ``(B, C, H, W)`` to pooled features ``(B, n_features)``.
    n_features
        Width of the backbone's output.
    dropout
        Dropout probability before the linear layer.
    """

    def __init__(self, backbone: nn.Module, n_features: int, dropout: float) -> None:
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(n_features, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Return one logit per image, shape ``(B,)``."""
        features = self.backbone(images)
        return self.head(self.dropout(features.flatten(1))).reshape(-1)


class _SmallCnn(nn.Module):
    """A few conv-norm-ReLU-pool blocks with average and max global pooling.

    A metastasis is a focal hot spot that may cover a few pixels of a CPU
    canvas; global average pooling alone dilutes a single lesion across the
    whole body, so the max-pooled features are concatenated to it.
    """

    def __init__(
        self,
        in_channels: int,
        norm: str | tuple[str, dict[str, object]],
        widths: tuple[int, ...] | None = None,
    ):
        super().__init__()
        widths = widths or SMALL_CNN_WIDTHS
        layers: list[nn.Module] = []
        channels = in_channels
        for index, width in enumerate(widths):
            layers += [
                nn.Conv2d(channels, width, kernel_size=3, padding=1, bias=False),
                get_norm_layer(name=norm, spatial_dims=2, channels=width),
                nn.ReLU(inplace=True),
            ]
            if index < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            channels = width
        self.features = nn.Sequential(*layers)
        self.n_features = 2 * channels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Return ``(B, 2 * last width)`` pooled features."""
        maps = self.features(images)
        return torch.cat([maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3))], dim=1)


#: VGG16's convolutions per block and widths (Simonyan & Zisserman, config D).
VGG16_BLOCKS: tuple[tuple[int, int], ...] = (
    (2, 64),
    (2, 128),
    (3, 256),
    (3, 512),
    (3, 512),
)
#: The same layout at a quarter of the widths, for CPU profiles.
VGG_SMALL_BLOCKS: tuple[tuple[int, int], ...] = tuple(
    (convs, width // 4) for convs, width in VGG16_BLOCKS
)
_VGG_DENSE = 512


class _Vgg(nn.Module):
    """VGG16-class features (Ibrahim et al. 2023), written here.

    Five blocks of 3x3 conv-norm-ReLU (2, 2, 3, 3, 3 convolutions) with 2x2
    max pooling after each, global average pooling, and a dense layer of 512
    with ReLU, as Ibrahim et al.'s two-view network; the classifier's head
    then gives the logit (the two-way softmax of the paper in one logit).
    With ``views: both`` the anterior and the mirrored posterior view sit side
    by side, so the augmentation's left-right flip also swaps the views, as
    theirs did. Weights only from a local file with its sha256.
    """

    def __init__(
        self,
        in_channels: int,
        norm: str | tuple[str, dict[str, object]],
        blocks: tuple[tuple[int, int], ...],
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for convs, width in blocks:
            for _ in range(convs):
                layers += [
                    nn.Conv2d(channels, width, kernel_size=3, padding=1, bias=False),
                    get_norm_layer(name=norm, spatial_dims=2, channels=width),
                    nn.ReLU(inplace=True),
                ]
                channels = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.dense = nn.Sequential(
            nn.Linear(channels, _VGG_DENSE), nn.ReLU(inplace=True)
        )
        self.n_features = _VGG_DENSE

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Return ``(B, 512)`` features of the dense layer."""
        return self.dense(self.features(images).mean(dim=(2, 3)))


def _vgg(
    blocks: tuple[tuple[int, int], ...],
) -> Callable[[ClassifierSpec], tuple[nn.Module, int]]:
    def build(spec: ClassifierSpec) -> tuple[nn.Module, int]:
        net = _Vgg(spec.in_channels, _norm_argument(spec.norm), blocks)
        return net, net.n_features

    return build


def _fusion(shared: bool) -> Callable[[ClassifierSpec], tuple[nn.Module, int]]:
    def build(spec: ClassifierSpec) -> tuple[nn.Module, int]:
        if spec.in_channels != 2:
            raise ModelError(
                "classifier spec",
                [
                    Problem(
                        "fusion-needs-two-views",
                        "a multi-view fusion network takes anterior and posterior "
                        "stacked as channels: set model.in_channels: 2 (and the "
                        "sites' preprocessing views: both)",
                        "in_channels",
                    )
                ],
            )
        net = MultiViewFusion(_norm_argument(spec.norm), shared=shared)
        return net, net.n_features

    return build


def _norm_argument(norm: Norm) -> str | tuple[str, dict[str, object]]:
    if norm is Norm.GROUP:
        return ("group", {"num_groups": _GROUPS})
    if norm is Norm.INSTANCE:
        # Affine so the layer has weights to train (and for FedBN to keep local).
        return ("instance", {"affine": True})
    return "batch"


def _strip_linear(module: nn.Module, attribute: str) -> int:
    """Replace ``module.<attribute>`` (a Linear) by Identity; return its inputs."""
    linear = getattr(module, attribute)
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"{attribute} is {type(linear).__name__}, not Linear")
    setattr(module, attribute, nn.Identity())
    return linear.in_features


def _densenet121(spec: ClassifierSpec) -> tuple[nn.Module, int]:
    net = DenseNet121(
        spatial_dims=2,
        in_channels=spec.in_channels,
        out_channels=1,
        norm=_norm_argument(spec.norm),
    )
    return net, _strip_linear(net.class_layers, "out")


def _replace_batch_norm(
    module: nn.Module, norm: str | tuple[str, dict[str, object]]
) -> None:
    """Swap every BatchNorm2d below ``module`` for ``norm`` of the same width."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            width = child.num_features
            setattr(
                module, name, get_norm_layer(name=norm, spatial_dims=2, channels=width)
            )
        else:
            _replace_batch_norm(child, norm)


def _resnet(
    factory: Callable[..., nn.Module],
) -> Callable[[ClassifierSpec], tuple[nn.Module, int]]:
    def build(spec: ClassifierSpec) -> tuple[nn.Module, int]:
        norm = _norm_argument(spec.norm)
        net = factory(
            spatial_dims=2, n_input_channels=spec.in_channels, num_classes=1, norm=norm
        )
        if spec.norm is not Norm.BATCH:
            # MONAI's ResNet (1.6) applies `norm` to its stem only; its residual
            # blocks are always built with batch norm, so swap those afterwards.
            _replace_batch_norm(net, norm)
        return net, _strip_linear(net, "fc")

    return build


def _efficientnet_b0(spec: ClassifierSpec) -> tuple[nn.Module, int]:
    norm = _norm_argument(spec.norm)
    if spec.norm is Norm.BATCH:
        # EfficientNet's own batch-norm settings (TensorFlow's eps/momentum).
        norm = ("batch", {"eps": 1e-3, "momentum": 0.01})
    net = EfficientNetBN(
        "efficientnet-b0",
        pretrained=False,
        spatial_dims=2,
        in_channels=spec.in_channels,
        num_classes=1,
        norm=norm,
    )
    # The classifier applies its own dropout (spec.dropout) before the head.
    net._dropout.p = 0.0
    return net, _strip_linear(net, "_fc")


def _small_cnn(spec: ClassifierSpec) -> tuple[nn.Module, int]:
    net = _SmallCnn(spec.in_channels, _norm_argument(spec.norm))
    return net, net.n_features


def _small_cnn_narrow(spec: ClassifierSpec) -> tuple[nn.Module, int]:
    net = _SmallCnn(
        spec.in_channels, _norm_argument(spec.norm), SMALL_CNN_NARROW_WIDTHS
    )
    return net, net.n_features


_BUILDERS: dict[Architecture, Callable[[ClassifierSpec], tuple[nn.Module, int]]] = {
    Architecture.DENSENET121: _densenet121,
    Architecture.RESNET18: _resnet(resnet18),
    Architecture.RESNET50: _resnet(resnet50),
    Architecture.EFFICIENTNET_B0: _efficientnet_b0,
    Architecture.SMALL_CNN: _small_cnn,
    Architecture.SMALL_CNN_NARROW: _small_cnn_narrow,
    Architecture.VGG16: _vgg(VGG16_BLOCKS),
    Architecture.VGG_SMALL: _vgg(VGG_SMALL_BLOCKS),
    Architecture.FUSION_SHARED: _fusion(shared=True),
    Architecture.FUSION_SEPARATE: _fusion(shared=False),
}


def _check_norm_applied(backbone: nn.Module, spec: ClassifierSpec) -> None:
    """Raise unless every normalisation layer is of the requested kind."""
    wanted = _NORM_TYPES[spec.norm.value]
    every_norm = tuple(t for types in _NORM_TYPES.values() for t in types)
    wrong = sorted(
        {
            type(module).__name__
            for module in backbone.modules()
            if isinstance(module, every_norm) and not isinstance(module, wanted)
        }
    )
    if wrong:
        raise ModelError(
            spec.architecture.value,
            [
                Problem(
                    "norm-not-applied",
                    f"asked for {spec.norm.value} normalisation but the network "
                    f"still has {', '.join(wrong)} layers; use norm: batch for "
                    "this architecture or choose another one",
                    "norm",
                )
            ],
        )


def build_classifier(spec: ClassifierSpec) -> SingleLogitClassifier:
    """Build a one-logit classifier, loading local pretrained weights if given.

    Parameters
    ----------
    spec
        Architecture, channels, normalisation, dropout and optional weights.

    Returns
    -------
    SingleLogitClassifier
        Maps ``(B, in_channels, H, W)`` to ``(B,)`` logits.

    Raises
    ------
    ModelError
        When the architecture cannot be built with this normalisation, or the
        pretrained file is missing, has another sha256 or matches no weights.
    """
    try:
        backbone, n_features = _BUILDERS[spec.architecture](spec)
    except (ValueError, TypeError, RuntimeError) as error:
        raise ModelError(
            spec.architecture.value,
            [
                Problem(
                    "unbuildable",
                    f"cannot build with norm={spec.norm.value}, "
                    f"in_channels={spec.in_channels} ({error}); choose another "
                    "normalisation or architecture",
                )
            ],
        ) from error
    _check_norm_applied(backbone, spec)
    if spec.pretrained_weights is not None and spec.pretrained_sha256 is not None:
        load_pretrained(backbone, spec.pretrained_weights, spec.pretrained_sha256)
    model = SingleLogitClassifier(backbone, n_features, spec.dropout)
    n_weights = sum(p.numel() for p in model.parameters())
    logger.debug(
        "built %s (%s norm): %d weights", spec.architecture, spec.norm, n_weights
    )
    return model
