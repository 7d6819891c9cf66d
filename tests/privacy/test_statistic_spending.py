from pathlib import Path

import pytest

from fedbone.privacy.budget import PrivacyBudget
from fedbone.privacy.errors import BudgetExceeded, PrivacyError
from fedbone.privacy.ledger import PrivacyLedger
from fedbone.privacy.statistic_spending import (
    STATISTICS_STREAM,
    plan_statistic_release,
)

BUDGET = PrivacyBudget(epsilon=8.0, delta=1e-4)
CLASSIFIER = "run-1/train/classifier"
DETAILS = {"bins": 20, "sensitivity": 1, "models": 2, "split": "test"}


def ledger_at(tmp_path: Path) -> PrivacyLedger:
    return PrivacyLedger(tmp_path / "privacy.jsonl", BUDGET)


def record_dp_sgd(ledger: PrivacyLedger, stream_epsilon: float) -> None:
    ledger.record(
        run="run-1",
        phase="train",
        kind="classifier-round",
        mechanism="dp-sgd-rdp",
        stream=CLASSIFIER,
        stream_epsilon=stream_epsilon,
        delta=1e-5,
        details={"noise-multiplier": 1.1, "sample-rate": 0.01, "steps": 100},
    )


def release(ledger: PrivacyLedger, epsilon: float) -> None:
    planned = plan_statistic_release(ledger, epsilon, DETAILS)
    planned.commit(run="run-1", phase="validate", kind="validation-histograms")


def test_two_releases_add_up_in_the_statistics_stream(tmp_path: Path) -> None:
    # Prepare
    ledger = ledger_at(tmp_path)

    # Execute
    release(ledger, 0.5)
    release(ledger, 0.5)

    # Assert
    stream = ledger.spent().per_stream[STATISTICS_STREAM]
    assert stream.epsilon == pytest.approx(1.0)
    assert stream.delta == 0.0
    assert stream.n_entries == 2
    assert [e.epsilon for e in ledger.entries()] == pytest.approx([0.5, 0.5])


def test_the_entry_records_a_pure_epsilon_laplace_release(tmp_path: Path) -> None:
    # Prepare
    ledger = ledger_at(tmp_path)
    planned = plan_statistic_release(ledger, 0.7, DETAILS)

    # Execute
    entry = planned.commit(run="run-1", phase="validate", kind="validation-histograms")

    # Assert
    assert planned.epsilon == pytest.approx(0.7)
    assert planned.stream_epsilon == pytest.approx(0.7)
    assert entry.stream == STATISTICS_STREAM == "statistics"
    assert entry.mechanism == "laplace"
    assert entry.delta == 0.0
    assert entry.kind == "validation-histograms"
    assert (entry.run, entry.phase) == ("run-1", "validate")
    assert dict(entry.details) == DETAILS
    assert ledger.entries() == [entry]


def test_planning_alone_writes_nothing(tmp_path: Path) -> None:
    # Prepare
    ledger = ledger_at(tmp_path)
    record_dp_sgd(ledger, 2.0)

    # Execute
    plan_statistic_release(ledger, 1.0, DETAILS)

    # Assert
    assert ledger.spent().n_entries == 1


def test_statistics_add_to_dp_sgd_in_the_total(tmp_path: Path) -> None:
    # Prepare
    ledger = ledger_at(tmp_path)
    record_dp_sgd(ledger, 2.0)

    # Execute
    release(ledger, 0.5)
    release(ledger, 0.25)

    # Assert: ε adds across streams, the Laplace stream adds no δ
    spent = ledger.spent()
    assert spent.epsilon == pytest.approx(2.75)
    assert spent.delta == pytest.approx(1e-5)
    assert spent.per_stream[CLASSIFIER].epsilon == pytest.approx(2.0)
    assert spent.per_stream[STATISTICS_STREAM].epsilon == pytest.approx(0.75)


def test_a_release_past_the_budget_is_refused_and_writes_nothing(
    tmp_path: Path,
) -> None:
    # Prepare
    ledger = ledger_at(tmp_path)
    record_dp_sgd(ledger, 7.0)
    release(ledger, 0.5)
    before = ledger.path.read_bytes()

    # Execute: 7.0 + 0.5 + 0.6 > 8
    with pytest.raises(BudgetExceeded) as caught:
        plan_statistic_release(ledger, 0.6, DETAILS)

    # Assert
    assert caught.value.codes == ["budget-exceeded"]
    assert "spent 7.5" in str(caught.value)
    assert ledger.path.read_bytes() == before
    assert ledger.spent().n_entries == 2


def test_a_release_that_exactly_fills_the_budget_is_accepted(tmp_path: Path) -> None:
    # Prepare
    ledger = ledger_at(tmp_path)
    record_dp_sgd(ledger, 7.0)

    # Execute
    release(ledger, 1.0)

    # Assert
    assert ledger.remaining()[0] == pytest.approx(0.0)


@pytest.mark.parametrize("epsilon", [0.0, -0.5, float("nan"), float("inf")])
def test_epsilon_that_is_not_positive_and_finite_is_refused(
    tmp_path: Path, epsilon: float
) -> None:
    # Prepare
    ledger = ledger_at(tmp_path)

    # Execute
    with pytest.raises(PrivacyError) as caught:
        plan_statistic_release(ledger, epsilon, DETAILS)

    # Assert
    assert not isinstance(caught.value, BudgetExceeded)
    assert caught.value.codes == ["epsilon-not-positive"]
    assert ledger.spent().n_entries == 0


def test_two_plans_open_at_once_are_both_charged_in_full(tmp_path: Path) -> None:
    # Prepare: two requests planned before either committed
    ledger = ledger_at(tmp_path)
    first = plan_statistic_release(ledger, 0.5, DETAILS)
    second = plan_statistic_release(ledger, 0.5, DETAILS)

    # Execute
    first.commit(run="run-1", phase="validate", kind="validation-histograms")
    second.commit(run="run-1", phase="validate", kind="validation-histograms")

    # Assert
    assert [e.epsilon for e in ledger.entries()] == pytest.approx([0.5, 0.5])
    assert ledger.spent().epsilon == pytest.approx(1.0)
