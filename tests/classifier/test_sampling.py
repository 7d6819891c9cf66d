from __future__ import annotations

import numpy as np
import pytest

from fedbone.classifier.sampling import (
    Sampling,
    balanced_epoch,
    epoch_indices,
    oversample_minority,
)

LABELS = np.array([0] * 20 + [1] * 5)


def test_oversampling_keeps_every_scan_and_balances_the_classes() -> None:
    rng = np.random.default_rng(0)

    drawn = oversample_minority(LABELS, rng)

    assert set(drawn) == set(range(len(LABELS)))
    assert (LABELS[drawn] == 1).sum() == (LABELS[drawn] == 0).sum() == 20
    assert len(drawn) == 40


def test_oversampling_balances_a_majority_of_positives() -> None:
    labels = 1 - LABELS

    drawn = oversample_minority(labels, np.random.default_rng(0))

    assert (labels[drawn] == 0).sum() == (labels[drawn] == 1).sum() == 20


def test_balanced_epoch_takes_all_positives_and_as_many_distinct_negatives() -> None:
    rng = np.random.default_rng(0)

    first = balanced_epoch(LABELS, rng)
    second = balanced_epoch(LABELS, rng)

    for drawn in (first, second):
        assert set(np.flatnonzero(LABELS == 1)) <= set(drawn)
        assert (LABELS[drawn] == 0).sum() == 5
        assert len(set(drawn)) == len(drawn) == 10
    assert set(first) != set(second)  # a fresh negative draw every epoch


def test_single_class_sites_see_every_scan_once() -> None:
    labels = np.zeros(7, dtype=np.int64)
    rng = np.random.default_rng(0)

    for sampling in Sampling:
        drawn = epoch_indices(sampling, labels, rng)

        assert sorted(drawn) == list(range(7))


def test_no_sampling_is_a_shuffle_of_every_scan() -> None:
    drawn = epoch_indices(Sampling.NONE, LABELS, np.random.default_rng(1))

    assert sorted(drawn) == list(range(len(LABELS)))
    assert list(drawn) != list(range(len(LABELS)))


def test_same_seed_draws_the_same_epoch() -> None:
    first = epoch_indices(Sampling.OVERSAMPLE, LABELS, np.random.default_rng(5))
    second = epoch_indices(Sampling.OVERSAMPLE, LABELS, np.random.default_rng(5))

    np.testing.assert_array_equal(first, second)


def test_unknown_labels_must_be_dropped_first() -> None:
    with pytest.raises(ValueError, match="drop unknown labels"):
        oversample_minority(np.array([0, 1, -1]), np.random.default_rng(0))
