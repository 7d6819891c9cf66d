"""The enhancer file: round trip, checksums, refusals, and counts in, counts out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fedbone.enhance.errors import EnhanceError
from fedbone.enhance.inference import enhance, enhance_counts
from fedbone.enhance.model_file import EnhancerModel, load_enhancer, save_enhancer
from fedbone.models.enhancers import (
    DnCNN,
    EnhancerSpec,
    build_enhancer,
    generator_arrays,
    initial_arrays,
)
from fedbone.models.parameters import state_to_arrays
from fedbone.models.weights import file_sha256

DNCNN = EnhancerSpec("dncnn", width=8, blocks=3)


def make_model(spec: EnhancerSpec = DNCNN, **changes: object) -> EnhancerModel:
    fields: dict[str, object] = {
        "spec": spec,
        "arrays": generator_arrays(spec, initial_arrays(spec, seed=0)),
        "levels": ("2x", "3x"),
        "speeds": (2.0, 3.0),
        "spacing_mm": 2.4,
        "canvas": (256, 64),
        "clip_percentile": 99.5,
        "study": "toy-study",
        "description": "DnCNN trained on simulated 2x and 3x scans",
    }
    fields.update(changes)
    return EnhancerModel(**fields)  # type: ignore[arg-type]


def identity_model() -> EnhancerModel:
    """An untrained DnCNN: its noise branch starts at zero, so it returns its input."""
    network = build_enhancer(DNCNN)
    assert isinstance(network, DnCNN)
    last = network.noise[-1]
    assert isinstance(last, torch.nn.Conv2d)
    assert not last.weight.any() and last.bias is None
    return make_model(arrays=state_to_arrays(network))


def write_npz(path: Path, **entries: np.ndarray) -> Path:
    with open(path, "wb") as stream:
        np.savez(stream, **entries)  # type: ignore[arg-type]
    return path


@pytest.mark.parametrize(
    "spec",
    [DNCNN, EnhancerSpec("rrdbnet", width=8, blocks=1, growth=4)],
    ids=lambda spec: spec.method,
)
def test_saved_enhancer_loads_back_identically(
    spec: EnhancerSpec, tmp_path: Path
) -> None:
    # Prepare
    model = make_model(spec)
    images = np.random.default_rng(0).random((2, 32, 16), dtype=np.float32)

    # Execute
    digest = save_enhancer(model, tmp_path / "enhancer.npz")
    loaded = load_enhancer(tmp_path / "enhancer.npz", sha256=digest)

    # Assert
    assert digest == file_sha256(tmp_path / "enhancer.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["enhancer.npz"]
    assert loaded.spec == spec
    assert (loaded.levels, loaded.speeds) == (("2x", "3x"), (2.0, 3.0))
    assert (loaded.spacing_mm, loaded.canvas) == (2.4, (256, 64))
    assert (loaded.clip_percentile, loaded.study) == (99.5, "toy-study")
    assert loaded.description == model.description
    assert loaded.arrays.keys() == model.arrays.keys()
    assert all(
        np.array_equal(loaded.arrays[key], value)
        and loaded.arrays[key].dtype == value.dtype
        for key, value in model.arrays.items()
    )
    np.testing.assert_array_equal(
        enhance(spec, loaded.arrays, images), enhance(spec, model.arrays, images)
    )


def test_a_changed_file_fails_its_checksum(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "enhancer.npz"
    digest = save_enhancer(make_model(), path)
    path.write_bytes(path.read_bytes() + b"\0")

    # Execute
    with pytest.raises(EnhanceError) as caught:
        load_enhancer(path, sha256=digest)

    # Assert
    assert caught.value.codes == ["sha256-mismatch"]


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"not a zip file", "not-an-enhancer-file"),
        (None, "missing-file"),
    ],
    ids=["garbage", "absent"],
)
def test_unreadable_files_are_refused(
    content: bytes | None, code: str, tmp_path: Path
) -> None:
    # Prepare
    path = tmp_path / "enhancer.npz"
    if content is not None:
        path.write_bytes(content)

    # Execute
    with pytest.raises(EnhanceError) as caught:
        load_enhancer(path)

    # Assert
    assert caught.value.codes == [code]


def test_a_file_with_pickled_objects_is_never_unpickled(tmp_path: Path) -> None:
    # Prepare
    path = write_npz(
        tmp_path / "enhancer.npz",
        metadata=np.array([{"format": "fedbone-enhancer"}], dtype=object),
    )

    # Execute
    with pytest.raises(EnhanceError) as caught:
        load_enhancer(path)

    # Assert
    assert caught.value.codes == ["not-an-enhancer-file"]


def test_an_unknown_method_is_refused(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "enhancer.npz"
    save_enhancer(make_model(), path)
    with np.load(path) as data:
        entries = {name: data[name] for name in data.files}
    metadata = json.loads(str(entries["metadata"][0]))
    metadata["spec"]["method"] = "unet"
    entries["metadata"] = np.array([json.dumps(metadata)])
    write_npz(path, **entries)

    # Execute
    with pytest.raises(EnhanceError) as caught:
        load_enhancer(path)

    # Assert
    assert caught.value.codes == ["unknown-method"]


def test_arrays_that_do_not_fit_the_spec_are_not_saved(tmp_path: Path) -> None:
    # Prepare
    model = make_model(
        spec=EnhancerSpec("dncnn", width=8, blocks=5),
        arrays=initial_arrays(DNCNN, seed=0),
    )

    # Execute
    with pytest.raises(EnhanceError) as caught:
        save_enhancer(model, tmp_path / "enhancer.npz")

    # Assert
    assert "missing-key" in caught.value.codes
    assert list(tmp_path.iterdir()) == []


def test_model_fields_out_of_range_are_listed() -> None:
    # Execute
    with pytest.raises(EnhanceError) as caught:
        make_model(speeds=(), spacing_mm=0.0, canvas=(250, 64), clip_percentile=0.0)

    # Assert
    assert caught.value.codes == [
        "bad-speeds",
        "bad-spacing",
        "bad-canvas",
        "bad-percentile",
    ]


def test_an_identity_enhancer_returns_the_fast_counts_scaled_by_the_speed() -> None:
    # Prepare
    model = identity_model()
    fast = np.random.default_rng(0).poisson(20.0, (64, 32)).astype(np.float32)

    # Execute
    standard = enhance_counts(model, fast, speed=2.0)

    # Assert
    assert standard.shape == fast.shape and standard.dtype == np.float32
    np.testing.assert_allclose(standard, 2.0 * fast, rtol=1e-5)


def test_enhance_counts_refuses_a_foreign_speed_and_an_odd_size_together() -> None:
    # Prepare
    model = make_model()
    fast = np.ones((62, 32), dtype=np.float32)

    # Execute
    with pytest.raises(EnhanceError) as caught:
        enhance_counts(model, fast, speed=4.0)

    # Assert
    assert caught.value.codes == ["speed-out-of-range", "size-not-multiple-of-4"]


@pytest.mark.parametrize("speed", [1.6, 3.75])
def test_enhance_counts_serves_speeds_near_the_trained_ones(speed: float) -> None:
    # Prepare
    fast = np.ones((32, 16), dtype=np.float32)

    # Execute
    standard = enhance_counts(make_model(), fast, speed=speed)

    # Assert
    assert standard.shape == fast.shape
    assert (standard >= 0).all()
