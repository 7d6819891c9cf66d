"""Hottest-lesion counts (bladder excluded) and their pooled Bland-Altman agreement."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from fedbone.enhance.agreement import (
    Agreement,
    AgreementSums,
    agreement,
    focus_counts,
    hottest_focus,
)
from fedbone.validation.errors import EvaluationError

HEIGHT, WIDTH = 128, 48
BLADDER = (63, 24)
SPINE_LESION = (35, 23)


def body_counts(
    *,
    bladder: float = 400.0,
    lesion: float = 360.0,
    lesion_at: tuple[int, int] = SPINE_LESION,
    seed: int = 0,
) -> np.ndarray:
    """A Poisson whole-body view: head at row 8, feet at row 119.

    Soft tissue 8 counts, a spine (columns 22-25) at 30, a bladder disk of
    radius 5 at 49 % of the body's height and a 3 x 3 lesion.
    """
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH]
    expected = np.zeros((HEIGHT, WIDTH))
    body = ((rows - 63.5) / 56.0) ** 2 + ((cols - 23.5) / 14.0) ** 2 <= 1
    expected[body] = 8.0
    expected[20:100, 22:26] = 30.0
    in_bladder = (rows - BLADDER[0]) ** 2 + (cols - BLADDER[1]) ** 2 <= 25
    expected[in_bladder] = bladder
    row, col = lesion_at
    expected[row - 1 : row + 2, col - 1 : col + 2] = lesion
    return np.random.default_rng(seed).poisson(expected).astype(np.float32)


def near(found: tuple[int, int], target: tuple[int, int], pixels: int = 1) -> bool:
    return abs(found[0] - target[0]) <= pixels and abs(found[1] - target[1]) <= pixels


@pytest.mark.parametrize("lesion", [360.0, 150.0])
def test_hottest_focus_skips_the_hotter_bladder_for_the_spine_lesion(
    lesion: float,
) -> None:
    # 150 counts is under half the bladder's: the bladder's own flank, just
    # outside the masked region, must not be taken for the focus either.
    counts = body_counts(lesion=lesion)

    focus = hottest_focus(counts)
    without_rule = hottest_focus(counts, bladder_exclusion=False)

    assert near(focus, SPINE_LESION)
    assert near(without_rule, BLADDER, pixels=4)


def test_hottest_focus_keeps_a_lateral_pelvic_lesion_hotter_than_the_bladder() -> None:
    # Below the pelvis line but 12 px (11 % of the body's height) off the
    # midline: not the bladder, so nothing is masked.
    pelvic = (66, 12)
    counts = body_counts(lesion=500.0, lesion_at=pelvic)

    focus = hottest_focus(counts)

    assert near(focus, pelvic)


def test_hottest_focus_applies_the_rule_in_each_side_by_side_view() -> None:
    anterior = body_counts(lesion=250.0, seed=1)
    posterior = body_counts(bladder=300.0, lesion=330.0, seed=2)
    canvas = np.concatenate([anterior, posterior], axis=1)

    focus = hottest_focus(canvas, views=2)
    as_one_view = hottest_focus(canvas, views=1)

    assert near(focus, (SPINE_LESION[0], WIDTH + SPINE_LESION[1]))
    # Seen as one view, the midline falls between the views: no bladder masked.
    assert near(as_one_view, BLADDER, pixels=4)


def test_focus_counts_is_the_window_maximum_cut_at_the_border() -> None:
    counts = np.arange(30, dtype=np.float64).reshape(5, 6)

    inside = focus_counts(counts, (2, 2))
    corner = focus_counts(counts, (0, 5), window=5)
    single = focus_counts(counts, (1, 1), window=1)

    assert inside == counts[3, 3]
    assert corner == counts[2, 5]
    assert single == counts[1, 1]


def test_focus_functions_list_every_problem() -> None:
    with pytest.raises(EvaluationError) as caught:
        hottest_focus(np.zeros((2, 8, 9)), window=4, views=2)
    assert set(caught.value.codes) == {"not-an-image", "bad-window", "bad-views"}

    with pytest.raises(EvaluationError, match="empty-image"):
        hottest_focus(np.zeros((8, 8)))
    with pytest.raises(EvaluationError, match="bad-views"):
        hottest_focus(np.ones((8, 9)), views=2)
    with pytest.raises(EvaluationError, match="focus-outside"):
        focus_counts(np.ones((8, 8)), (8, 0))


def test_agreement_matches_a_hand_computed_bland_altman() -> None:
    standard = np.array([100.0, 200.0, 300.0, 400.0])
    method = np.array([110.0, 190.0, 320.0, 400.0])

    result = agreement(AgreementSums.of(standard, method))

    # Differences 10, -10, 20, 0: bias 5, squared deviations 25 + 225 + 225 + 25.
    sd = math.sqrt(500.0 / 3.0)
    assert result.n == 4
    assert result.bias == pytest.approx(5.0, rel=1e-12)
    assert result.sd == pytest.approx(sd, rel=1e-12)
    assert result.lower == pytest.approx(5.0 - 1.96 * sd, rel=1e-12)
    assert result.upper == pytest.approx(5.0 + 1.96 * sd, rel=1e-12)


def test_pooled_sums_of_three_sites_equal_the_concatenated_pairs() -> None:
    rng = np.random.default_rng(7)
    standards = [rng.uniform(500.0, 5000.0, size) for size in (6, 13, 9)]
    methods = [x * rng.normal(0.97, 0.05, x.size) + 20.0 for x in standards]

    pooled = sum(
        (AgreementSums.of(x, y) for x, y in zip(standards, methods, strict=True)),
        AgreementSums(),
    )
    result = agreement(AgreementSums.from_dict(pooled.to_dict()))

    x, y = np.concatenate(standards), np.concatenate(methods)
    differences = y - x
    sd = differences.std(ddof=1)
    assert result.n == 28
    assert result.bias == pytest.approx(differences.mean(), rel=1e-10)
    assert result.sd == pytest.approx(sd, rel=1e-9)
    assert result.lower == pytest.approx(differences.mean() - 1.96 * sd, rel=1e-9)
    assert result.upper == pytest.approx(differences.mean() + 1.96 * sd, rel=1e-9)
    assert result.pearson_r == pytest.approx(stats.pearsonr(x, y).statistic, rel=1e-9)


def test_agreement_records_use_kebab_keys_and_list_every_missing_key() -> None:
    sums = AgreementSums.of(np.array([1.0, 2.0, 4.0]), np.array([1.5, 2.0, 3.0]))

    record = sums.to_dict()
    summary = agreement(sums).to_dict()

    assert list(record) == ["n", "sum-x", "sum-y", "sum-xx", "sum-yy", "sum-xy"]
    assert AgreementSums.from_dict(record) == sums
    assert set(summary) == {"n", "bias", "sd", "lower", "upper", "pearson-r"}
    with pytest.raises(EvaluationError) as caught:
        AgreementSums.from_dict({"n": 3, "sum-x": 7.0})
    assert caught.value.codes == ["missing-key"] * 4


def test_agreement_needs_two_pairs_and_gives_nan_r_for_constant_counts() -> None:
    constant = AgreementSums.of(np.array([5.0, 5.0, 5.0]), np.array([4.0, 6.0, 5.0]))

    result = agreement(constant)

    assert isinstance(result, Agreement)
    assert math.isnan(result.pearson_r)
    assert result.bias == pytest.approx(0.0)
    with pytest.raises(EvaluationError, match="too-few-pairs"):
        agreement(AgreementSums.of(np.array([1.0]), np.array([2.0])))
    with pytest.raises(EvaluationError, match="length-mismatch"):
        AgreementSums.of(np.array([1.0, 2.0]), np.array([1.0]))
