from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from fedbone.data.cache import (
    CacheRecord,
    CacheWriter,
    SiteCache,
    SourceView,
    install_cache,
)
from fedbone.data.spec import PreprocessSpec
from fedbone.errors import CacheError

SPEC = PreprocessSpec(spacing_mm=8.0, canvas_height=16, canvas_width=8)


def record(i: int, split: str, label_bm: int | None) -> CacheRecord:
    return CacheRecord(
        scan_id=f"s{i}",
        patient_id=f"P{i}",
        split=split,
        label_bm=label_bm,
        label_ca=0,
        perugini_grade=None,
        age=60.5 + i,
        sex="F",
        study_date="2021-01-02",
        tracer="DPD",
        scanner=None,
        endpoints={"death": (100.0 + i, 1), "hf": (None, None)},
        scan_file=f"/archive/s{i}.dcm",
        row_number=i + 2,
        views=(
            SourceView("anterior", 1.5e6, (2.4, 2.4), ("L", "F"), "view-code", 0.0),
        ),
    )


def images(count: int) -> np.ndarray:
    return np.random.default_rng(0).random((count, 16, 8), dtype=np.float32)


def build_cache(folder: Path, count: int = 5) -> tuple[Path, np.ndarray]:
    cache_dir = folder / "cache"
    staging = folder / ".cache.partial"
    # Capacity above the count: the file is truncated to what was written.
    writer = CacheWriter(staging, count + 3, SPEC.output_shape)
    pictures = images(count)
    splits = ["train", "train", "val", "test", "train"]
    for i in range(count):
        writer.append(pictures[i], record(i, splits[i % 5], None if i == 2 else i % 2))
    writer.finish({"spec": dataclasses.asdict(SPEC)})
    install_cache(staging, cache_dir)
    return cache_dir, pictures


def test_cache_returns_what_was_written(tmp_path: Path) -> None:
    cache_dir, pictures = build_cache(tmp_path)

    cache = SiteCache.open(cache_dir, verify=True)

    assert len(cache) == 5
    assert cache.images.dtype == np.float16
    assert cache.images.shape == (5, 16, 8)
    assert not cache.images.flags.writeable
    np.testing.assert_array_equal(cache[3], pictures[3].astype(np.float16))
    assert cache[3].dtype == np.float32
    assert cache.index[1] == record(1, "train", 1)
    assert cache.spec == SPEC
    assert (cache_dir / "images.f16").stat().st_size == 5 * 16 * 8 * 2
    assert not (tmp_path / ".cache.partial").exists()


def test_split_and_label_accessors(tmp_path: Path) -> None:
    cache = SiteCache.open(build_cache(tmp_path)[0])

    assert cache.indices("train").tolist() == [0, 1, 4]
    assert cache.indices("val").tolist() == [2]
    assert cache.labels("bm").tolist() == [0, 1, -1, 1, 0]
    assert cache.labels("ca").tolist() == [0] * 5
    with pytest.raises(ValueError, match="task"):
        cache.labels("xyz")


def test_content_hash_is_reproducible(tmp_path: Path) -> None:
    first = SiteCache.open(build_cache(tmp_path / "a")[0])
    second = SiteCache.open(build_cache(tmp_path / "b")[0])

    assert first.content_hash == second.content_hash
    assert first.compute_content_hash() == first.content_hash


def test_verify_detects_a_flipped_image_byte(tmp_path: Path) -> None:
    cache_dir, _ = build_cache(tmp_path)
    with open(cache_dir / "images.f16", "r+b") as stream:
        stream.seek(100)
        byte = stream.read(1)[0]
        stream.seek(100)
        stream.write(bytes([byte ^ 0x01]))

    SiteCache.open(cache_dir)  # opening without verify does not read the pixels
    with pytest.raises(CacheError, match="hash check"):
        SiteCache.open(cache_dir, verify=True)


def test_verify_detects_an_edited_label(tmp_path: Path) -> None:
    cache_dir, _ = build_cache(tmp_path)
    index_path = cache_dir / "index.json"
    index = json.loads(index_path.read_text())
    index[0]["label_bm"] = 1
    index_path.write_text(json.dumps(index))

    with pytest.raises(CacheError, match="hash check"):
        SiteCache.open(cache_dir, verify=True)


def test_missing_cache_says_to_run_prepare(tmp_path: Path) -> None:
    with pytest.raises(CacheError, match=r"does not exist.*fedbone prepare"):
        SiteCache.open(tmp_path / "nowhere")


def test_unfinished_cache_says_to_run_prepare(tmp_path: Path) -> None:
    staging = tmp_path / "cache"
    writer = CacheWriter(staging, 4, SPEC.output_shape)
    writer.append(images(1)[0], record(0, "train", 1))

    with pytest.raises(CacheError, match=r"incomplete.*fedbone prepare"):
        SiteCache.open(staging)


def test_truncated_images_are_detected(tmp_path: Path) -> None:
    cache_dir, _ = build_cache(tmp_path)
    with open(cache_dir / "images.f16", "r+b") as stream:
        stream.truncate(3 * 16 * 8 * 2)

    with pytest.raises(CacheError, match="incomplete"):
        SiteCache.open(cache_dir)


def test_pickled_cache_maps_the_file_instead_of_copying_it(tmp_path: Path) -> None:
    cache = SiteCache.open(build_cache(tmp_path)[0])

    payload = pickle.dumps(cache)
    restored = pickle.loads(payload)

    assert bytes(cache.images[4]) not in payload
    assert isinstance(restored.images, np.memmap)
    np.testing.assert_array_equal(restored[4], cache[4])


def test_empty_cache_opens(tmp_path: Path) -> None:
    staging = tmp_path / ".partial"
    writer = CacheWriter(staging, 3, SPEC.output_shape)
    writer.finish({"spec": dataclasses.asdict(SPEC)})
    install_cache(staging, tmp_path / "cache")

    cache = SiteCache.open(tmp_path / "cache", verify=True)

    assert len(cache) == 0
    assert cache.indices("train").tolist() == []


def test_appending_a_wrong_shape_fails(tmp_path: Path) -> None:
    writer = CacheWriter(tmp_path / "cache", 2, SPEC.output_shape)

    with pytest.raises(ValueError, match="shape"):
        writer.append(np.zeros((8, 8), np.float32), record(0, "train", 1))
    writer.abort()

    assert not (tmp_path / "cache").exists()
