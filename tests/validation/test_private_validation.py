from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_caches import build_toy_cache, toy_label, toy_split

from fedbone.data.cache import SiteCache
from fedbone.models import Architecture, ClassifierSpec, Norm, build_classifier
from fedbone.models.parameters import state_to_arrays
from fedbone.privacy.budget import PrivacyBudget
from fedbone.privacy.errors import BudgetExceeded
from fedbone.privacy.ledger import PrivacyLedger
from fedbone.privacy.statistic_spending import STATISTICS_STREAM
from fedbone.validation.errors import EvaluationError
from fedbone.validation.private import (
    DpStatisticsSpec,
    bounded_positions,
    private_histograms,
    release_private_histograms,
)

SMALL_CNN = ClassifierSpec(architecture=Architecture.SMALL_CNN, norm=Norm.GROUP)
HUGE_EPSILON = 1e9


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> SiteCache:
    return build_toy_cache(tmp_path_factory.mktemp("toy"), count=30)


@pytest.fixture(scope="module")
def models() -> dict[str, dict[str, np.ndarray]]:
    torch.manual_seed(0)
    first = state_to_arrays(build_classifier(SMALL_CNN))
    torch.manual_seed(1)
    second = state_to_arrays(build_classifier(SMALL_CNN))
    return {"fed": first, "local": second}


def test_bounding_keeps_each_patients_first_scans_in_order() -> None:
    # Prepare: rows 0..6 of patients A A B A B C A, considered from row 6 on,
    # so the patients come in the order A A A B A B C
    patients = ["A", "A", "B", "A", "B", "C", "A"]
    positions = np.array([6, 0, 1, 2, 3, 4, 5])

    # Execute
    keep_one = bounded_positions(patients, positions, 1)
    keep_two = bounded_positions(patients, positions, 2)

    # Assert: "first" follows the order of ``positions``, not of the cache
    assert keep_one.tolist() == [True, False, False, True, False, False, True]
    assert keep_two.tolist() == [True, True, False, True, False, True, True]


def test_bounding_keeps_everything_when_no_patient_exceeds_the_bound() -> None:
    # Execute
    keep = bounded_positions(["A", "B", "C"], np.array([0, 1, 2]), 1)

    # Assert
    assert keep.dtype == bool and keep.all()


def test_spec_lists_every_problem_at_once() -> None:
    # Execute
    with pytest.raises(EvaluationError) as caught:
        DpStatisticsSpec(epsilon=0.0, bins=9, max_scans_per_patient=0)

    # Assert
    assert caught.value.codes == [
        "epsilon-not-positive",
        "bad-bins",
        "bad-contribution-bound",
    ]


@pytest.mark.parametrize("bins", [8, 21])
def test_spec_refuses_too_few_or_odd_bins(bins: int) -> None:
    # Execute
    with pytest.raises(EvaluationError) as caught:
        DpStatisticsSpec(epsilon=1.0, bins=bins)

    # Assert
    assert caught.value.codes == ["bad-bins"]


@pytest.mark.parametrize("epsilon", [-1.0, float("nan"), float("inf")])
def test_spec_refuses_epsilon_that_is_not_positive_and_finite(epsilon: float) -> None:
    # Execute
    with pytest.raises(EvaluationError) as caught:
        DpStatisticsSpec(epsilon=epsilon)

    # Assert
    assert caught.value.codes == ["epsilon-not-positive"]


def test_spec_splits_epsilon_equally_over_the_models() -> None:
    # Execute
    spec = DpStatisticsSpec(epsilon=1.0)

    # Assert: defaults, and basic composition over the reply's models
    assert (spec.bins, spec.max_scans_per_patient) == (20, 1)
    assert spec.epsilon_per_model(4) == pytest.approx(0.25)
    assert spec.epsilon_per_model(0) == pytest.approx(1.0)


def test_huge_epsilon_gives_the_labelled_split_sizes_per_class(
    cache: SiteCache,
    models: dict[str, dict[str, np.ndarray]],
) -> None:
    # Prepare: the toy cache's test rows that have a bone-metastasis label
    labels = [toy_label(i) for i in range(30) if toy_split(i) == "test"]
    n_positive, n_negative = labels.count(1), labels.count(0)
    dp = DpStatisticsSpec(epsilon=HUGE_EPSILON, bins=10)

    # Execute
    released = private_histograms(
        cache,
        "bm",
        SMALL_CNN,
        models,
        split="test",
        dp=dp,
        rng=np.random.default_rng(0),
    )

    # Assert
    assert n_positive > 0 and n_negative > 0
    assert set(released) == {"fed", "local"}
    for histograms in released.values():
        assert histograms.bins == 10
        assert (histograms.n_positive, histograms.n_negative) == (
            n_positive,
            n_negative,
        )


def test_histograms_have_the_requested_bins_at_a_small_epsilon(
    cache: SiteCache, models: dict[str, dict[str, np.ndarray]]
) -> None:
    # Execute
    released = private_histograms(
        cache, "bm", SMALL_CNN, models, split="train", dp=DpStatisticsSpec(0.1)
    )

    # Assert
    for histograms in released.values():
        assert histograms.bins == 20
        assert np.all(histograms.positives >= 0)
        assert np.all(histograms.negatives >= 0)


def test_a_release_is_charged_once_to_the_statistics_stream(
    tmp_path: Path, cache: SiteCache, models: dict[str, dict[str, np.ndarray]]
) -> None:
    # Prepare
    ledger = PrivacyLedger(tmp_path / "privacy.jsonl", PrivacyBudget(8.0, 1e-4))
    dp = DpStatisticsSpec(epsilon=1.5, bins=10, max_scans_per_patient=2)

    # Execute
    release = release_private_histograms(
        cache,
        "bm",
        SMALL_CNN,
        models,
        split="test",
        dp=dp,
        ledger=ledger,
        run="run-1",
        phase="validate",
        rng=np.random.default_rng(1),
    )

    # Assert
    [entry] = ledger.entries()
    assert entry.stream == STATISTICS_STREAM
    assert entry.kind == "validation-histograms"
    assert entry.mechanism == "laplace"
    assert entry.epsilon == pytest.approx(1.5) and entry.delta == 0.0
    assert dict(entry.details) == {
        "bins": 10,
        "sensitivity": 2,
        "models": 2,
        "split": "test",
    }
    assert set(release.histograms) == {"fed", "local"}
    assert release.epsilon == pytest.approx(1.5)
    assert (release.epsilon_spent, release.delta_spent) == (pytest.approx(1.5), 0.0)


def test_a_release_over_budget_scores_nothing_and_writes_nothing(
    tmp_path: Path,
    cache: SiteCache,
    models: dict[str, dict[str, np.ndarray]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prepare: 0.6 of the budget is left, the reply asks for 1.0
    ledger = PrivacyLedger(tmp_path / "privacy.jsonl", PrivacyBudget(8.0, 1e-4))
    ledger.record(
        run="run-1",
        phase="train",
        kind="classifier-round",
        mechanism="dp-sgd-rdp",
        stream="run-1/train/classifier",
        stream_epsilon=7.4,
        delta=1e-5,
    )
    before = ledger.path.read_bytes()

    def must_not_score(*args: object, **kwargs: object) -> None:
        raise AssertionError("the models were scored although the budget is spent")

    monkeypatch.setattr("fedbone.validation.private.private_histograms", must_not_score)

    # Execute
    with pytest.raises(BudgetExceeded) as caught:
        release_private_histograms(
            cache,
            "bm",
            SMALL_CNN,
            models,
            split="test",
            dp=DpStatisticsSpec(epsilon=1.0),
            ledger=ledger,
            run="run-1",
            phase="validate",
        )

    # Assert
    assert caught.value.codes == ["budget-exceeded"]
    assert ledger.path.read_bytes() == before
    assert ledger.spent().n_entries == 1
