"""Scoring a reader set: the key against every reader's answers.

Per reader and over all readers' answers pooled:

- accuracy of the real/synthetic call with its 95% Wilson interval, and the
  sensitivity and specificity for spotting synthetic images (synthetic is the
  positive class; :func:`~fedbone.reader_study.statistics.synthetic_detection`);
- accuracy of the finding against the image's label, on real and on
  synthetic images separately (a synthetic image's label is the class it was
  generated for);
- Fleiss' kappa across readers, of the call and of the finding, over the
  images every reader answered.

A reader who has not answered every image is scored on what they answered
and listed as incomplete, with the number of images missing. The results are
written beside the set as ``results.json`` and ``results.md``; they stay at
the site like the set itself.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedbone.errors import Problem
from fedbone.reader_study.answers import Answer, AnswerStore
from fedbone.reader_study.kit import ReaderStudyError, load_key
from fedbone.reader_study.statistics import (
    DetectionResult,
    fleiss_kappa,
    proportion_with_ci,
    rating_table,
    synthetic_detection,
)
from fedbone.validation.estimate import Estimate

__all__ = [
    "RESULTS_JSON",
    "RESULTS_MD",
    "ReaderScore",
    "ReaderStudyResults",
    "score_reader_set",
    "write_results",
]

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"


@dataclass(frozen=True)
class ReaderScore:
    """How one reader (or all readers pooled) did.

    Parameters
    ----------
    reader
        The reader's name; ``all readers`` for the pooled score.
    n_answered
        Answers scored.
    n_missing
        Images of the set without an answer (pooled: summed over readers).
    detection
        Accuracy, sensitivity and specificity of the real/synthetic call.
    finding_real, finding_synthetic
        Accuracy of the finding on real and on synthetic images.
    """

    reader: str
    n_answered: int
    n_missing: int
    detection: DetectionResult
    finding_real: Estimate
    finding_synthetic: Estimate

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict (undefined values as ``null``)."""
        return {
            "reader": self.reader,
            "n-answered": self.n_answered,
            "n-missing": self.n_missing,
            "n-real": self.detection.n_real,
            "n-synthetic": self.detection.n_synthetic,
            "call-accuracy": _estimate(self.detection.accuracy),
            "synthetic-sensitivity": _estimate(self.detection.sensitivity),
            "synthetic-specificity": _estimate(self.detection.specificity),
            "finding-accuracy-real": _estimate(self.finding_real),
            "finding-accuracy-synthetic": _estimate(self.finding_synthetic),
        }


@dataclass(frozen=True)
class ReaderStudyResults:
    """The scored set.

    Parameters
    ----------
    n_items
        Images in the set.
    readers
        Each reader's score, by name.
    pooled
        All readers' answers pooled.
    kappa_call, kappa_finding
        Fleiss' kappa of the call and of the finding over the images every
        reader answered (NaN with fewer than two readers, no common image,
        or every rating in one category).
    n_common
        Images every reader answered.
    incomplete
        Readers with images unanswered -> how many.
    """

    n_items: int
    readers: tuple[ReaderScore, ...]
    pooled: ReaderScore
    kappa_call: float
    kappa_finding: float
    n_common: int
    incomplete: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict (undefined values as ``null``)."""
        return {
            "n-items": self.n_items,
            "n-readers": len(self.readers),
            "readers": [score.to_json() for score in self.readers],
            "pooled": self.pooled.to_json(),
            "fleiss-kappa-call": _number(self.kappa_call),
            "fleiss-kappa-finding": _number(self.kappa_finding),
            "n-items-all-readers": self.n_common,
            "incomplete-readers": self.incomplete,
        }


def _number(value: float) -> float | None:
    return None if math.isnan(value) else value


def _estimate(estimate: Estimate) -> dict[str, float | None]:
    return {key: _number(value) for key, value in estimate.to_dict().items()}


def _score(
    reader: str,
    answers: list[Answer],
    key: dict[str, dict[str, Any]],
    n_missing: int,
) -> ReaderScore:
    synthetic = np.array(
        [key[a.item]["source"] == "synthetic" for a in answers], dtype=bool
    )
    called = np.array([a.call == "synthetic" for a in answers], dtype=bool)
    correct_finding = np.array(
        [(a.finding == "positive") == (key[a.item]["label"] == 1) for a in answers],
        dtype=bool,
    )
    real = ~synthetic
    return ReaderScore(
        reader=reader,
        n_answered=len(answers),
        n_missing=n_missing,
        detection=synthetic_detection(synthetic, called),
        finding_real=proportion_with_ci(
            int(correct_finding[real].sum()), int(real.sum())
        ),
        finding_synthetic=proportion_with_ci(
            int(correct_finding[synthetic].sum()), int(synthetic.sum())
        ),
    )


def _kappas(
    by_reader: dict[str, dict[str, Answer]], items: list[str]
) -> tuple[float, float, int]:
    common = [
        item for item in items if all(item in answers for answers in by_reader.values())
    ]
    if len(by_reader) < 2 or not common:
        return math.nan, math.nan, len(common) if by_reader else 0
    calls = [
        [int(answers[item].call == "synthetic") for item in common]
        for answers in by_reader.values()
    ]
    findings = [
        [int(answers[item].finding == "positive") for item in common]
        for answers in by_reader.values()
    ]
    return (
        fleiss_kappa(rating_table(calls, 2)),
        fleiss_kappa(rating_table(findings, 2)),
        len(common),
    )


def score_reader_set(set_dir: Path) -> ReaderStudyResults:
    """Score every reader's answers on a set against its key.

    Parameters
    ----------
    set_dir
        The set folder (``key.json``, ``items.json``, ``answers/``).

    Raises
    ------
    ReaderStudyError
        ``no-answers`` when no reader has answered yet; ``no-set`` or
        ``bad-answers`` for a missing key or damaged answers.
    """
    store = AnswerStore(set_dir)
    key = load_key(set_dir)
    items = list(store.item_ids)
    by_reader = {reader: store.answers(reader) for reader in store.readers()}
    by_reader = {reader: answers for reader, answers in by_reader.items() if answers}
    if not by_reader:
        raise ReaderStudyError(
            str(set_dir),
            [Problem("no-answers", "no reader has answered yet; serve the page first")],
        )
    missing = {
        reader: len(items) - len(answers) for reader, answers in by_reader.items()
    }
    scores = tuple(
        _score(reader, list(answers.values()), key, missing[reader])
        for reader, answers in by_reader.items()
    )
    pooled_answers = [a for answers in by_reader.values() for a in answers.values()]
    kappa_call, kappa_finding, n_common = _kappas(by_reader, items)
    return ReaderStudyResults(
        n_items=len(items),
        readers=scores,
        pooled=_score("all readers", pooled_answers, key, sum(missing.values())),
        kappa_call=kappa_call,
        kappa_finding=kappa_finding,
        n_common=n_common,
        incomplete={reader: n for reader, n in missing.items() if n},
    )


def _percent(estimate: Estimate) -> str:
    if math.isnan(estimate.value):
        return "n/a"
    return (
        f"{100 * estimate.value:.1f}% "
        f"({100 * estimate.low:.1f}-{100 * estimate.high:.1f})"
    )


def _kappa_text(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def _markdown(results: ReaderStudyResults) -> str:
    lines = [
        "# Reader study results (site-local)",
        "",
        f"{results.n_items} images, {len(results.readers)} reader(s). "
        "Percentages with 95% Wilson intervals; synthetic is the positive class "
        "of sensitivity and specificity.",
        "",
        "| reader | answered | real/synthetic accuracy | sensitivity | "
        "specificity | finding accuracy, real | finding accuracy, synthetic |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for score in (*results.readers, results.pooled):
        lines.append(
            f"| {score.reader} | {score.n_answered} | "
            f"{_percent(score.detection.accuracy)} | "
            f"{_percent(score.detection.sensitivity)} | "
            f"{_percent(score.detection.specificity)} | "
            f"{_percent(score.finding_real)} | {_percent(score.finding_synthetic)} |"
        )
    lines += [
        "",
        f"Fleiss' kappa over the {results.n_common} images every reader answered: "
        f"real/synthetic {_kappa_text(results.kappa_call)}, "
        f"finding {_kappa_text(results.kappa_finding)}.",
    ]
    if results.incomplete:
        shown = ", ".join(f"{r} ({n} missing)" for r, n in results.incomplete.items())
        lines += ["", f"Incomplete readers, scored on what they answered: {shown}."]
    return "\n".join(lines) + "\n"


def write_results(set_dir: Path) -> ReaderStudyResults:
    """Score the set and write ``results.json`` and ``results.md`` into it.

    Parameters
    ----------
    set_dir
        The set folder.

    Raises
    ------
    ReaderStudyError
        As :func:`score_reader_set`.
    """
    results = score_reader_set(set_dir)
    folder = Path(set_dir)
    (folder / RESULTS_JSON).write_text(
        json.dumps(results.to_json(), indent=1, allow_nan=False) + "\n",
        encoding="utf-8",
    )
    (folder / RESULTS_MD).write_text(_markdown(results), encoding="utf-8")
    return results
