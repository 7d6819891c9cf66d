"""The site's outcome cohort: first scans, complete cases, storage, scoring."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from fedbone.data.cache import CacheRecord, CacheWriter, SiteCache, install_cache
from fedbone.data.spec import PreprocessSpec
from fedbone.models import Architecture, ClassifierSpec, Norm, build_classifier
from fedbone.models.parameters import state_to_arrays
from fedbone.outcomes.cohort import (
    OutcomeCohort,
    cohort_path,
    first_scans,
    score_outcome_cohort,
)
from fedbone.validation.errors import EvaluationError

SPEC = PreprocessSpec(spacing_mm=8.0, canvas_height=32, canvas_width=16)
SMALL_CNN = ClassifierSpec(architecture=Architecture.SMALL_CNN, norm=Norm.GROUP)

#: (scan, patient, split, study date, age, sex, endpoints) of the tiny cache.
SCANS: tuple[
    tuple[str, str, str, str | None, float | None, str | None, dict[str, tuple]],
    ...,
] = (
    ("s0", "P1", "test", "20200301", 71.0, "M", {"death": (400.0, 1)}),
    ("s1", "P1", "test", "20190105", 70.0, "M", {"death": (800.0, 1)}),
    ("s2", "P1", "test", None, 72.0, "M", {"death": (100.0, 1)}),
    ("s3", "P2", "test", None, None, "O", {"death": (300.0, 0)}),
    ("s4", "P2", "test", None, None, "O", {"death": (200.0, 0)}),
    ("s5", "P3", "val", "20180101", 60.0, "F", {"death": (900.0, 0)}),
    ("s6", "P4", "val", "20150101", 55.0, "F", {"death": (50.0, 1)}),
    ("s7", "P4", "test", "20210101", 58.0, "F", {"hf": (120.0, 1)}),
    ("s8", "P5", "test", "20210505", 66.0, "F", {}),
)


def _record(row: int) -> CacheRecord:
    scan, patient, split, date, age, sex, endpoints = SCANS[row]
    return CacheRecord(
        scan_id=scan,
        patient_id=patient,
        split=split,
        label_bm=0,
        label_ca=None,
        perugini_grade=None,
        age=age,
        sex=sex,
        study_date=date,
        tracer=None,
        scanner=None,
        endpoints=dict(endpoints),
        scan_file=f"{scan}.dcm",
        row_number=row + 2,
    )


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> SiteCache:
    folder = tmp_path_factory.mktemp("outcome-cache")
    rng = np.random.default_rng(3)
    writer = CacheWriter(folder / ".partial", len(SCANS), SPEC.output_shape)
    for row in range(len(SCANS)):
        writer.append(rng.random(SPEC.output_shape, dtype=np.float32), _record(row))
    writer.finish({"spec": dataclasses.asdict(SPEC)})
    install_cache(folder / ".partial", folder / "cache")
    return SiteCache.open(folder / "cache")


def _cohort() -> OutcomeCohort:
    """Five patients: unknown age (row 1), sex O (row 2), no death follow-up (3)."""
    nan = np.nan
    return OutcomeCohort(
        predicted=np.array([1, 0, 1, 0, 1], dtype=np.int64),
        age=np.array([70.0, nan, 65.0, 80.0, 50.0]),
        male=np.array([1.0, 0.0, nan, 1.0, 0.0]),
        times={
            "death": np.array([100.0, 200.0, 300.0, nan, 500.0]),
            "hf": np.full(5, nan),
        },
        events={
            "death": np.array([1.0, 0.0, 1.0, nan, 0.0]),
            "hf": np.full(5, nan),
        },
    )


def test_first_scans_pick_each_patients_earliest_dated_scan_of_the_split(
    cache: SiteCache,
) -> None:
    # Execute
    positions = first_scans(cache, "test")

    # Assert: P1's 2019 scan beats 2020 and the undated one; P2 (both undated)
    # keeps cache order; P4's earlier scan is in val, so its test scan counts.
    assert [cache.index[p].scan_id for p in positions] == ["s1", "s3", "s7", "s8"]


def test_first_scans_only_look_inside_the_split(cache: SiteCache) -> None:
    # Execute
    positions = first_scans(cache, "val")

    # Assert
    assert [cache.index[p].scan_id for p in positions] == ["s5", "s6"]


def test_crude_model_keeps_patients_the_adjusted_model_drops() -> None:
    # Prepare
    cohort = _cohort()

    # Execute
    crude_t, crude_d, crude_x = cohort.records("death", "crude")
    adj_t, adj_d, adj_x = cohort.records("death", "adjusted")

    # Assert: no follow-up drops row 3 from both; unknown age and sex O only
    # leave the adjusted model.
    np.testing.assert_array_equal(crude_t, [100.0, 200.0, 300.0, 500.0])
    np.testing.assert_array_equal(crude_d, [1.0, 0.0, 1.0, 0.0])
    np.testing.assert_array_equal(crude_x, [[1.0], [0.0], [1.0], [1.0]])
    np.testing.assert_array_equal(adj_t, [100.0, 500.0])
    np.testing.assert_array_equal(adj_d, [1.0, 0.0])
    np.testing.assert_array_equal(adj_x, [[1.0, 70.0, 1.0], [1.0, 50.0, 0.0]])


def test_records_list_an_unknown_endpoint_and_model_at_once() -> None:
    # Prepare
    cohort = _cohort()

    # Execute
    with pytest.raises(EvaluationError) as caught:
        cohort.records("stroke", "saturated")

    # Assert
    assert {p.code for p in caught.value.problems} == {
        "unknown-endpoint",
        "unknown-model",
    }


def test_endpoints_are_those_with_any_follow_up() -> None:
    # Execute / Assert
    assert _cohort().endpoints == ("death",)


def test_a_saved_cohort_loads_back_equal(tmp_path: Path) -> None:
    # Prepare
    cohort = _cohort()
    path = cohort_path(tmp_path, "run-1")

    # Execute
    loaded = OutcomeCohort.load(cohort.save(path))

    # Assert
    assert path.is_relative_to(tmp_path / "runs" / "run-1")
    np.testing.assert_array_equal(loaded.predicted, cohort.predicted)
    np.testing.assert_array_equal(loaded.age, cohort.age)
    np.testing.assert_array_equal(loaded.male, cohort.male)
    assert set(loaded.times) == {"death", "hf"}
    for name in cohort.times:
        np.testing.assert_array_equal(loaded.times[name], cohort.times[name])
        np.testing.assert_array_equal(loaded.events[name], cohort.events[name])


def test_loading_a_missing_cohort_says_the_counts_round_must_run_first(
    tmp_path: Path,
) -> None:
    # Execute
    with pytest.raises(EvaluationError) as caught:
        OutcomeCohort.load(cohort_path(tmp_path, "never-ran"))

    # Assert
    assert [p.code for p in caught.value.problems] == ["no-cohort"]


@pytest.mark.parametrize(("threshold", "positive"), [(0.0, 1), (1.01, 0)])
def test_scoring_keeps_first_scans_with_follow_up_and_their_covariates(
    cache: SiteCache, threshold: float, positive: int
) -> None:
    # Prepare
    torch.manual_seed(0)
    arrays = state_to_arrays(build_classifier(SMALL_CNN))

    # Execute
    cohort = score_outcome_cohort(
        cache,
        SMALL_CNN,
        arrays,
        split="test",
        threshold=threshold,
        endpoints=("death", "hf"),
    )

    # Assert: P5 (no follow-up) is left out; P1 counts from its 2019 scan.
    assert cohort.n_patients == 3
    np.testing.assert_array_equal(cohort.predicted, [positive] * 3)
    np.testing.assert_array_equal(cohort.age, [70.0, np.nan, 58.0])
    np.testing.assert_array_equal(cohort.male, [1.0, np.nan, 0.0])
    np.testing.assert_array_equal(cohort.times["death"], [800.0, 300.0, np.nan])
    np.testing.assert_array_equal(cohort.events["death"], [1.0, 0.0, np.nan])
    np.testing.assert_array_equal(cohort.times["hf"], [np.nan, np.nan, 120.0])
