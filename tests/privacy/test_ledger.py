import hashlib
import json
import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from fedbone.privacy.budget import PrivacyBudget
from fedbone.privacy.errors import BudgetExceeded, LedgerTampered, PrivacyError
from fedbone.privacy.ledger import GENESIS_HASH, PrivacyLedger, head_path_for
from fedbone.security.site_secret import create_site_secret

BUDGET = PrivacyBudget(epsilon=8.0, delta=1e-4)
CLASSIFIER = "run-1/train/classifier"
GAN = "run-1/gan/discriminator"


def release(ledger: PrivacyLedger, stream: str, stream_epsilon: float, **extra):
    fields = {
        "run": "run-1",
        "phase": "train",
        "kind": "classifier-round",
        "mechanism": "dp-sgd-rdp",
        "delta": 1e-5,
        "details": {"noise-multiplier": 1.1, "sample-rate": 0.01, "steps": 100},
    }
    fields.update(extra)
    return ledger.record(stream=stream, stream_epsilon=stream_epsilon, **fields)


def ledger_with_three_rounds(tmp_path: Path) -> PrivacyLedger:
    ledger = PrivacyLedger(tmp_path / "privacy.jsonl", BUDGET)
    for stream_epsilon in (1.0, 1.5, 2.0):
        release(ledger, CLASSIFIER, stream_epsilon)
    return ledger


def test_rounds_of_one_stream_cost_the_accountants_cumulative_epsilon(tmp_path):
    # Execute
    ledger = ledger_with_three_rounds(tmp_path)

    # Assert: increments recorded, the stream costs its latest ε, δ once
    entries = ledger.entries()
    assert [e.epsilon for e in entries] == pytest.approx([1.0, 0.5, 0.5])
    assert [e.seq for e in entries] == [0, 1, 2]
    assert entries[0].prev == GENESIS_HASH
    assert datetime.fromisoformat(entries[0].time).utcoffset() == timedelta(0)
    assert entries[1].prev == entries[0].sha256
    spent = ledger.spent()
    assert spent.epsilon == pytest.approx(2.0)
    assert spent.delta == pytest.approx(1e-5)
    assert spent.n_entries == 3
    assert spent.per_stream[CLASSIFIER].n_entries == 3
    assert ledger.remaining() == pytest.approx((6.0, 9e-5))


def test_two_streams_compose_by_summing_epsilon_and_delta(tmp_path):
    # Prepare
    ledger = ledger_with_three_rounds(tmp_path)

    # Execute: a GAN stream and a pure-ε Laplace statistic
    release(ledger, GAN, 3.0, kind="gan-round", delta=2e-5)
    release(
        ledger,
        "run-1/validate/roc",
        0.5,
        kind="statistic",
        mechanism="laplace",
        delta=0.0,
    )

    # Assert
    spent = ledger.spent()
    assert spent.epsilon == pytest.approx(2.0 + 3.0 + 0.5)
    assert spent.delta == pytest.approx(1e-5 + 2e-5)
    assert ledger.summary() == {
        "epsilon-spent": pytest.approx(5.5),
        "delta-spent": pytest.approx(3e-5),
        "epsilon-budget": 8.0,
        "delta-budget": 1e-4,
        "n-releases": 5,
        "ledger-sha256": ledger.entries()[-1].sha256,
    }


def test_ledger_survives_a_restart(tmp_path):
    # Prepare
    path = tmp_path / "privacy.jsonl"
    release(PrivacyLedger(path, BUDGET), CLASSIFIER, 3.0)

    # Execute: a new object on the same file, as after a site restart
    restarted = PrivacyLedger(path, BUDGET)
    release(restarted, GAN, 2.0)

    # Assert
    again = PrivacyLedger(path, BUDGET)
    assert again.spent().epsilon == pytest.approx(5.0)
    assert [e.stream for e in again.entries()] == [CLASSIFIER, GAN]


def test_exhausted_budget_stops_the_next_release_and_writes_nothing(tmp_path):
    # Prepare
    ledger = ledger_with_three_rounds(tmp_path)
    release(ledger, GAN, 5.5)
    before = ledger.path.read_bytes()

    # Execute: the classifier stream going from 2.0 to 2.6 takes ε to 8.1
    with pytest.raises(BudgetExceeded) as caught:
        release(ledger, CLASSIFIER, 2.6)

    # Assert
    assert caught.value.codes == ["budget-exceeded"]
    message = str(caught.value)
    assert "spent 7.5" in message
    assert "budget 8" in message
    assert "raise the site's budget" in message
    assert ledger.path.read_bytes() == before
    assert ledger.spent().n_entries == 4


def test_check_refuses_a_new_stream_over_the_delta_budget(tmp_path):
    # Prepare
    ledger = ledger_with_three_rounds(tmp_path)

    # Execute / Assert: ε fits, δ 1e-5 + 1e-4 does not
    with pytest.raises(BudgetExceeded, match="delta"):
        ledger.check(GAN, 1.0, 1e-4)
    ledger.check(GAN, 1.0, 5e-5)
    assert ledger.spent().n_entries == 3


def test_release_up_to_the_budget_exactly_is_allowed(tmp_path):
    # Prepare
    ledger = PrivacyLedger(tmp_path / "privacy.jsonl", BUDGET)

    # Execute
    release(ledger, CLASSIFIER, 8.0)

    # Assert
    assert ledger.remaining() == pytest.approx((0.0, 9e-5))


def test_inconsistent_delta_within_a_stream_is_refused(tmp_path):
    # Prepare
    ledger = ledger_with_three_rounds(tmp_path)

    # Execute
    with pytest.raises(PrivacyError) as caught:
        release(ledger, CLASSIFIER, 2.5, delta=2e-5)

    # Assert
    assert caught.value.codes == ["stream-delta-changed"]
    assert ledger.spent().n_entries == 3


def test_per_round_epsilon_passed_as_cumulative_is_refused(tmp_path):
    # Prepare
    ledger = ledger_with_three_rounds(tmp_path)

    # Execute / Assert
    with pytest.raises(PrivacyError) as caught:
        release(ledger, CLASSIFIER, 0.5)
    assert caught.value.codes == ["stream-epsilon-decreased"]


def test_invalid_release_fields_are_all_listed(tmp_path):
    # Prepare
    ledger = PrivacyLedger(tmp_path / "privacy.jsonl", BUDGET)

    # Execute
    with pytest.raises(PrivacyError) as caught:
        release(
            ledger,
            "",
            -1.0,
            run="",
            kind="Classifier Round",
            delta=1.5,
            details={"blob": [float("nan")]},
        )

    # Assert
    assert caught.value.codes == [
        "empty-field",
        "not-kebab-case",
        "invalid-details",
        "empty-field",
        "invalid-epsilon",
        "invalid-delta",
    ]
    assert not ledger.path.exists()


def test_invalid_release_numbers_are_all_listed(tmp_path):
    # Prepare
    ledger = PrivacyLedger(tmp_path / "privacy.jsonl", BUDGET)

    # Execute
    with pytest.raises(PrivacyError) as caught:
        ledger.check("", -1.0, 1.5)

    # Assert
    assert caught.value.codes == ["empty-field", "invalid-epsilon", "invalid-delta"]


def edit_line(path: Path, number: int, **changes) -> None:
    lines = path.read_text().splitlines()
    entry = json.loads(lines[number - 1])
    entry.update(changes)
    lines[number - 1] = json.dumps(entry)
    path.write_text("\n".join(lines) + "\n")


def test_edited_epsilon_in_a_middle_line_is_detected(tmp_path):
    # Prepare
    ledger = ledger_with_three_rounds(tmp_path)

    # Execute: lower a round's ε to hide spending
    edit_line(ledger.path, 2, epsilon=0.01, stream_epsilon=1.01)

    # Assert: named at line 2, on reopening and on every use
    with pytest.raises(LedgerTampered) as caught:
        PrivacyLedger(ledger.path, BUDGET)
    assert caught.value.codes == ["entry-hash-mismatch"]
    assert caught.value.problems[0].where == "line 2"
    with pytest.raises(LedgerTampered):
        release(ledger, GAN, 0.1)


def canonical_hash(entry: dict) -> str:
    content = {key: value for key, value in entry.items() if key != "sha256"}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def test_line_hash_is_sha256_of_its_canonical_json(tmp_path):
    # Execute
    ledger = ledger_with_three_rounds(tmp_path)

    # Assert: a privacy officer can re-check a line with any sha256 tool
    for line in ledger.path.read_text().splitlines():
        entry = json.loads(line)
        assert entry["sha256"] == canonical_hash(entry)


def test_rehashed_edit_breaks_the_chain_at_the_next_line(tmp_path):
    # Prepare
    ledger = ledger_with_three_rounds(tmp_path)
    forged = json.loads(ledger.path.read_text().splitlines()[1])
    forged["epsilon"] = 0.01

    # Execute: a careful editor also recomputes the edited line's sha256
    edit_line(ledger.path, 2, epsilon=0.01, sha256=canonical_hash(forged))

    # Assert
    with pytest.raises(LedgerTampered) as caught:
        ledger.verify()
    assert caught.value.codes == ["chain-broken"]
    assert caught.value.problems[0].where == "line 3"


def test_reordered_lines_are_detected(tmp_path):
    # Prepare
    ledger = ledger_with_three_rounds(tmp_path)
    lines = ledger.path.read_text().splitlines()

    # Execute
    ledger.path.write_text("\n".join([lines[0], lines[2], lines[1]]) + "\n")

    # Assert
    with pytest.raises(LedgerTampered) as caught:
        ledger.verify()
    assert {p.where for p in caught.value.problems} == {"line 2", "line 3"}


def test_deleted_middle_line_is_detected(tmp_path):
    # Prepare
    ledger = ledger_with_three_rounds(tmp_path)
    lines = ledger.path.read_text().splitlines()

    # Execute
    ledger.path.write_text("\n".join([lines[0], lines[2]]) + "\n")

    # Assert
    with pytest.raises(LedgerTampered) as caught:
        ledger.verify()
    assert "chain-broken" in caught.value.codes
    assert caught.value.problems[0].where == "line 2"


def test_truncated_tail_is_detected(tmp_path):
    # Prepare
    ledger = ledger_with_three_rounds(tmp_path)
    lines = ledger.path.read_text().splitlines()

    # Execute: drop the last release; the remaining chain is intact
    ledger.path.write_text("\n".join(lines[:2]) + "\n")

    # Assert
    with pytest.raises(LedgerTampered) as caught:
        PrivacyLedger(ledger.path, BUDGET)
    assert caught.value.codes == ["head-mismatch"]
    assert "3 releases" in str(caught.value)


def test_deleted_ledger_with_its_head_left_is_detected(tmp_path):
    # Prepare
    ledger = ledger_with_three_rounds(tmp_path)

    # Execute
    ledger.path.unlink()

    # Assert: never a silent fresh start
    with pytest.raises(LedgerTampered) as caught:
        PrivacyLedger(ledger.path, BUDGET)
    assert caught.value.codes == ["ledger-missing"]


def test_a_line_appended_before_a_crash_is_kept_and_counted(tmp_path):
    # Prepare: the head as it was before the last append
    ledger = ledger_with_three_rounds(tmp_path)
    entries = ledger.entries()
    ledger.head_path.write_text(json.dumps({"count": 2, "sha256": entries[1].sha256}))

    # Execute
    reopened = PrivacyLedger(ledger.path, BUDGET)

    # Assert: counted as spent and the head rolled forward
    assert reopened.spent().epsilon == pytest.approx(2.0)
    assert json.loads(ledger.head_path.read_text())["count"] == 3


def test_fresh_ledger_has_spent_nothing(tmp_path):
    # Execute
    ledger = PrivacyLedger(tmp_path / "site" / "privacy.jsonl", BUDGET)

    # Assert
    assert ledger.spent().epsilon == 0.0
    assert ledger.entries() == []
    assert ledger.remaining() == (8.0, 1e-4)
    assert not ledger.path.exists()


def test_concurrent_writers_keep_one_unbroken_chain(tmp_path):
    # Prepare: two ledger objects on one file, as two site processes
    path = tmp_path / "privacy.jsonl"
    writers = [PrivacyLedger(path, BUDGET), PrivacyLedger(path, BUDGET)]

    def write(index: int) -> None:
        for round_number in range(1, 11):
            release(writers[index], f"stream-{index}", 0.1 * round_number)

    # Execute
    threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Assert
    entries = PrivacyLedger(path, BUDGET).entries()
    assert len(entries) == 20
    assert [e.seq for e in entries] == list(range(20))
    assert PrivacyLedger(path, BUDGET).spent().epsilon == pytest.approx(2.0)


def keyed_ledger(tmp_path: Path) -> PrivacyLedger:
    secret = create_site_secret(tmp_path / "secret" / "site-secret.key")
    ledger = PrivacyLedger(tmp_path / "privacy.jsonl", BUDGET, secret)
    for stream_epsilon in (1.0, 1.5, 2.0):
        release(ledger, CLASSIFIER, stream_epsilon)
    return ledger


def test_a_keyed_ledger_macs_its_lines_and_keeps_its_head_by_the_secret(tmp_path):
    # Execute
    ledger = keyed_ledger(tmp_path)

    # Assert: the sha256 still covers the whole line (the MAC included)
    secret_path = tmp_path / "secret" / "site-secret.key"
    assert ledger.keyed
    assert ledger.head_path == head_path_for(ledger.path, secret_path)
    assert ledger.head_path.parent == secret_path.parent
    head = json.loads(ledger.head_path.read_text())
    assert set(head) == {"count", "sha256", "mac"}
    for line in ledger.path.read_text().splitlines():
        entry = json.loads(line)
        assert len(entry["mac"]) == 64
        assert entry["sha256"] == canonical_hash(entry)
    assert PrivacyLedger(ledger.path, BUDGET, ledger.secret).spent().epsilon == 2.0


def test_a_keyed_ledger_opened_with_another_secret_is_refused(tmp_path):
    # Prepare
    ledger = keyed_ledger(tmp_path)
    other = create_site_secret(tmp_path / "secret" / "other.key")
    (tmp_path / "secret" / f"other.key.{ledger.path.name}.head").write_bytes(
        ledger.head_path.read_bytes()
    )

    # Execute
    with pytest.raises(LedgerTampered) as caught:
        PrivacyLedger(ledger.path, BUDGET, other)

    # Assert
    assert caught.value.codes == ["head-mac-invalid"]


def test_a_keyed_line_appended_before_a_crash_is_rolled_forward_with_a_mac(
    tmp_path,
):
    # Prepare: the head as it was before the last append
    ledger = keyed_ledger(tmp_path)
    head_before = ledger.head_path.read_bytes()
    release(ledger, CLASSIFIER, 2.5)
    ledger.head_path.write_bytes(head_before)

    # Execute
    reopened = PrivacyLedger(ledger.path, BUDGET, ledger.secret)

    # Assert: counted, and the rolled-forward head carries a valid MAC
    assert reopened.spent().epsilon == pytest.approx(2.5)
    assert json.loads(ledger.head_path.read_text())["count"] == 4
    release(reopened, CLASSIFIER, 3.0)
    assert reopened.spent().n_entries == 5


@pytest.mark.parametrize(
    "text",
    [
        "NaN",
        "[1, 2]",
        '{"seq": 0}',
        "\u00ff\u00fe garbage",
    ],
)
def test_a_garbage_line_is_a_typed_refusal(tmp_path, text):
    # Prepare
    ledger = ledger_with_three_rounds(tmp_path)

    # Execute
    with ledger.path.open("a") as stream:
        stream.write(text + "\n")

    # Assert
    with pytest.raises(LedgerTampered) as caught:
        ledger.verify()
    assert caught.value.codes == ["unreadable-line"]
    assert caught.value.problems[0].where == "line 4"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epsilon", float("nan")),
        ("epsilon", -1.0),
        ("stream_epsilon", float("inf")),
        ("delta", 1.5),
    ],
)
def test_a_non_finite_or_negative_value_is_refused_on_load(tmp_path, field, value):
    # Prepare
    ledger = ledger_with_three_rounds(tmp_path)

    # Execute: the edited value, re-hashed (json writes NaN and Infinity)
    lines = ledger.path.read_text().splitlines()
    entry = json.loads(lines[2])
    entry[field] = value
    lines[2] = json.dumps(entry)
    ledger.path.write_text("\n".join(lines) + "\n")

    # Assert: a typed refusal, never a raw ValueError
    with pytest.raises(LedgerTampered) as caught:
        ledger.verify()
    assert caught.value.codes == ["invalid-value"]


def test_an_unkeyed_line_that_lowers_a_stream_is_refused(tmp_path):
    # Prepare: a correctly chained line beyond the head, stream back to 0
    ledger = ledger_with_three_rounds(tmp_path)
    last = ledger.entries()[-1]
    forged = {
        "seq": 3,
        "time": last.time,
        "run": "run-1",
        "phase": "train",
        "kind": "classifier-round",
        "mechanism": "dp-sgd-rdp",
        "stream": CLASSIFIER,
        "epsilon": 0.0,
        "stream_epsilon": 0.0,
        "delta": 1e-5,
        "details": {},
        "prev": last.sha256,
    }
    forged["sha256"] = canonical_hash(forged)

    # Execute
    with ledger.path.open("a") as stream:
        stream.write(json.dumps(forged) + "\n")

    # Assert
    with pytest.raises(LedgerTampered) as caught:
        PrivacyLedger(ledger.path, BUDGET)
    assert caught.value.codes == ["stream-inconsistent"]
    assert caught.value.problems[0].where == "line 4"


def test_record_composed_computes_the_stream_epsilon_under_the_lock(tmp_path):
    # Prepare
    ledger = ledger_with_three_rounds(tmp_path)
    seen: list[int] = []

    def plus_half(entries):
        seen.append(len(entries))
        return entries[-1].stream_epsilon + 0.5

    # Execute
    entry = ledger.record_composed(
        run="run-1",
        phase="train",
        kind="classifier-round",
        mechanism="dp-sgd-rdp",
        stream=CLASSIFIER,
        stream_epsilon_of=plus_half,
        delta=1e-5,
    )

    # Assert
    assert seen == [3]
    assert entry.epsilon == pytest.approx(0.5)
    assert entry.stream_epsilon == pytest.approx(2.5)
