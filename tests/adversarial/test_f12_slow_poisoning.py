"""Finding 12 (last item): slow poisoning, a documented limit of the norm rule.

The centre rejects an update whose change is more than ``NORM_OUTLIER_FACTOR``
times the median of the other sites' changes. An update just under that,
every round, is kept: the rule stops model replacement, not a patient
attacker. ``docs/threat-model.md`` says so; this test pins the limit so that
the documentation stays true (and fails if the rule changes).
"""

from __future__ import annotations

import numpy as np
import pytest

from server.study_grid import NORM_OUTLIER_FACTOR, norm_outliers


@pytest.mark.parametrize("rounds", [1, 5, 20])
def test_an_update_just_under_the_norm_limit_is_kept_every_round(rounds: int) -> None:
    # Prepare: three honest sites, one that moves the model 9x as far
    honest = {1: 0.10, 2: 0.11, 3: 0.09}
    median = float(np.median(list(honest.values())))
    attacker = 0.9 * NORM_OUTLIER_FACTOR * median

    # Execute: the rule, round after round
    rejected = [norm_outliers({**honest, 4: attacker}) for _ in range(rounds)]

    # Assert: never rejected (the documented limit); 11x would be
    assert all(4 not in r for r in rejected)
    assert 4 in norm_outliers({**honest, 4: 1.1 * NORM_OUTLIER_FACTOR * 0.11})
