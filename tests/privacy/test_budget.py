import math

import pytest

from fedbone.errors import ProblemsError
from fedbone.privacy.budget import PrivacyBudget, default_delta
from fedbone.privacy.errors import PrivacyError


def test_default_delta_is_one_over_ten_n():
    # Execute / Assert
    assert default_delta(500) == pytest.approx(2e-4)
    assert default_delta(1) == pytest.approx(0.1)


@pytest.mark.parametrize("n", [0, -3])
def test_default_delta_refuses_a_site_without_training_scans(n):
    # Execute
    with pytest.raises(PrivacyError) as caught:
        default_delta(n)

    # Assert
    assert caught.value.codes == ["no-training-scans"]
    assert "set delta explicitly" in str(caught.value)


def test_budget_for_site_defaults_delta_from_the_training_scans():
    # Execute
    defaulted = PrivacyBudget.for_site(8.0, None, n_training_scans=200)
    explicit = PrivacyBudget.for_site(8.0, 1e-6, n_training_scans=200)

    # Assert
    assert defaulted == PrivacyBudget(epsilon=8.0, delta=5e-4)
    assert explicit.delta == 1e-6


@pytest.mark.parametrize(
    ("epsilon", "delta", "codes"),
    [
        (0.0, 1.0, ["epsilon-not-positive", "delta-out-of-range"]),
        (-1.0, 0.0, ["epsilon-not-positive", "delta-out-of-range"]),
        (math.inf, 1e-5, ["epsilon-not-positive"]),
        (8.0, math.nan, ["delta-out-of-range"]),
    ],
)
def test_budget_validation_lists_every_problem(epsilon, delta, codes):
    # Execute
    with pytest.raises(PrivacyError) as caught:
        PrivacyBudget(epsilon=epsilon, delta=delta)

    # Assert
    assert caught.value.codes == codes
    assert isinstance(caught.value, ProblemsError)


def test_budget_is_immutable():
    # Prepare
    budget = PrivacyBudget(epsilon=8.0, delta=1e-5)

    # Execute / Assert
    with pytest.raises(AttributeError):
        budget.epsilon = 100.0  # type: ignore[misc]
