from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedbone.models import (
    Architecture,
    ClassifierSpec,
    ModelError,
    Norm,
    build_classifier,
)

NORM_TYPES = {
    Norm.BATCH: torch.nn.BatchNorm2d,
    Norm.GROUP: torch.nn.GroupNorm,
    Norm.INSTANCE: torch.nn.InstanceNorm2d,
}


def logits(model: torch.nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(torch.rand(*shape))


def _channels(architecture: Architecture) -> int:
    """Views the architecture takes as channels (fusion networks: both)."""
    return 2 if architecture.value.startswith("fusion") else 1


@pytest.mark.parametrize("architecture", list(Architecture))
def test_every_architecture_gives_one_logit_per_cpu_canvas(
    architecture: Architecture,
) -> None:
    channels = _channels(architecture)
    model = build_classifier(
        ClassifierSpec(architecture=architecture, in_channels=channels)
    )

    out = logits(model, (2, channels, 256, 64))

    assert out.shape == (2,)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    "architecture", [Architecture.SMALL_CNN, Architecture.EFFICIENTNET_B0]
)
@pytest.mark.parametrize("shape", [(1024, 256), (1024, 512)])
def test_paper_canvas_and_two_views_side_by_side(
    architecture: Architecture, shape: tuple[int, int]
) -> None:
    model = build_classifier(ClassifierSpec(architecture=architecture))

    assert logits(model, (1, 1, *shape)).shape == (1,)


@pytest.mark.parametrize("architecture", list(Architecture))
@pytest.mark.parametrize("norm", [Norm.GROUP, Norm.INSTANCE])
def test_requested_normalisation_replaces_batch_norm_everywhere(
    architecture: Architecture, norm: Norm
) -> None:
    model = build_classifier(
        ClassifierSpec(
            architecture=architecture, norm=norm, in_channels=_channels(architecture)
        )
    )

    kinds = {
        type(m)
        for m in model.modules()
        if isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, *NORM_TYPES.values()))
    }

    assert kinds == {NORM_TYPES[norm]}


def test_unbuildable_combination_is_a_model_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Seven groups divide none of the small CNN's channel counts.
    monkeypatch.setattr("fedbone.models.classifier._GROUPS", 7)

    with pytest.raises(ModelError) as caught:
        build_classifier(
            ClassifierSpec(architecture=Architecture.SMALL_CNN, norm=Norm.GROUP)
        )

    assert caught.value.codes == ["unbuildable"]
    assert "group" in str(caught.value)


def test_small_cnn_is_small_and_takes_two_channels() -> None:
    model = build_classifier(
        ClassifierSpec(architecture=Architecture.SMALL_CNN, in_channels=2)
    )

    n_weights = sum(p.numel() for p in model.parameters())

    assert 50_000 <= n_weights <= 200_000
    assert logits(model, (3, 2, 256, 64)).shape == (3,)


def test_dropout_acts_in_training_only() -> None:
    model = build_classifier(
        ClassifierSpec(architecture=Architecture.SMALL_CNN, dropout=0.5)
    )
    images = torch.rand(4, 1, 64, 16)

    model.train()
    with torch.no_grad():
        train_outputs = model(images), model(images)
    evaluated = logits(model, (4, 1, 64, 16)).shape

    assert not torch.equal(*train_outputs)
    assert evaluated == (4,)


def test_strings_are_accepted_for_enums() -> None:
    spec = ClassifierSpec(architecture="resnet18", norm="group")  # type: ignore[arg-type]

    assert spec.architecture is Architecture.RESNET18
    assert spec.norm is Norm.GROUP


def test_spec_lists_every_bad_setting(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as caught:
        ClassifierSpec(
            architecture="vgg19",  # type: ignore[arg-type]
            norm="layer",  # type: ignore[arg-type]
            in_channels=0,
            dropout=1.0,
            pretrained_weights=tmp_path,
        )

    assert caught.value.codes == [
        "unknown-architecture",
        "unknown-norm",
        "bad-in-channels",
        "bad-dropout",
        "missing-sha256",
    ]
    assert "densenet121" in str(caught.value)
