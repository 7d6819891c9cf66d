"""Scoring a set: hand-counted answers of three readers, one of them incomplete."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest
from statsmodels.stats.inter_rater import aggregate_raters
from statsmodels.stats.inter_rater import fleiss_kappa as statsmodels_kappa
from statsmodels.stats.proportion import proportion_confint

from fedbone.reader_study.answers import AnswerStore
from fedbone.reader_study.kit import ReaderSet, ReaderStudyError, load_key
from fedbone.reader_study.results import score_reader_set, write_results
from fedbone.validation.estimate import Estimate


def _wilson(successes: int, total: int) -> tuple[float, float, float]:
    low, high = proportion_confint(successes, total, alpha=0.05, method="wilson")
    return successes / total, float(low), float(high)


def _close(estimate: Estimate, successes: int, total: int) -> bool:
    expected = _wilson(successes, total)
    actual = (estimate.value, estimate.low, estimate.high)
    return actual == pytest.approx(expected, abs=1e-12)


@pytest.fixture
def answered(tiny_set: Callable[..., ReaderSet]) -> ReaderSet:
    """Three readers on 8 images (2 per group); cy answers 5 and stops.

    ``r1, r2`` real positive, ``r3, r4`` real negative, ``s1, s2`` synthetic
    positive, ``s3, s4`` synthetic negative.
    """
    made = tiny_set()
    key = load_key(made.folder)
    groups: dict[tuple[str, int], list[str]] = {}
    for item in made.item_ids:
        groups.setdefault((key[item]["source"], key[item]["label"]), []).append(item)
    r1, r2 = groups["real", 1]
    r3, r4 = groups["real", 0]
    s1, s2 = groups["synthetic", 1]
    s3, s4 = groups["synthetic", 0]
    store = AnswerStore(made.folder)
    ana = {
        r1: ("real", "positive"),
        r2: ("real", "negative"),
        r3: ("real", "negative"),
        r4: ("real", "negative"),
        s1: ("synthetic", "positive"),
        s2: ("real", "positive"),
        s3: ("synthetic", "negative"),
        s4: ("real", "negative"),
    }
    for item, (call, finding) in ana.items():
        store.record("ana", item, call, finding)
    for item in made.item_ids:
        store.record("ben", item, "synthetic", "positive")
    for item in (r1, r3, s1, s2, s3):
        store.record("cy", item, "real", "negative")
    return made


def test_each_reader_is_scored_against_the_key(
    answered: ReaderSet,
) -> None:

    results = score_reader_set(answered.folder)

    ana, ben, cy = results.readers
    assert [r.reader for r in results.readers] == ["ana", "ben", "cy"]
    # ana: every real image called real, half the synthetic ones spotted.
    assert _close(ana.detection.accuracy, 6, 8)
    assert _close(ana.detection.sensitivity, 2, 4)
    assert _close(ana.detection.specificity, 4, 4)
    assert _close(ana.finding_real, 3, 4)
    assert _close(ana.finding_synthetic, 4, 4)
    # ben calls everything synthetic and positive.
    assert _close(ben.detection.accuracy, 4, 8)
    assert _close(ben.detection.sensitivity, 4, 4)
    assert _close(ben.detection.specificity, 0, 4)
    assert _close(ben.finding_real, 2, 4)
    assert _close(ben.finding_synthetic, 2, 4)
    # cy: 5 of 8 answered, all real and negative.
    assert (cy.n_answered, cy.n_missing) == (5, 3)
    assert _close(cy.detection.accuracy, 2, 5)
    assert _close(cy.detection.sensitivity, 0, 3)
    assert _close(cy.detection.specificity, 2, 2)
    assert _close(cy.finding_real, 1, 2)
    assert _close(cy.finding_synthetic, 1, 3)


def test_pooled_scores_count_every_answer(
    answered: ReaderSet,
) -> None:

    pooled = score_reader_set(answered.folder).pooled

    assert pooled.n_answered == 21 and pooled.n_missing == 3
    assert _close(pooled.detection.accuracy, 12, 21)
    assert _close(pooled.detection.sensitivity, 6, 11)
    assert _close(pooled.detection.specificity, 6, 10)
    assert _close(pooled.finding_real, 6, 10)
    assert _close(pooled.finding_synthetic, 7, 11)


def test_fleiss_kappa_uses_the_images_every_reader_answered(
    answered: ReaderSet,
) -> None:
    # r1, r3, s1, s2, s3 x readers (ana, ben, cy); 1 = synthetic / positive.
    calls = np.array([[0, 1, 0], [0, 1, 0], [1, 1, 0], [0, 1, 0], [1, 1, 0]])
    findings = np.array([[1, 1, 0], [0, 1, 0], [1, 1, 0], [1, 1, 0], [0, 1, 0]])

    results = score_reader_set(answered.folder)

    assert results.n_common == 5
    assert results.incomplete == {"cy": 3}
    # Every image splits 2:1, P_i = 1/3; shares 8/15 and 7/15 -> -38/112.
    assert results.kappa_call == pytest.approx(-38 / 112, abs=1e-12)
    assert results.kappa_call == pytest.approx(
        statsmodels_kappa(aggregate_raters(calls)[0]), abs=1e-12
    )
    assert results.kappa_finding == pytest.approx(
        statsmodels_kappa(aggregate_raters(findings)[0]), abs=1e-12
    )


def test_results_are_written_beside_the_set_with_no_nan(
    tiny_set: Callable[..., ReaderSet],
) -> None:
    made = tiny_set()
    store = AnswerStore(made.folder)
    store.record("solo", made.item_ids[0], "real", "positive")

    write_results(made.folder)

    stored = json.loads((made.folder / "results.json").read_text())
    assert stored["fleiss-kappa-call"] is None
    assert stored["incomplete-readers"] == {"solo": 7}
    assert stored["readers"][0]["n-answered"] == 1
    report = (made.folder / "results.md").read_text()
    assert "solo (7 missing)" in report and "| solo | 1 |" in report


def test_a_set_nobody_has_read_cannot_be_scored(
    tiny_set: Callable[..., ReaderSet],
) -> None:
    with pytest.raises(ReaderStudyError, match="no-answers"):
        score_reader_set(tiny_set().folder)
