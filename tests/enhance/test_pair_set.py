"""Training pairs of a site: thinned standard scans and real fast acquisitions."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import fedbone.enhance.pairs as pairs_module
from fedbone.data.cache import SiteCache
from fedbone.data.phantom import generate_site_cohort
from fedbone.data.prepare import prepare_site_cache
from fedbone.data.spec import PreprocessSpec
from fedbone.enhance.errors import EnhanceError
from fedbone.enhance.pairs import (
    PAIR_SET_FILE,
    PairSet,
    build_pair_set,
    load_or_build_pair_set,
)
from fedbone.enhance.thinning import parse_level

SPEC = PreprocessSpec(spacing_mm=16.0, canvas_height=128, canvas_width=32)
LEVELS = (parse_level("2x"), parse_level("3x"))
SCANS = 4


def phantom_site(folder: Path) -> SiteCache:
    """A tiny site B with a 2x acquisition of every visit, prepared."""
    generate_site_cohort(
        "B", folder, scale=0.0, min_scans=SCANS, seed=3, previews=0, fast_speeds=(2,)
    )
    prepare_site_cache(folder / "manifest.csv", folder / "cache", SPEC)
    return SiteCache.open(folder / "cache")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[SiteCache, Path]:
    folder = tmp_path_factory.mktemp("site-b")
    return phantom_site(folder), folder / "fast_scans.csv"


@pytest.fixture(scope="module")
def pair_set(site: tuple[SiteCache, Path]) -> PairSet:
    cache, fast_manifest = site
    return build_pair_set(cache, LEVELS, seed=0, fast_manifest=fast_manifest)


def totals(images: np.ndarray) -> np.ndarray:
    return images.sum(axis=(1, 2), dtype=np.float64)


def test_levels_are_the_simulated_ones_then_the_real_pairs(pair_set: PairSet) -> None:
    assert pair_set.source == {"2x": "simulated", "3x": "simulated", "2x-real": "real"}
    assert pair_set.skipped == ()
    assert len(pair_set.scan_ids) == SCANS
    for level in pair_set.fast:
        np.testing.assert_array_equal(pair_set.rows[level], np.arange(SCANS))
        assert pair_set.fast[level].shape == (SCANS, *SPEC.output_shape)
        assert pair_set.fast[level].dtype == np.float32


def test_simulated_levels_keep_a_half_and_a_third_of_the_counts(
    pair_set: PairSet,
) -> None:
    standard = totals(pair_set.standard)

    half = totals(pair_set.fast["2x"]) / standard
    third = totals(pair_set.fast["3x"]) / standard

    np.testing.assert_allclose(half, 0.5, atol=0.01)
    np.testing.assert_allclose(third, 1 / 3, atol=0.01)
    np.testing.assert_array_equal(pair_set.speed["2x"], 2.0)
    np.testing.assert_allclose(pair_set.speed["3x"], 3.0, rtol=1e-6)


def test_thinned_copies_sit_exactly_where_the_standard_sits(pair_set: PairSet) -> None:
    outside = pair_set.standard == 0

    thinned = pair_set.fast["3x"]

    assert outside.any()
    assert not thinned[outside].any()


def test_standards_are_the_counts_behind_the_cached_images(
    site: tuple[SiteCache, Path], pair_set: PairSet
) -> None:
    cache, _ = site

    for i, standard in enumerate(pair_set.standard):
        cached = cache[i]
        # Below the clip level a cached pixel is its counts over one level.
        unclipped = (cached > 0.05) & (cached < 0.95)
        ratio = cached[unclipped] / standard[unclipped]
        assert unclipped.sum() > 100
        assert np.ptp(ratio) / ratio.mean() < 0.01
        assert not cached[standard == 0].any()
    assert pair_set.scan_ids == tuple(r.scan_id for r in cache.index)
    np.testing.assert_array_equal(pair_set.label_bm, cache.labels("bm"))
    assert pair_set.label_bm.dtype == np.int8


def test_real_pairs_are_registered_and_scaled_by_their_count_ratio(
    pair_set: PairSet,
) -> None:
    real = pair_set.fast["2x-real"]
    speed = pair_set.speed["2x-real"]

    scaled = real * speed[:, None, None]

    np.testing.assert_allclose(speed, 2.0, rtol=0.03)
    np.testing.assert_allclose(totals(scaled) / totals(pair_set.standard), 1, atol=0.02)
    for fast, standard in zip(scaled, pair_set.standard, strict=True):
        assert np.corrcoef(fast.ravel(), standard.ravel())[0, 1] > 0.98


def test_split_indices_select_the_pairs_of_one_split(pair_set: PairSet) -> None:
    train = pair_set.indices("2x-real", "train")

    rows = pair_set.rows["2x-real"][train]

    assert set(pair_set.splits[rows]) == {"train"}
    assert len(train) == int((pair_set.splits == "train").sum())
    with pytest.raises(EnhanceError):
        pair_set.indices("4x", "train")


def test_the_seed_decides_the_thinning_and_nothing_else(
    site: tuple[SiteCache, Path], pair_set: PairSet
) -> None:
    cache, fast_manifest = site

    again = build_pair_set(cache, LEVELS, seed=0, fast_manifest=fast_manifest)
    other = build_pair_set(cache, LEVELS[:1], seed=1, fast_manifest=None)

    np.testing.assert_array_equal(again.fast["2x"], pair_set.fast["2x"])
    np.testing.assert_array_equal(again.fast["2x-real"], pair_set.fast["2x-real"])
    assert not np.array_equal(other.fast["2x"], pair_set.fast["2x"])
    assert set(other.fast) == {"2x"}


def test_unreadable_scans_and_pairs_are_skipped_and_listed(tmp_path: Path) -> None:
    cache = phantom_site(tmp_path)
    ids = [record.scan_id for record in cache.index]
    (tmp_path / "dicom" / f"{ids[0]}.dcm").write_bytes(b"not a dicom file")
    (tmp_path / "dicom" / f"{ids[1]}_fast2x.dcm").unlink()
    fast_manifest = tmp_path / "fast_scans.csv"
    with fast_manifest.open("a", encoding="utf-8") as handle:
        handle.write("B-999999,dicom/B-999999_fast3x.dcm,3\n")

    pairs = build_pair_set(cache, LEVELS[:1], seed=0, fast_manifest=fast_manifest)

    assert pairs.scan_ids == tuple(ids[1:])
    assert [scan_id for scan_id, _ in pairs.skipped] == [ids[0], ids[1], "B-999999"]
    assert pairs.skipped[0][1].startswith("standard scan: ")
    assert pairs.skipped[1][1].startswith("2x-real: ")
    assert len(pairs.rows["2x-real"]) == SCANS - 2
    assert "3x-real" not in pairs.fast


def test_a_saved_pair_set_is_reused_until_an_input_changes(
    tmp_path: Path, site: tuple[SiteCache, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache, original_manifest = site
    fast_manifest = tmp_path / "fast.csv"
    shutil.copy(original_manifest, fast_manifest)
    shutil.copytree(original_manifest.parent / "dicom", tmp_path / "dicom")

    def load() -> PairSet:
        return load_or_build_pair_set(
            cache,
            LEVELS[:1],
            seed=0,
            fast_manifest=fast_manifest,
            folder=tmp_path / "p",
        )

    built = load()

    def refuse(*args: object, **kwargs: object) -> PairSet:
        raise AssertionError("rebuilt although nothing changed")

    with monkeypatch.context() as patch:
        patch.setattr(pairs_module, "build_pair_set", refuse)
        reused = load()
    fast_manifest.write_text(fast_manifest.read_text().splitlines()[0] + "\n")
    without_real = load()

    assert (tmp_path / "p" / PAIR_SET_FILE).is_file()
    assert reused.scan_ids == built.scan_ids
    assert reused.source == built.source
    for level in built.fast:
        np.testing.assert_array_equal(reused.fast[level], built.fast[level])
        np.testing.assert_array_equal(reused.rows[level], built.rows[level])
        np.testing.assert_array_equal(reused.speed[level], built.speed[level])
    np.testing.assert_array_equal(reused.splits, built.splits)
    assert set(without_real.fast) == {"2x"}
