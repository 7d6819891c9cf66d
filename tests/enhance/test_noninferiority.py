"""One-sided non-inferiority test of the enhanced-vs-standard AUC difference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedbone.enhance.noninferiority import noninferiority
from fedbone.validation.errors import EvaluationError

# Standard normal quantities (tables, or 0.5 * erfc(z / sqrt(2))).
UPPER_TAIL_AT_2 = 0.022750131948179195  # 1 - Phi(2)
UPPER_TAIL_AT_1 = 0.15865525393145707  # 1 - Phi(1)
Z_95 = 1.6448536269514722  # Phi^-1(0.95)


def test_non_inferior_case_computed_by_hand() -> None:
    # d = -0.01, se = 0.02, margin 0.05: z = (-0.01 + 0.05) / 0.02 = 2.
    result = noninferiority(-0.01, 0.02)

    assert result.z == pytest.approx(2.0, rel=1e-12)
    assert result.p_value == pytest.approx(UPPER_TAIL_AT_2, rel=1e-9)
    assert result.lower == pytest.approx(-0.01 - Z_95 * 0.02, rel=1e-9)
    assert result.non_inferior
    assert (result.difference, result.se, result.margin) == (-0.01, 0.02, 0.05)


def test_inconclusive_case_computed_by_hand() -> None:
    # d = -0.03: z = 1, lower bound -0.0629 below the -0.05 margin.
    result = noninferiority(-0.03, 0.02)

    assert result.z == pytest.approx(1.0, rel=1e-12)
    assert result.p_value == pytest.approx(UPPER_TAIL_AT_1, rel=1e-9)
    assert result.lower == pytest.approx(-0.03 - Z_95 * 0.02, rel=1e-9)
    assert not result.non_inferior


def test_p_value_agrees_with_the_normal_tail_formula() -> None:
    result = noninferiority(0.004, 0.031, margin=0.1, alpha=0.025)

    z = (0.004 + 0.1) / 0.031
    assert result.p_value == pytest.approx(0.5 * math.erfc(z / math.sqrt(2)))


@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.1])
def test_decision_by_lower_bound_equals_decision_by_p_value(alpha: float) -> None:
    differences = np.linspace(-0.12, 0.05, 35)

    results = [noninferiority(float(d), 0.025, alpha=alpha) for d in differences]

    assert any(r.non_inferior for r in results)
    assert not all(r.non_inferior for r in results)
    for result in results:
        assert result.non_inferior == (result.p_value < alpha)


def test_record_uses_kebab_keys() -> None:
    record = noninferiority(0.0, 0.01).to_dict()

    assert list(record) == [
        "difference",
        "se",
        "lower",
        "margin",
        "z",
        "p-value",
        "non-inferior",
    ]
    assert record["non-inferior"] is True


def test_every_bad_argument_is_listed() -> None:
    with pytest.raises(EvaluationError) as caught:
        noninferiority(math.nan, 0.0, margin=-0.05, alpha=0.7)

    assert caught.value.codes == [
        "non-finite-difference",
        "bad-standard-error",
        "bad-margin",
        "bad-alpha",
    ]
