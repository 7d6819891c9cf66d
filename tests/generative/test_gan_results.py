"""Selecting the federated GAN's round and describing the GAN phase's results."""

from __future__ import annotations

import math

import pytest

from fedbone.generative.gan_results import (
    GanResults,
    GanSelectionError,
    SiteGanResult,
    fd_by_site,
    federated_gan_results,
    select_generator_round,
)


def test_sites_on_different_feature_scales_weigh_alike() -> None:
    per_site = {"A": {1: 101.0, 2: 99.0, 3: 100.0}, "B": {1: 0.5, 2: 1.0, 3: 1.5}}

    best, scores = select_generator_round(per_site)

    assert best == 1 and scores[1] < scores[2] < scores[3]


def test_no_finite_fd_is_a_selection_error() -> None:
    with pytest.raises(GanSelectionError, match="no site reported a finite FD"):
        select_generator_round({"A": {1: math.nan}, "B": {}})


def test_fd_by_site_reads_the_gan_evaluations_only() -> None:
    rounds = [
        {"model": "gan", "kind": "evaluate", "site": "A", "round": 1, "fd": 2.0},
        {"model": "gan", "kind": "train", "site": "A", "round": 1, "loss": 1.0},
        {"model": "federated", "kind": "evaluate", "site": "A", "round": 1},
        {"model": "gan", "kind": "evaluate", "site": "B", "round": 2},
    ]

    per_site = fd_by_site(rounds, "gan")

    assert per_site["A"] == {1: 2.0}
    assert math.isnan(per_site["B"][2])


def test_federated_results_describe_the_selected_round_per_site() -> None:
    per_site = {"A": {1: 3.0, 2: 1.0}}

    results = federated_gan_results(
        ["A", "B"],
        per_site,
        (2, {1: 1.5, 2: 0.5}),
        rounds=2,
        steps=7,
        generator=("digest", "/run/gan/rounds/round-2.npz"),
    )

    assert results.to_json() == {
        "mode": "federated",
        "rounds": 2,
        "selected-round": 2,
        "relative-fd-by-round": {"1": 1.5, "2": 0.5},
        "generator-sha256": "digest",
        "generator-file": "/run/gan/rounds/round-2.npz",
        "sites": {
            "A": {
                "metrics": {
                    "best-fd": 1.0,
                    "best-step": 6.0,
                    "fd-step-3": 3.0,
                    "fd-step-6": 1.0,
                },
                "provenance": {"checkpoint-sha256": "digest", "round": "2"},
            },
            "B": {
                "metrics": {
                    "best-fd": pytest.approx(math.nan, nan_ok=True),
                    "best-step": 6.0,
                },
                "provenance": {"checkpoint-sha256": "digest", "round": "2"},
            },
        },
    }


def test_local_results_keep_the_plain_layout() -> None:
    results = GanResults(mode="local", sites={"A": SiteGanResult({"fd": 1.0}, {})})

    assert results.to_json() == {
        "mode": "local",
        "sites": {"A": {"metrics": {"fd": 1.0}, "provenance": {}}},
    }
