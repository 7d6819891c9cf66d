"""Reader-study statistics against statsmodels and hand-computed values."""

import math

import numpy as np
import pytest
from statsmodels.stats.inter_rater import fleiss_kappa as statsmodels_kappa
from statsmodels.stats.proportion import proportion_confint

from fedbone.reader_study.statistics import (
    fleiss_kappa,
    proportion_with_ci,
    rating_table,
    synthetic_detection,
)
from fedbone.validation.errors import EvaluationError

# Fleiss (1971), Table 1 as reprinted on Wikipedia: 10 items, 14 raters, 5
# categories; kappa 0.210.
FLEISS_EXAMPLE = np.array(
    [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
)


def test_fleiss_kappa_of_the_published_example() -> None:
    kappa = fleiss_kappa(FLEISS_EXAMPLE)

    assert kappa == pytest.approx(0.2099, abs=5e-4)
    assert kappa == pytest.approx(statsmodels_kappa(FLEISS_EXAMPLE), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_fleiss_kappa_equals_statsmodels_on_random_reads(seed: int) -> None:
    # Prepare: 4 readers call 60 images real (0) or synthetic (1)
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, 60)
    ratings = [np.where(rng.random(60) < 0.7, truth, 1 - truth) for _ in range(4)]

    # Execute
    table = rating_table(ratings, 2)

    # Assert
    assert (table.sum(axis=1) == 4).all()
    assert fleiss_kappa(table) == pytest.approx(statsmodels_kappa(table), abs=1e-12)


def test_perfect_agreement_is_one_and_one_category_is_undefined() -> None:
    assert fleiss_kappa(rating_table([[0, 1, 1, 0], [0, 1, 1, 0]], 2)) == 1.0
    assert math.isnan(fleiss_kappa(rating_table([[1, 1], [1, 1]], 2)))


@pytest.mark.parametrize(
    ("successes", "total"), [(0, 10), (3, 10), (50, 100), (99, 100), (7, 7)]
)
def test_accuracy_interval_is_wilsons(successes: int, total: int) -> None:
    estimate = proportion_with_ci(successes, total)

    low, high = proportion_confint(successes, total, alpha=0.05, method="wilson")
    assert estimate.value == pytest.approx(successes / total)
    assert estimate.low == pytest.approx(low, abs=1e-9)
    assert estimate.high == pytest.approx(high, abs=1e-9)


def test_detection_counts_synthetic_as_the_positive_class() -> None:
    # Prepare: 4 synthetic (3 spotted), 6 real (4 called real)
    is_synthetic = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    called = [1, 1, 1, 0, 0, 0, 0, 0, 1, 1]

    # Execute
    result = synthetic_detection(is_synthetic, called)

    # Assert: hand counts
    assert result.sensitivity.value == pytest.approx(3 / 4)
    assert result.specificity.value == pytest.approx(4 / 6)
    assert result.accuracy.value == pytest.approx(7 / 10)
    assert (result.n_synthetic, result.n_real) == (4, 6)
    assert result.accuracy.low < 0.7 < result.accuracy.high


@pytest.mark.parametrize(
    ("call", "code"),
    [
        (lambda: proportion_with_ci(11, 10), "bad-counts"),
        (lambda: synthetic_detection([1, 0], [1]), "length-mismatch"),
        (lambda: synthetic_detection([1, 2], [1, 0]), "not-binary"),
        (lambda: rating_table([[0, 1], [0]], 2), "ragged-ratings"),
        (lambda: rating_table([[0, 3]], 2), "bad-category"),
        (lambda: fleiss_kappa([[1, 1], [2, 1]]), "unequal-raters"),
        (lambda: fleiss_kappa([[1, 0], [0, 1]]), "too-few-raters"),
    ],
)
def test_bad_input_is_a_typed_error(call, code: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(EvaluationError) as raised:
        call()

    assert code in {problem.code for problem in raised.value.problems}
