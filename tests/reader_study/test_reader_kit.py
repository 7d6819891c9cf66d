"""The reader set: groups, blinding, determinism, short groups, from a site."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from adversary import write_site
from PIL import Image
from tiny_caches import build_labelled_cache

from fedbone.data.cache import SiteCache
from fedbone.generative.site_gan import gan_state_dir
from fedbone.reader_study.kit import (
    ReaderSet,
    ReaderStudyError,
    load_key,
    make_reader_set,
    reader_set_from_site,
)


def _images(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (count, 16, 8)).astype("f4")


def _labels(positives: int, negatives: int) -> np.ndarray:
    return np.array([1] * positives + [0] * negatives)


def test_each_group_gets_n_images_drawn_without_replacement(tmp_path: Path) -> None:
    made = make_reader_set(
        _images(9, 1),
        _labels(4, 5),
        _images(7, 2),
        _labels(3, 4),
        tmp_path / "s",
        n_per_group=3,
        seed=0,
    )

    key = load_key(made.folder)
    groups = Counter((entry["source"], entry["label"]) for entry in key.values())
    assert groups == {
        ("real", 1): 3,
        ("real", 0): 3,
        ("synthetic", 1): 3,
        ("synthetic", 0): 3,
    }
    origins = [entry["origin"] for entry in key.values()]
    assert len(set(origins)) == 12
    assert made.counts == dict.fromkeys(made.counts, 3)
    assert sorted(p.stem for p in (made.folder / "images").glob("*.png")) == sorted(
        made.item_ids
    )


def test_the_page_side_carries_no_source_and_no_label(
    tiny_set: Callable[..., ReaderSet],
) -> None:
    made = tiny_set()

    items = json.loads((made.folder / "items.json").read_text())
    key = load_key(made.folder)
    assert set(items) == {"task", "items"}
    assert items["items"] == list(made.item_ids)
    for item in made.item_ids:
        assert re.fullmatch(r"[0-9a-f]{16}", item)
        assert key[item]["origin"] not in item
    # Images were drawn group by group; the presentation order mixes them.
    sources = [key[item]["source"] for item in made.item_ids]
    assert sources != sorted(sources) and sources != sorted(sources, reverse=True)


def test_real_and_synthetic_images_are_windowed_alike(tmp_path: Path) -> None:
    real = _images(1, 3)
    # The same picture at a tenth of the counts: only brightness differs.
    synthetic = real / 10

    made = make_reader_set(
        real,
        [1],
        synthetic,
        [1],
        tmp_path / "s",
        n_per_group=1,
        seed=0,
        allow_fewer=True,
    )

    pixels = [
        np.asarray(Image.open(made.folder / "images" / f"{item}.png"))
        for item in made.item_ids
    ]
    assert pixels[0].dtype == np.uint8 and pixels[0].shape == (16, 8)
    np.testing.assert_array_equal(pixels[0], pixels[1])


def test_the_same_seed_draws_the_same_set_under_new_ids(
    tiny_set: Callable[..., ReaderSet],
) -> None:
    first, second = tiny_set(seed=5, name="a"), tiny_set(seed=5, name="b")
    other = tiny_set(seed=6, name="c")

    def shown(made: ReaderSet) -> list[tuple[str, int, str, bytes]]:
        key = load_key(made.folder)
        return [
            (
                key[item]["source"],
                key[item]["label"],
                key[item]["origin"],
                (made.folder / "images" / f"{item}.png").read_bytes(),
            )
            for item in made.item_ids
        ]

    assert shown(first) == shown(second)
    assert shown(first) != shown(other)
    assert not set(first.item_ids) & set(second.item_ids)


def test_every_short_group_is_listed_in_one_error(tmp_path: Path) -> None:
    with pytest.raises(ReaderStudyError) as caught:
        make_reader_set(
            _images(5, 1),
            _labels(1, 4),
            _images(5, 2),
            _labels(4, 1),
            tmp_path / "s",
            n_per_group=2,
            seed=0,
        )

    assert caught.value.codes == ["short-group", "short-group"]
    assert [p.where for p in caught.value.problems] == [
        "real-positive",
        "synthetic-negative",
    ]
    assert not (tmp_path / "s").exists()


def test_allow_fewer_takes_all_of_a_short_group_and_records_it(
    tmp_path: Path,
) -> None:
    made = make_reader_set(
        _images(5, 1),
        _labels(1, 4),
        _images(5, 2),
        _labels(4, 1),
        tmp_path / "s",
        n_per_group=2,
        seed=0,
        allow_fewer=True,
    )

    stored = json.loads((made.folder / "key.json").read_text())
    assert made.short_groups == {"real-positive": 1, "synthetic-negative": 1}
    assert stored["short-groups"] == made.short_groups
    assert len(made.item_ids) == 6


def test_a_set_is_never_written_over_nor_made_of_two_canvases(
    tiny_set: Callable[..., ReaderSet], tmp_path: Path
) -> None:
    made = tiny_set()

    with pytest.raises(ReaderStudyError, match="set-exists"):
        tiny_set()
    with pytest.raises(ReaderStudyError, match="shape-mismatch"):
        make_reader_set(
            _images(2, 1),
            [1, 0],
            np.zeros((2, 8, 8)),
            [1, 0],
            tmp_path / "t",
            n_per_group=1,
            seed=0,
        )
    assert len(load_key(made.folder)) == 8


def _site_with_release(
    tmp_path: Path, classes: np.ndarray | None
) -> tuple[Path, SiteCache]:
    cache = build_labelled_cache(tmp_path / "data", count=40)
    site_yaml = write_site(tmp_path / "site", cache.cache_dir)
    state = gan_state_dir(site_yaml.parent / "work", "run1")
    state.mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.save(state / "released.npy", rng.uniform(0, 1, (8, 64, 32)).astype("f2"))
    if classes is not None:
        np.save(state / "released-classes.npy", classes)
    return site_yaml, cache


def test_a_site_set_shows_each_patient_once_with_released_images(
    tmp_path: Path,
) -> None:
    classes = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    site_yaml, cache = _site_with_release(tmp_path, classes)

    made = reader_set_from_site(
        site_yaml,
        "run1",
        "bm",
        tmp_path / "set",
        split="train",
        n_per_group=3,
        seed=1,
    )

    records = {record.scan_id: record for record in cache.index}
    key = load_key(made.folder)
    real = [entry for entry in key.values() if entry["source"] == "real"]
    patients = [records[entry["origin"]].patient_id for entry in real]
    assert len(real) == 6 and len(set(patients)) == 6
    for entry in real:
        assert records[entry["origin"]].split == "train"
        assert records[entry["origin"]].label_bm == entry["label"]
    for entry in key.values():
        if entry["source"] == "synthetic":
            position = int(entry["origin"].removeprefix("synthetic[").rstrip("]"))
            assert entry["label"] == classes[position] // 2


def test_a_release_without_its_classes_is_refused(tmp_path: Path) -> None:
    site_yaml, _ = _site_with_release(tmp_path, classes=None)

    with pytest.raises(ReaderStudyError, match="no-release-classes"):
        reader_set_from_site(site_yaml, "run1", "bm", tmp_path / "set", seed=0)
