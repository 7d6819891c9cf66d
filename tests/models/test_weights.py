from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from fedbone.models import (
    Architecture,
    ClassifierSpec,
    ModelError,
    build_classifier,
    load_pretrained,
)


def backbone(seed: int, in_channels: int = 1) -> torch.nn.Module:
    torch.manual_seed(seed)
    spec = ClassifierSpec(architecture=Architecture.SMALL_CNN, in_channels=in_channels)
    return build_classifier(spec).backbone


def save(state: dict[str, torch.Tensor], path: Path) -> str:
    torch.save(state, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_weights_with_the_right_checksum_load(tmp_path: Path) -> None:
    source, target = backbone(0), backbone(1)
    path = tmp_path / "w.pt"
    digest = save(source.state_dict(), path)

    report = load_pretrained(target, path, digest.upper())

    assert set(report.loaded) == set(source.state_dict())
    assert not (report.missing or report.unexpected or report.mismatched)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value)


def test_wrong_checksum_is_refused_before_the_file_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "w.pt"
    digest = save(backbone(0).state_dict(), path)

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.load must not run on an unverified file")

    monkeypatch.setattr(torch, "load", never)
    with pytest.raises(ModelError) as caught:
        load_pretrained(backbone(1), path, "0" * 64)

    assert caught.value.codes == ["sha256-mismatch"]
    assert digest in str(caught.value) and "0" * 64 in str(caught.value)


def test_rgb_first_convolution_is_summed_for_grey_scans(tmp_path: Path) -> None:
    rgb = backbone(0, in_channels=3)
    path = tmp_path / "rgb.pt"
    digest = save({"checkpoint": 1, "state_dict": rgb.state_dict()}, path)  # type: ignore[dict-item]
    grey = backbone(1)

    report = load_pretrained(grey, path, digest)

    key = "features.0.weight"
    assert report.adapted == (key,)
    expected = rgb.state_dict()[key].sum(dim=1, keepdim=True)
    assert torch.equal(grey.state_dict()[key], expected)


def test_partial_files_report_missing_unexpected_and_mismatched(tmp_path: Path) -> None:
    state = dict(backbone(0).state_dict())
    state["features.1.weight"] = torch.ones(99)
    del state["features.4.weight"]
    state["classifier.fc.weight"] = torch.ones(3)
    path = tmp_path / "partial.pt"
    digest = save(state, path)

    report = load_pretrained(backbone(1), path, digest)

    assert report.mismatched == ("features.1.weight",)
    assert report.unexpected == ("classifier.fc.weight",)
    assert set(report.missing) == {"features.1.weight", "features.4.weight"}


def test_a_file_that_matches_nothing_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    digest = save({"encoder.weight": torch.ones(2)}, path)

    with pytest.raises(ModelError) as caught:
        load_pretrained(backbone(0), path, digest)

    assert caught.value.codes == ["no-matching-weights"]


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as caught:
        load_pretrained(backbone(0), tmp_path / "absent.pt", "0" * 64)

    assert caught.value.codes == ["missing-weights"]


def test_factory_loads_pretrained_backbone(tmp_path: Path) -> None:
    source = backbone(0)
    path = tmp_path / "w.pt"
    digest = save(source.state_dict(), path)

    model = build_classifier(
        ClassifierSpec(
            architecture=Architecture.SMALL_CNN,
            pretrained_weights=path,
            pretrained_sha256=digest,
        )
    )

    for key, value in source.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value)
