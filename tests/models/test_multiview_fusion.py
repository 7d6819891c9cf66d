"""The multi-view fusion network: SE, spatial pyramid pooling, view attention."""

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_caches import build_toy_cache
from torch import nn

from fedbone.classifier.local import TrainSpec, predict, train_local
from fedbone.classifier.runtime import input_channels
from fedbone.models import Architecture, ClassifierSpec, Norm, build_classifier
from fedbone.models.errors import ModelError
from fedbone.models.fusion import MultiViewFusion


def _spec(architecture: Architecture, channels: int = 2) -> ClassifierSpec:
    return ClassifierSpec(
        architecture=architecture, in_channels=channels, norm=Norm.GROUP
    )


@pytest.mark.parametrize(
    "architecture", [Architecture.FUSION_SHARED, Architecture.FUSION_SEPARATE]
)
def test_two_stacked_views_give_one_logit_each(architecture: Architecture) -> None:
    model = build_classifier(_spec(architecture))

    logits = model(torch.rand(3, 2, 128, 32))

    assert logits.shape == (3,) and torch.isfinite(logits).all()


def test_separate_backbones_hold_twice_the_shared_backbones_weights() -> None:
    def backbone_weights(module: nn.Module) -> int:
        assert isinstance(module, MultiViewFusion)
        return sum(p.numel() for p in module.backbones.parameters())

    shared = build_classifier(_spec(Architecture.FUSION_SHARED)).backbone
    separate = build_classifier(_spec(Architecture.FUSION_SEPARATE)).backbone

    assert backbone_weights(separate) == 2 * backbone_weights(shared)


def test_the_view_attention_is_a_distribution_over_the_two_views() -> None:
    model = build_classifier(_spec(Architecture.FUSION_SHARED))
    fusion = model.backbone
    assert isinstance(fusion, MultiViewFusion)

    model(torch.rand(4, 2, 64, 32))

    weights = fusion.last_view_weights
    assert weights is not None and weights.shape == (4, 2)
    assert torch.allclose(weights.sum(dim=1), torch.ones(4))


def test_a_hot_spot_in_one_view_changes_that_views_features_only() -> None:
    # Prepare: the pyramid keeps a focal spot's rough position
    torch.manual_seed(0)
    fusion = MultiViewFusion(("group", {"num_groups": 8}), shared=False).eval()
    images = torch.zeros(1, 2, 64, 32)
    spotted = images.clone()
    spotted[0, 1, 40:43, 20:23] = 1.0

    # Execute
    with torch.no_grad():
        plain, hot = fusion(images), fusion(spotted)

    # Assert
    assert not torch.allclose(plain, hot)


def test_fusion_needs_two_channels() -> None:
    with pytest.raises(ModelError, match="fusion-needs-two-views"):
        build_classifier(_spec(Architecture.FUSION_SHARED, channels=1))


@pytest.mark.parametrize(
    "architecture", [Architecture.FUSION_SHARED, Architecture.FUSION_SEPARATE]
)
def test_a_side_by_side_canvas_trains_and_scores_as_two_stacked_views(
    tmp_path: Path, architecture: Architecture
) -> None:
    # Prepare: a canvas twice as wide as one view (views: both)
    cache = build_toy_cache(tmp_path, count=24, width=32)
    model = build_classifier(_spec(architecture))
    spec = TrainSpec(epochs=1, batch_size=8, device="cpu", amp=False)

    # Execute
    result = train_local(model, cache, "bm", spec)
    scores = predict(model, cache, cache.indices("test"), device="cpu")

    # Assert: the training path splits the canvas into two one-channel views
    assert input_channels(model) == 2
    assert result.n_examples > 0 and np.isfinite(scores).all()
