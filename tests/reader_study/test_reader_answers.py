"""Per-reader answers: safe names, known ids only, answering again replaces."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from fedbone.reader_study.answers import AnswerStore
from fedbone.reader_study.kit import ReaderSet, ReaderStudyError
from fedbone.safe_names import UnsafeName


@pytest.fixture
def store(tiny_set: Callable[..., ReaderSet]) -> AnswerStore:
    return AnswerStore(tiny_set().folder)


def test_answers_are_stored_per_reader_in_the_set_folder(store: AnswerStore) -> None:
    first, second = store.item_ids[:2]

    store.record("reader-1", first, "synthetic", "positive")
    store.record("reader-1", second, "real", "negative")
    store.record("reader-2", first, "real", "positive")

    stored = json.loads((store.folder / "reader-1.json").read_text())
    assert stored["reader"] == "reader-1"
    assert [(a["item"], a["call"], a["finding"]) for a in stored["answers"]] == [
        (first, "synthetic", "positive"),
        (second, "real", "negative"),
    ]
    assert all(a["time"].endswith("+00:00") for a in stored["answers"])
    assert store.readers() == ["reader-1", "reader-2"]
    # Written through temporary files, none of which is left behind.
    assert sorted(p.name for p in store.folder.iterdir()) == [
        "reader-1.json",
        "reader-2.json",
    ]


def test_answering_an_item_again_replaces_the_earlier_answer(
    store: AnswerStore,
) -> None:
    first, second = store.item_ids[:2]
    store.record("reader", first, "synthetic", "positive")
    store.record("reader", second, "real", "negative")

    store.record("reader", first, "real", "negative")

    answers = store.answers("reader")
    assert list(answers) == [first, second]
    assert (answers[first].call, answers[first].finding) == ("real", "negative")


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".hidden", "..", "x" * 200])
def test_a_reader_name_that_is_no_safe_file_name_is_refused(
    store: AnswerStore, name: str
) -> None:
    with pytest.raises(UnsafeName, match="unsafe-name"):
        store.record(name, store.item_ids[0], "real", "positive")

    assert not store.folder.exists()
    assert not (store.set_dir.parent / "escape.json").exists()


def test_unknown_ids_and_choices_are_refused_together(store: AnswerStore) -> None:
    with pytest.raises(ReaderStudyError) as caught:
        store.record("reader", "0" * 16, "fake", "maybe")

    assert caught.value.codes == ["unknown-item", "bad-call", "bad-finding"]
    assert store.readers() == []


def test_an_answers_file_of_another_set_is_refused(store: AnswerStore) -> None:
    store.folder.mkdir()
    (store.folder / "reader.json").write_text(
        json.dumps(
            {
                "reader": "reader",
                "answers": [
                    {
                        "item": "f" * 16,
                        "call": "real",
                        "finding": "positive",
                        "time": "",
                    }
                ],
            }
        )
    )

    with pytest.raises(ReaderStudyError, match="bad-answers"):
        store.answers("reader")
