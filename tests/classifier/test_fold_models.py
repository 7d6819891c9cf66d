"""The ensemble's fold view, its federated early stopping and its one-record packing."""

from pathlib import Path

import numpy as np
import pytest

from fedbone.classifier.errors import TrainingError
from fedbone.classifier.folds import (
    MAX_MEMBERS,
    BestRound,
    FoldView,
    is_ensemble,
    pack_ensemble,
    unpack_ensemble,
)


class _Cache:
    """Rows 0-59 train, 60-79 val, 80-99 test; 40 patients of 2-3 scans."""

    def __init__(self) -> None:
        self.images = np.zeros((100, 4, 4), dtype=np.float16)
        self.cache_dir = Path("unused")
        self.split = np.array(["train"] * 60 + ["val"] * 20 + ["test"] * 20)
        self.patients = [f"P{i // 2:02d}" for i in range(80)] + [
            f"T{i}" for i in range(20)
        ]
        rng = np.random.default_rng(0)
        by_patient = {p: int(rng.random() < 0.3) for p in self.patients}
        self._labels = np.array([by_patient[p] for p in self.patients])
        self._labels[5] = -1  # one scan of unknown label

    def __len__(self) -> int:
        return 100

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)

    def labels(self, task: str) -> np.ndarray:
        return self._labels.copy()


def _view(cache: _Cache, fold: int, folds: int = 4, min_patients: int = 5) -> FoldView:
    return FoldView(
        cache,
        cache.patients,
        "bm",
        fold=fold,
        folds=folds,
        seed=7,
        min_patients=min_patients,
    )


def test_fold_views_partition_the_development_data_by_patient() -> None:
    # Prepare
    cache = _Cache()

    # Execute
    views = [_view(cache, fold) for fold in range(4)]

    # Assert: the held-out folds partition the labelled train+val rows
    held_out = np.concatenate([v.indices("val") for v in views])
    assert sorted(held_out.tolist()) == list(range(80))
    for view in views:
        train, val = set(view.indices("train")), set(view.indices("val"))
        assert not train & val
        assert train | val == set(range(80))
        assert {cache.patients[i] for i in train}.isdisjoint(
            {cache.patients[i] for i in val}
        )
        assert view.indices("test").tolist() == list(range(80, 100))


def test_a_fold_outside_the_folds_or_folds_below_the_small_cell_rule_are_refused() -> (
    None
):
    # Prepare
    cache = _Cache()  # 40 development patients

    # Execute / Assert
    with pytest.raises(TrainingError, match="bad-fold"):
        _view(cache, 4)
    with pytest.raises(TrainingError, match="at most 8 folds"):
        _view(cache, 0, folds=10, min_patients=5)
    assert len(_view(cache, 0, folds=8, min_patients=5).indices("val")) > 0


def test_best_round_keeps_the_lowest_weighted_loss_and_stops_after_patience() -> None:
    # Prepare
    best = BestRound(patience=2)
    arrays = {r: {"w": np.full(2, float(r))} for r in range(1, 6)}

    # Execute
    stops = [
        best.update(1, [(0.9, 10), (0.7, 30)], arrays[1]),  # 0.75
        best.update(2, [(0.5, 10), (0.8, 30)], arrays[2]),  # 0.725
        best.update(3, [(0.2, 10), (1.0, 30)], arrays[3]),  # 0.80
        best.update(4, [(float("nan"), 10), (0.9, 30)], arrays[4]),  # 0.90
    ]

    # Assert
    assert stops == [False, False, False, True]
    assert best.best_round == 2
    assert best.best_loss == pytest.approx(0.725)
    assert best.best_arrays is not None
    np.testing.assert_array_equal(best.best_arrays["w"], [2.0, 2.0])


def test_an_ensemble_packs_into_one_mapping_and_back() -> None:
    # Prepare
    members = [{"backbone.w": np.full(3, j), "head.b": np.array([j])} for j in range(3)]

    # Execute
    packed = pack_ensemble(members)
    unpacked = unpack_ensemble(packed)

    # Assert
    assert is_ensemble(packed) and not is_ensemble(members[0])
    assert sorted(packed)[:2] == ["member-1.backbone.w", "member-1.head.b"]
    for got, want in zip(unpacked, members, strict=True):
        assert got.keys() == want.keys()
        np.testing.assert_array_equal(got["backbone.w"], want["backbone.w"])


def test_a_crafted_ensemble_is_refused() -> None:
    # Prepare
    one = {"head.b": np.zeros(1)}
    too_many = pack_ensemble([one] * (MAX_MEMBERS + 1))
    gap = {"member-1.head.b": np.zeros(1), "member-3.head.b": np.zeros(1)}

    # Execute / Assert
    with pytest.raises(TrainingError, match="too-many-members"):
        unpack_ensemble(too_many)
    with pytest.raises(TrainingError, match="bad-members"):
        unpack_ensemble(gap)
    with pytest.raises(TrainingError, match="bad-member-key"):
        unpack_ensemble({"member-x.head.b": np.zeros(1)})
