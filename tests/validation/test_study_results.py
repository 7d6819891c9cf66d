"""The study's validation tables from the sites' plain replies."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedbone.validation.histograms import score_histograms
from fedbone.validation.pooled_delong import paired_component_sums
from fedbone.validation.pooled_roc import pooled_paired_test, pooled_roc
from fedbone.validation.study_results import (
    SiteValidation,
    comparison_pairs,
    pooled_comparisons,
    pooled_histograms,
    pooled_rocs,
    private_site_row,
    site_tables,
)

MODELS = ("federated", "local-A")


def _site(site: str, seed: int, external: bool = False) -> tuple[SiteValidation, dict]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 60)
    scores = {
        "federated": np.clip(0.4 * labels + 0.6 * rng.random(60), 0, 1),
        "local-A": rng.random(60),
    }
    reply = SiteValidation(
        site=site,
        external=external,
        histograms={m: score_histograms(labels, scores[m], bins=1000) for m in MODELS},
        metrics={m: {"auc": 0.5 + seed / 10} for m in MODELS},
        paired={("federated", "local-A"): {"p-value": 0.01}},
    )
    return reply, {"labels": labels, **scores}


def test_pairs_compare_federated_with_baselines_and_synthetic_with_real() -> None:
    names = ["federated", "local-A", "pooled", "local-A-syn1", "local-B-syn2"]

    pairs = comparison_pairs(names)

    assert pairs == [
        ("federated", "local-A"),
        ("federated", "pooled"),
        ("federated", "local-A-syn1"),
        ("federated", "local-B-syn2"),
        ("local-A-syn1", "local-A"),
    ]


def test_exact_site_tables_keep_the_sites_figures() -> None:
    sites = [_site("A", 1)[0], _site("B", 2)[0]]

    per_site, site_pairs = site_tables(sites, MODELS, [("federated", "local-A")])

    assert per_site[0] == {"site": "A", "model": "federated", "auc": 0.6}
    assert [row["site"] for row in per_site] == ["A", "A", "B", "B"]
    assert site_pairs[1] == {
        "site": "B",
        "model_a": "federated",
        "model_b": "local-A",
        "p-value": 0.01,
    }


def test_private_site_tables_are_computed_from_the_histograms() -> None:
    site, _ = _site("A", 1)

    per_site, site_pairs = site_tables(
        [site], MODELS, [("federated", "local-A")], private_threshold=0.5
    )

    own = pooled_roc([site.histograms["federated"]], threshold=0.5)
    assert per_site[0] == private_site_row(
        "A", "federated", site.histograms["federated"], 0.5
    )
    assert per_site[0]["auc"] == pytest.approx(own.auc)
    assert per_site[0]["n"] == 60 and math.isnan(per_site[0]["specificity-low"])
    assert site_pairs == []


def test_pooled_rocs_and_paired_tests_use_every_given_site() -> None:
    (a, data_a), (b, data_b) = _site("A", 1), _site("B", 2, external=True)

    pooled = pooled_rocs([a, b], MODELS)
    summed = pooled_histograms([a, b], MODELS)
    sums = {
        ("federated", "local-A"): [
            paired_component_sums(
                d["labels"],
                d["federated"],
                d["local-A"],
                summed["federated"],
                summed["local-A"],
            )
            for d in (data_a, data_b)
        ]
    }
    (comparison,) = pooled_comparisons([("federated", "local-A")], sums, summed)

    assert pooled["federated"].n_positive == int(
        data_a["labels"].sum() + data_b["labels"].sum()
    )
    expected = pooled_paired_test(
        sums[("federated", "local-A")], summed["federated"], summed["local-A"]
    )
    assert comparison["model_a"] == "federated"
    assert comparison["test"].p_value == pytest.approx(expected.p_value)
