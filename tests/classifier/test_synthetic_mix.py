from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_caches import build_toy_cache

from fedbone.classifier.augment import AugmentSpec
from fedbone.classifier.errors import TrainingError
from fedbone.classifier.local import (
    TrainSpec,
    evaluate_split,
    labelled_rows,
    predict,
    read_batch,
    train_local,
)
from fedbone.classifier.synthetic_mix import (
    MixChoice,
    MixedCache,
    MixSpec,
    SyntheticSet,
    choose_synthetic,
    mixed_training_cache,
)
from fedbone.data.cache import SiteCache
from fedbone.models import Architecture, ClassifierSpec, build_classifier

SHAPE = (32, 16)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> SiteCache:
    return build_toy_cache(tmp_path_factory.mktemp("toy"))


def make_pool(class_ids: list[int], dtype: type = np.float32) -> SyntheticSet:
    """Image k is filled with a value unique to k, so rows can be told apart."""
    count = len(class_ids)
    values = (np.arange(count, dtype=np.float64) + 1) / (count + 1)
    images = np.broadcast_to(values[:, None, None], (count, *SHAPE)).astype(dtype)
    source = np.array([f"A/round-1/{k:08x}" for k in range(count)])
    return SyntheticSet(images, np.array(class_ids, dtype=np.int64), source)


def binary(positives: int, negatives: int) -> np.ndarray:
    return np.array([1] * positives + [0] * negatives, dtype=np.int64)


@pytest.mark.parametrize("ratio", [1, 5, 50])
def test_ratio_sets_size_and_keeps_prevalence(ratio: int) -> None:
    real = binary(7, 23)
    pool = binary(600, 1500)

    choice = choose_synthetic(real, pool, MixSpec(ratio=ratio, seed=1))

    expected = ratio * 30
    assert choice.n_real == 30 and choice.n_synthetic == expected
    assert len(choice.indices) == expected
    assert int(pool[choice.indices].sum()) == choice.n_synthetic_pos
    assert choice.n_synthetic_pos == int(np.floor(expected * 7 / 30 + 0.5))
    assert abs(choice.n_synthetic_pos / expected - 7 / 30) <= 0.5 / expected
    assert not choice.with_replacement
    assert len(np.unique(choice.indices)) == expected
    assert choice.target_prevalence == pytest.approx(7 / 30)


def test_same_seed_same_draw_and_other_seed_differs() -> None:
    real, pool = binary(5, 15), binary(100, 300)

    first = choose_synthetic(real, pool, MixSpec(ratio=2, seed=4))
    again = choose_synthetic(real, pool, MixSpec(ratio=2, seed=4))
    other = choose_synthetic(real, pool, MixSpec(ratio=2, seed=5))

    np.testing.assert_array_equal(first.indices, again.indices)
    assert not np.array_equal(np.sort(first.indices), np.sort(other.indices))


def test_synthetic_only_matches_real_size_and_prevalence() -> None:
    real, pool = binary(4, 16), binary(50, 50)

    choice = choose_synthetic(real, pool, MixSpec(synthetic_only=True))

    assert choice.n_synthetic == 20 and choice.n_synthetic_pos == 4
    assert int(pool[choice.indices].sum()) == 4


@pytest.mark.parametrize("ratio", [None, 0])
def test_no_ratio_adds_nothing(ratio: float | None) -> None:
    choice = choose_synthetic(binary(2, 8), binary(5, 5), MixSpec(ratio=ratio))

    assert choice.n_synthetic == 0 and len(choice.indices) == 0
    assert choice.n_real == 10


def test_short_pool_draws_with_replacement_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    real, pool = binary(5, 5), binary(3, 100)

    with caplog.at_level(logging.WARNING, "fedbone.classifier.synthetic_mix"):
        choice = choose_synthetic(real, pool, MixSpec(ratio=2))

    chosen_positives = choice.indices[pool[choice.indices] == 1]
    assert choice.with_replacement
    assert len(chosen_positives) == 10
    assert set(chosen_positives.tolist()) == {0, 1, 2}  # every one used
    assert "with replacement" in caplog.text


def test_pool_without_a_needed_class_is_an_error() -> None:
    with pytest.raises(TrainingError) as raised:
        choose_synthetic(binary(3, 7), binary(0, 50), MixSpec(ratio=1))

    assert raised.value.codes == ["class-missing-from-pool"]
    assert "positive" in str(raised.value)


def test_a_missing_class_is_named_with_where_to_read_its_shortfall(
    cache: SiteCache,
) -> None:
    # Prepare: a pool of bm-negative classes only (0 and 1)
    pool = make_pool([0, 1] * 10)

    # Execute
    with pytest.raises(TrainingError) as raised:
        mixed_training_cache(cache, "bm", pool, MixSpec(ratio=1))

    # Assert
    message = str(raised.value)
    assert raised.value.codes == ["class-missing-from-pool"]
    assert "positive (bm = 1, conditioning classes 2 and 3)" in message
    assert "n-shortfall-class-2 / n-shortfall-class-3" in message


def test_a_pool_with_a_single_image_of_a_class_still_mixes() -> None:
    # Prepare: the generator made only one positive image
    real, pool = binary(5, 5), binary(1, 40)

    # Execute
    choice = choose_synthetic(real, pool, MixSpec(ratio=2), task="bm")

    # Assert
    assert choice.n_synthetic_pos == 10
    assert (pool[choice.indices] == 1).sum() == 10


def test_labels_that_are_not_binary_are_rejected() -> None:
    with pytest.raises(TrainingError) as raised:
        choose_synthetic(np.array([1, -1, 0]), np.array([2, 0]), MixSpec(ratio=1))

    assert raised.value.codes == ["not-binary", "not-binary"]


def test_mix_spec_lists_every_problem() -> None:
    with pytest.raises(TrainingError) as raised:
        MixSpec(ratio=-1, synthetic_only=True)

    assert raised.value.codes == ["bad-ratio", "ratio-with-synthetic-only"]


def test_synthetic_set_labels_follow_class_ids() -> None:
    pool = make_pool([0, 1, 2, 3])

    assert pool.labels("bm").tolist() == [0, 0, 1, 1]
    assert pool.labels("ca").tolist() == [0, 1, 0, 1]
    with pytest.raises(TrainingError, match="unknown-task"):
        pool.labels("lung")


def test_synthetic_set_lists_every_problem() -> None:
    images = np.full((3, *SHAPE), 1.5, dtype=np.float32)

    with pytest.raises(TrainingError) as raised:
        SyntheticSet(images, np.array([0, 4, 1]), np.array(["a", "b"]))

    assert raised.value.codes == ["out-of-range", "unknown-class", "length-mismatch"]


def test_synthetic_set_rejects_integer_images() -> None:
    with pytest.raises(TrainingError, match="wrong-dtype"):
        SyntheticSet(np.zeros((1, 2, 2), np.uint8), np.array([0]), np.array(["a"]))


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    pool = make_pool([3, 0, 2, 1, 1])

    pool.save(tmp_path / "pool")
    loaded = SyntheticSet.load(tmp_path / "pool")

    assert loaded.images.dtype == np.float16
    np.testing.assert_array_equal(loaded.images, pool.images.astype(np.float16))
    np.testing.assert_array_equal(loaded.class_ids, pool.class_ids)
    np.testing.assert_array_equal(loaded.source, pool.source)


def test_loading_a_missing_pool_says_how_to_fix_it(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="unreadable-synthetic-set"):
        SyntheticSet.load(tmp_path / "nowhere")


def mixed(cache: SiteCache, *, synthetic_only: bool = False) -> MixedCache:
    pool = make_pool([0, 1, 2, 3, 0, 2])
    choice = MixChoice(np.array([4, 1, 1, 3]), 10, 4, 3, True, 0.3)
    return MixedCache(cache, pool, choice, synthetic_only=synthetic_only)


def test_mixed_images_equal_their_sources_in_any_order(cache: SiteCache) -> None:
    view = mixed(cache)
    n = len(cache)
    positions = np.array([n + 2, 3, n, n + 2, 0, n + 3, 3])

    batch = view.images[positions]

    assert len(view) == n + 4
    pool = view.synthetic.images
    expected = [pool[1], cache[3], pool[4], pool[1], cache[0], pool[3], cache[3]]
    np.testing.assert_array_equal(batch.astype(np.float32), np.stack(expected))
    np.testing.assert_array_equal(
        read_batch(view, positions).numpy(),
        np.stack(expected),
    )


def test_mixed_splits_add_synthetic_to_train_only(cache: SiteCache) -> None:
    view = mixed(cache)
    n = len(cache)

    train = view.indices("train")

    synthetic_rows = [n, n + 1, n + 2, n + 3]
    assert train.tolist() == cache.indices("train").tolist() + synthetic_rows
    np.testing.assert_array_equal(view.indices("val"), cache.indices("val"))
    np.testing.assert_array_equal(view.indices("test"), cache.indices("test"))
    assert mixed(cache, synthetic_only=True).indices("train").tolist() == (
        synthetic_rows
    )


def test_mixed_labels_cover_real_and_synthetic_rows(cache: SiteCache) -> None:
    view = mixed(cache)

    bm, ca = view.labels("bm"), view.labels("ca")

    np.testing.assert_array_equal(bm[: len(cache)], cache.labels("bm"))
    assert bm[len(cache) :].tolist() == [0, 0, 0, 1]  # classes 0, 1, 1, 3
    assert ca[len(cache) :].tolist() == [0, 1, 1, 1]


def test_mixed_cache_rejects_other_canvas_and_foreign_choice(
    cache: SiteCache,
) -> None:
    pool = SyntheticSet(
        np.zeros((2, 8, 8), np.float16), np.array([0, 1]), np.array(["a", "b"])
    )
    choice = MixChoice(np.array([0, 5]), 10, 2, 1, False, 0.5)

    with pytest.raises(TrainingError) as raised:
        MixedCache(cache, pool, choice, synthetic_only=False)

    assert raised.value.codes == ["canvas-mismatch", "choice-outside-pool"]


def test_train_local_runs_on_a_mixed_cache(cache: SiteCache) -> None:
    pool = make_pool([0, 2] * 30)
    view = mixed_training_cache(cache, "bm", pool, MixSpec(ratio=2, seed=3))
    n_real = len(labelled_rows(cache, "bm", "train")[0])
    torch.manual_seed(0)
    model = build_classifier(ClassifierSpec(architecture=Architecture.SMALL_CNN))
    spec = TrainSpec(
        epochs=1,
        batch_size=16,
        augment=AugmentSpec(enabled=False),
        max_batches_per_epoch=2,
    )

    result = train_local(model, view, "bm", spec)
    scores = predict(model, view, view.indices("test"), device="cpu")
    n_val, _, _ = evaluate_split(model, view, "bm", "val", device="cpu")

    assert view.choice.n_real == n_real
    assert result.n_examples == n_real + 2 * n_real
    assert np.isfinite(result.train_loss)
    assert scores.shape == (len(cache.indices("test")),)
    assert n_val == len(labelled_rows(cache, "bm", "val")[0])
