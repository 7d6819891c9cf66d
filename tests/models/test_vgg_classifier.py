"""The VGG16-class two-view backbone (Ibrahim et al. 2023), written here."""

import pytest
import torch
from torch import nn

from fedbone.models import Architecture, ClassifierSpec, Norm, build_classifier

#: VGG16's 13 convolutions hold 14,710,464 weights (biases aside) for 3 input
#: channels; with one channel the first layer has 64 * 2 * 9 fewer.
VGG16_CONV_WEIGHTS_ONE_CHANNEL = 14_710_464 - 64 * 2 * 9


def _conv_weights(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d))


def test_vgg16_has_vggs_thirteen_convolutions_and_a_dense_512() -> None:
    # Execute
    model = build_classifier(ClassifierSpec(architecture=Architecture.VGG16))

    # Assert
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13
    assert _conv_weights(model) == VGG16_CONV_WEIGHTS_ONE_CHANNEL
    dense = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(d.in_features, d.out_features) for d in dense] == [(512, 512), (512, 1)]


@pytest.mark.parametrize(("channels", "width"), [(1, 64), (2, 32), (1, 128)])
def test_vgg_small_gives_one_logit_per_two_view_canvas(
    channels: int, width: int
) -> None:
    # Prepare: anterior and posterior side by side (1 channel) or stacked (2)
    model = build_classifier(
        ClassifierSpec(
            architecture=Architecture.VGG_SMALL, in_channels=channels, norm=Norm.GROUP
        )
    )
    images = torch.rand(3, channels, 256, width)

    # Execute
    logits = model(images)

    # Assert
    assert logits.shape == (3,)
    assert torch.isfinite(logits).all()
