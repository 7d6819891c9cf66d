"""Choosing the federated GAN's round from the sites' FDs."""

import math

import pytest

from server.phases.gan import select_round
from server.study_run import StudyError


def test_sites_on_different_feature_scales_weigh_alike() -> None:
    # Site A's FDs are 100x B's; A prefers round 2 slightly, B round 1 clearly.
    per_site = {
        "A": {1: 101.0, 2: 99.0, 3: 100.0},
        "B": {1: 0.5, 2: 1.0, 3: 1.5},
    }

    best, scores = select_round(per_site)

    assert best == 1
    assert scores[1] < scores[2] < scores[3]


def test_a_round_a_site_missed_is_scored_by_the_others() -> None:
    per_site = {"A": {1: 2.0, 2: 1.0}, "B": {1: 1.0, 2: math.nan}}

    best, scores = select_round(per_site)

    assert best == 2 and scores[2] == pytest.approx(1.0 / 1.5)


def test_no_finite_fd_is_an_error() -> None:
    with pytest.raises(StudyError):
        select_round({"A": {1: math.nan}})
