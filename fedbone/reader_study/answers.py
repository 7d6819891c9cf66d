"""Each reader's answers, one JSON file per reader in the set's ``answers/``.

``answers/<reader>.json`` holds ``{"reader": name, "answers": [...]}``, one
answer ``{"item", "call", "finding", "time"}`` per item, in the order first
answered: the call is ``real`` or ``synthetic``, the finding ``positive`` or
``negative``, the time when it was saved (UTC, ISO 8601). Answering an item
again replaces the earlier answer. Reader names become file names, so they
pass :func:`~fedbone.safe_names.check_safe_name`; only the set's item ids are
accepted. Every write goes to a temporary file renamed over the old one, so
a reader's file is always whole.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedbone.errors import Problem
from fedbone.reader_study.kit import ANSWERS_DIR, ReaderStudyError, load_item_ids
from fedbone.safe_names import check_safe_name, is_safe_name

__all__ = ["CALLS", "FINDINGS", "Answer", "AnswerStore"]

CALLS = ("real", "synthetic")
FINDINGS = ("positive", "negative")


@dataclass(frozen=True)
class Answer:
    """One reader's answer on one image.

    Parameters
    ----------
    item
        The image's opaque id.
    call
        ``real`` or ``synthetic``.
    finding
        ``positive`` or ``negative``.
    time
        When it was saved, UTC ISO 8601.
    """

    item: str
    call: str
    finding: str
    time: str


class AnswerStore:
    """Reads and writes the answers of a set's readers.

    Safe to share between the threads of the page server: writes are
    serialised.

    Parameters
    ----------
    set_dir
        The set folder (with ``items.json``).
    """

    def __init__(self, set_dir: Path) -> None:
        self.set_dir = Path(set_dir)
        _, items = load_item_ids(self.set_dir)
        self.item_ids = tuple(items)
        self._known = frozenset(items)
        self._lock = threading.Lock()

    @property
    def folder(self) -> Path:
        """The ``answers/`` folder."""
        return self.set_dir / ANSWERS_DIR

    def _path(self, reader: str) -> Path:
        return self.folder / f"{check_safe_name(reader, 'reader name')}.json"

    def record(self, reader: str, item: str, call: str, finding: str) -> list[Answer]:
        """Save one answer (replacing the reader's earlier one on ``item``).

        Parameters
        ----------
        reader
            The reader's name (a safe file name).
        item
            An id of this set.
        call
            ``real`` or ``synthetic``.
        finding
            ``positive`` or ``negative``.

        Returns
        -------
        list of Answer
            The reader's answers after saving.

        Raises
        ------
        UnsafeName
            For a reader name that is not a safe file name.
        ReaderStudyError
            ``unknown-item``, ``bad-call`` or ``bad-finding``, all listed.
        """
        path = self._path(reader)
        problems = []
        if not isinstance(item, str) or item not in self._known:
            problems.append(
                Problem("unknown-item", "the image id is not one of this set's")
            )
        if call not in CALLS:
            problems.append(Problem("bad-call", f"call must be one of {CALLS}"))
        if finding not in FINDINGS:
            problems.append(
                Problem("bad-finding", f"finding must be one of {FINDINGS}")
            )
        ReaderStudyError.raise_if_any("answer", problems)
        answer = Answer(item, call, finding, datetime.now(UTC).isoformat())
        with self._lock:
            answers = self.answers(reader)
            answers[item] = answer
            self._write(path, reader, list(answers.values()))
        return list(answers.values())

    def _write(self, path: Path, reader: str, answers: list[Answer]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"reader": reader, "answers": [asdict(a) for a in answers]}
        temporary = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
        temporary.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
        os.replace(temporary, path)

    def answers(self, reader: str) -> dict[str, Answer]:
        """Return a reader's answers by item id (empty for a new reader).

        Raises
        ------
        UnsafeName
            For a reader name that is not a safe file name.
        ReaderStudyError
            ``bad-answers`` when the file is damaged or names unknown items.
        """
        path = self._path(reader)
        if not path.is_file():
            return {}
        try:
            stored: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            answers = [Answer(**entry) for entry in stored["answers"]]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ReaderStudyError(
                str(path),
                [Problem("bad-answers", f"the answers cannot be read ({error})")],
            ) from error
        unknown = sorted({a.item for a in answers} - self._known)
        if unknown:
            raise ReaderStudyError(
                str(path),
                [
                    Problem(
                        "bad-answers",
                        f"{len(unknown)} answer(s) name images not in this set; "
                        "the file belongs to another set",
                    )
                ],
            )
        return {a.item: a for a in answers}

    def readers(self) -> list[str]:
        """Return the names of every reader with an answers file, sorted."""
        if not self.folder.is_dir():
            return []
        return sorted(
            path.stem
            for path in self.folder.glob("*.json")
            if is_safe_name(path.stem) and not path.name.startswith(".")
        )
