"""Site-trained and TorchScript feature encoders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from fedbone.generative.fidelity.encoders import (
    EncoderSpec,
    SiteEncoder,
    TorchScriptEncoder,
    load_feature_encoder,
    train_site_encoder,
)
from fedbone.models.weights import file_sha256
from fedbone.validation.errors import EvaluationError

# The tests script a module to stand in for a TorchScript Inception file.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")

HEIGHT, WIDTH = 32, 16
SPEC = EncoderSpec(feature_dim=8, epochs=3, batch_size=16, lr=3e-3, device="cpu")


def blob_images(count: int, top: bool, seed: int) -> np.ndarray:
    """Noisy canvases with a bright blob in the top or the bottom half."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 0.2, size=(count, HEIGHT, WIDTH))
    rows = slice(4, 12) if top else slice(20, 28)
    images[:, rows, 4:12] += 0.7
    return images.clip(0.0, 1.0)


@pytest.fixture(scope="module")
def two_class_data() -> tuple[np.ndarray, np.ndarray]:
    images = np.concatenate([blob_images(12, True, 0), blob_images(12, False, 1)])
    labels = np.repeat([0, 2], 12)
    return images, labels


@pytest.fixture(scope="module")
def trained(two_class_data: tuple[np.ndarray, np.ndarray]) -> SiteEncoder:
    images, labels = two_class_data
    return train_site_encoder(images.astype(np.float16), labels, SPEC)


def test_embed_gives_unit_float64_rows_and_is_deterministic(
    trained: SiteEncoder, two_class_data: tuple[np.ndarray, np.ndarray]
) -> None:
    images, _ = two_class_data

    first = trained.embed(images)
    second = trained.embed(images)

    assert first.shape == (len(images), SPEC.feature_dim)
    assert first.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(first, second)
    assert trained.name == "site-encoder"


def test_training_separates_clearly_different_classes(
    trained: SiteEncoder,
) -> None:
    top = trained.embed(blob_images(10, True, 7))
    bottom = trained.embed(blob_images(10, False, 8))

    def mean_distance(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(a[:, None] - b[None], axis=2).mean())

    within = (mean_distance(top, top) + mean_distance(bottom, bottom)) / 2
    between = mean_distance(top, bottom)

    assert within < between


def test_training_is_reproducible_for_a_seed(
    two_class_data: tuple[np.ndarray, np.ndarray],
) -> None:
    images, labels = two_class_data
    spec = EncoderSpec(feature_dim=4, epochs=1, batch_size=8, device="cpu")

    first = train_site_encoder(images, labels, spec).embed(images[:4])
    second = train_site_encoder(images, labels, spec).embed(images[:4])

    np.testing.assert_array_equal(first, second)


def test_training_accepts_a_reader_and_a_class_with_one_scan(
    two_class_data: tuple[np.ndarray, np.ndarray],
) -> None:
    images, labels = two_class_data
    labels = labels.copy()
    labels[0] = 3
    spec = EncoderSpec(feature_dim=4, epochs=1, batch_size=8, device="cpu")

    encoder = train_site_encoder(lambda rows: images[rows], labels, spec)

    assert encoder.embed(images[:3]).shape == (3, 4)


def test_save_then_load_gives_identical_features_and_the_file_hash(
    trained: SiteEncoder,
    two_class_data: tuple[np.ndarray, np.ndarray],
    tmp_path: Path,
) -> None:
    images, _ = two_class_data
    path = tmp_path / "encoder.pt"

    digest = trained.save(path)
    loaded = SiteEncoder.load(path, sha256=digest, device="cpu")

    assert digest == file_sha256(path)
    assert loaded.sha256 == digest
    np.testing.assert_array_equal(loaded.embed(images), trained.embed(images))


def test_load_refuses_a_wrong_sha256(trained: SiteEncoder, tmp_path: Path) -> None:
    path = tmp_path / "encoder.pt"
    trained.save(path)

    with pytest.raises(EvaluationError) as caught:
        SiteEncoder.load(path, sha256="0" * 64)

    assert caught.value.codes == ["sha256-mismatch"]
    assert "0" * 64 in str(caught.value)


def test_embed_refuses_another_canvas(trained: SiteEncoder) -> None:
    with pytest.raises(EvaluationError) as caught:
        trained.embed(np.zeros((2, HEIGHT * 2, WIDTH)))

    assert caught.value.codes == ["canvas-mismatch"]


def test_training_lists_every_problem_with_the_data() -> None:
    images = np.zeros((3, 30, 16))
    labels = np.array([0, 4])

    with pytest.raises(EvaluationError) as caught:
        train_site_encoder(images, labels, SPEC)

    assert caught.value.codes == [
        "label-out-of-range",
        "canvas-size",
        "count-mismatch",
    ]


def test_spec_lists_every_invalid_setting() -> None:
    with pytest.raises(EvaluationError) as caught:
        EncoderSpec(feature_dim=1, epochs=0, batch_size=0, lr=-1.0, seed=-1)

    assert caught.value.codes == [
        "feature-dim",
        "epochs",
        "batch-size",
        "learning-rate",
        "seed",
    ]


class _Recorder(nn.Module):
    """Returns, per image, its shape, channel means and value range."""

    def forward(self, images: Tensor) -> Tensor:
        size = len(images)
        shape = torch.tensor(images.shape[1:], dtype=images.dtype).repeat(size, 1)
        channel_means = images.mean(dim=(2, 3))
        low = images.amin(dim=(1, 2, 3)).unsqueeze(1)
        high = images.amax(dim=(1, 2, 3)).unsqueeze(1)
        return torch.cat([shape, channel_means, low, high], dim=1)


@pytest.fixture
def scripted(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "recorder.pt"
    torch.jit.save(torch.jit.script(_Recorder()), str(path))
    return path, file_sha256(path)


def test_torchscript_encoder_resizes_repeats_and_scales(
    scripted: tuple[Path, str],
) -> None:
    path, digest = scripted
    images = np.zeros((5, HEIGHT, WIDTH))
    images[:, :, : WIDTH // 2] = 1.0
    encoder = TorchScriptEncoder.load(
        path, sha256=digest, input_size=(20, 10), channels=3, device="cpu"
    )

    features = encoder.embed(images)

    assert features.shape == (5, 3 + 3 + 2)
    assert features.dtype == np.float64
    np.testing.assert_array_equal(features[:, :3], [[3, 20, 10]] * 5)
    np.testing.assert_allclose(features[:, 3:6], 127.5, atol=1e-3)
    np.testing.assert_allclose(features[:, 6:], [[0.0, 255.0]] * 5)
    assert encoder.name == "torchscript:recorder.pt"
    assert encoder.sha256 == digest


def test_torchscript_encoder_refuses_without_sha256(
    scripted: tuple[Path, str],
) -> None:
    path, _ = scripted

    with pytest.raises(EvaluationError) as caught:
        TorchScriptEncoder.load(path, sha256=None)

    assert caught.value.codes == ["missing-sha256"]


def test_load_feature_encoder_loads_either_kind(
    trained: SiteEncoder, scripted: tuple[Path, str], tmp_path: Path
) -> None:
    script_path, script_digest = scripted
    site_path = tmp_path / "site.pt"
    site_digest = trained.save(site_path)

    site = load_feature_encoder("site", str(site_path), site_digest, device="cpu")
    script = load_feature_encoder(
        "torchscript", script_path, script_digest, device="cpu"
    )

    assert isinstance(site, SiteEncoder)
    assert isinstance(script, TorchScriptEncoder)


@pytest.mark.parametrize(
    ("kind", "path", "sha256", "codes"),
    [
        ("inception", "x.pt", "a" * 64, ["encoder-kind"]),
        ("site", None, None, ["missing-path"]),
        ("site", "absent.pt", None, ["missing-encoder"]),
        ("torchscript", "absent.pt", None, ["missing-sha256"]),
        ("torchscript", "absent.pt", "a" * 64, ["missing-encoder"]),
    ],
)
def test_load_feature_encoder_explains_what_is_wrong(
    kind: str, path: str | None, sha256: str | None, codes: list[str], tmp_path: Path
) -> None:
    location = None if path is None else str(tmp_path / path)

    with pytest.raises(EvaluationError) as caught:
        load_feature_encoder(kind, location, sha256)

    assert caught.value.codes == codes


def test_load_feature_encoder_refuses_a_wrong_hash(scripted: tuple[Path, str]) -> None:
    path, _ = scripted

    with pytest.raises(EvaluationError) as caught:
        load_feature_encoder("torchscript", path, "b" * 64)

    assert caught.value.codes == ["sha256-mismatch"]
