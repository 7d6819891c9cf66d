"""The centre's enhancement tables, from the sums and histograms sites send.

Each table must equal what the concatenated per-scan values would give: the
quality means and SDs, Bland-Altman of the hottest focus, and the paired
DeLong test of enhanced against standard scans (exactly, on the binned
scores). A site whose records the egress guard withheld is left out.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from flwr.app import MetricRecord, RecordDict

from fedbone.enhance.agreement import LIMITS_Z, AgreementSums
from fedbone.enhance.study_results import (
    MEASURES,
    SiteEnhanceReply,
    agreement_rows,
    comparison_pairs,
    equivalence_rows,
    holding_sites,
    pooled_score_histograms,
    quality_rows,
)
from fedbone.federation.egress.guard import EgressGuard
from fedbone.federation.egress.reply_rules import RequestSnapshot
from fedbone.validation.delong import delong_paired_test
from fedbone.validation.histograms import bin_indices, score_histograms
from fedbone.validation.pooled_roc import paired_component_sums, pooled_roc

BINS = 1000
SITES = {"A": (40, 1), "B": (25, 2), "C": (60, 3)}  # scans, seed
PAIR = ("dncnn-2x", "standard-2x")


def _scans(n: int, seed: int) -> dict[str, np.ndarray]:
    """One site's per-scan values: labels, quality, focus counts and scores."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 3 == 0).astype(np.int64)
    rng.shuffle(labels)
    signal = labels * 1.2 + rng.normal(size=n)
    focus = rng.uniform(800, 4000, size=n)
    return {
        "labels": labels,
        "psnr": rng.normal(30 + seed, 2.0, n),
        "ssim": rng.uniform(0.7, 0.95, n),
        "ms-ssim": rng.uniform(0.8, 0.99, n),
        "perceptual": rng.gamma(2.0, 0.01, n),
        "x": focus,
        "y": 0.93 * focus + rng.normal(0, 60, n),
        "standard": 1 / (1 + np.exp(-(signal + rng.normal(0, 0.3, n)))),
        "dncnn": 1 / (1 + np.exp(-(signal + rng.normal(0, 1.0, n)))),
    }


def _records(scans: dict[str, np.ndarray], fd: float) -> dict[str, MetricRecord]:
    """What a site sends for level 2x (as ``SiteEnhancement.evaluate`` makes it)."""
    labels = scans["labels"]
    counts = {
        "n": len(labels),
        "n-pos": int(labels.sum()),
        "n-neg": int((labels == 0).sum()),
    }
    quality = {
        f"{part}-{measure}": float(np.sum(scans[measure] ** power))
        for measure in MEASURES
        for part, power in (("sum", 1), ("sumsq", 2))
    }
    positives = labels == 1
    agreement = AgreementSums.of(scans["x"][positives], scans["y"][positives])
    records = {
        "metrics-standard-2x": MetricRecord(counts),
        "metrics-dncnn-2x": MetricRecord({**counts, **quality, "fd": fd}),
        "agreement-dncnn-2x": MetricRecord(
            {**agreement.to_dict(), "n-pos": int(positives.sum())}
        ),
    }
    for image_set, key in (("standard-2x", "standard"), ("dncnn-2x", "dncnn")):
        histograms = score_histograms(labels, scans[key], bins=BINS).to_dict()
        records[f"histograms-{image_set}"] = MetricRecord(histograms)
    return records


def _reply(site: str, records: dict[str, MetricRecord]) -> SiteEnhanceReply:
    return SiteEnhanceReply.of(site, {n: dict(r.items()) for n, r in records.items()})


@pytest.fixture(scope="module")
def sites() -> dict[str, dict[str, np.ndarray]]:
    return {site: _scans(n, seed) for site, (n, seed) in SITES.items()}


@pytest.fixture(scope="module")
def replies(sites: dict[str, dict[str, np.ndarray]]) -> list[SiteEnhanceReply]:
    return [
        _reply(site, _records(scans, fd=0.1 * (i + 1)))
        for i, (site, scans) in enumerate(sites.items())
    ]


def _withheld_reply() -> SiteEnhanceReply:
    """A site with two positives, through the real guard: everything withheld."""
    labels = np.zeros(30, dtype=np.int64)
    labels[:2] = 1
    records = _records({**_scans(30, 9), "labels": labels}, fd=5.0)
    request = RequestSnapshot(
        "query.enhance_evaluate", 1, "run", "enhance", {}, frozenset()
    )
    screened, verdict = EgressGuard().screen(request, RecordDict(records))
    assert set(verdict.suppressed) == set(records)
    return _reply("D", dict(screened.metric_records.items()))


def _concatenated(
    sites: dict[str, dict[str, np.ndarray]], key: str, positives: bool = False
) -> np.ndarray:
    parts = []
    for scans in sites.values():
        values = scans[key]
        parts.append(values[scans["labels"] == 1] if positives else values)
    return np.concatenate(parts)


# -- quality ------------------------------------------------------------------


def test_pooled_quality_equals_the_concatenated_scans(
    sites: dict[str, dict[str, np.ndarray]], replies: list[SiteEnhanceReply]
) -> None:
    (row,) = quality_rows(replies)

    assert (row["image_set"], row["method"], row["level"]) == (
        "dncnn-2x",
        "dncnn",
        "2x",
    )
    assert row["n"] == sum(n for n, _ in SITES.values()) and row["sites"] == 3
    for measure in MEASURES:
        values = _concatenated(sites, measure)
        assert row[measure] == pytest.approx(values.mean(), rel=1e-9)
        assert row[f"{measure}_sd"] == pytest.approx(values.std(ddof=1), rel=1e-6)


def test_pooled_fd_is_the_scan_weighted_mean_of_the_sites() -> None:
    replies = [
        _reply("A", _records(_scans(40, 1), fd=0.1)),
        _reply("B", _records(_scans(10, 2), fd=0.6)),
    ]

    (row,) = quality_rows(replies)

    assert row["fd"] == pytest.approx((40 * 0.1 + 10 * 0.6) / 50)
    assert row["fd_by_site"] == {"A": 0.1, "B": 0.6}


def test_withheld_records_are_left_out_of_quality_and_agreement(
    replies: list[SiteEnhanceReply],
) -> None:
    withheld = _withheld_reply()

    (quality,) = quality_rows([*replies, withheld])
    (agreement,) = agreement_rows([*replies, withheld])

    assert quality == quality_rows(replies)[0]
    assert agreement == agreement_rows(replies)[0]
    assert quality_rows([withheld]) == [] and agreement_rows([withheld]) == []


def test_standard_scans_have_no_quality_row(replies: list[SiteEnhanceReply]) -> None:
    names = {row["image_set"] for row in quality_rows(replies)}

    assert names == {"dncnn-2x"}


# -- agreement ----------------------------------------------------------------


def test_pooled_agreement_is_bland_altman_of_the_concatenated_foci(
    sites: dict[str, dict[str, np.ndarray]], replies: list[SiteEnhanceReply]
) -> None:
    x = _concatenated(sites, "x", positives=True)
    y = _concatenated(sites, "y", positives=True)
    difference = y - x

    (row,) = agreement_rows(replies)

    sd = difference.std(ddof=1)
    assert row["n"] == len(x)
    assert row["bias"] == pytest.approx(difference.mean(), rel=1e-9)
    assert row["sd"] == pytest.approx(sd, rel=1e-6)
    assert row["lower"] == pytest.approx(difference.mean() - LIMITS_Z * sd, rel=1e-6)
    assert row["upper"] == pytest.approx(difference.mean() + LIMITS_Z * sd, rel=1e-6)
    assert row["pearson_r"] == pytest.approx(np.corrcoef(x, y)[0, 1], rel=1e-6)
    assert row["sums"] == pytest.approx(AgreementSums.of(x, y).to_dict(), rel=1e-9)


# -- which comparisons --------------------------------------------------------


def test_every_image_set_is_compared_with_the_standard_scans_of_its_level() -> None:
    histograms = score_histograms(np.array([0, 1]), np.array([0.2, 0.7]), bins=BINS)
    names_a = ["standard-2x", "fast-2x", "dncnn-2x", "dncnn-3x"]
    names_b = ["standard-2x-real", "dncnn-2x-real", "standard-3x", "gaussian-4x"]
    replies = [
        SiteEnhanceReply(site, {}, {}, {name: histograms for name in names})
        for site, names in (("A", names_a), ("B", names_b))
    ]

    pairs = comparison_pairs(replies)

    assert pairs == [
        ("dncnn-2x", "standard-2x"),
        ("dncnn-2x-real", "standard-2x-real"),
        ("dncnn-3x", "standard-3x"),
        ("fast-2x", "standard-2x"),
    ]


# -- diagnostic equivalence ---------------------------------------------------


def _equivalence(
    sites: dict[str, dict[str, np.ndarray]],
    replies: list[SiteEnhanceReply],
    margin: float,
) -> dict[str, Any]:
    """The centre's two exchanges, each site's part computed as it would."""
    holders = holding_sites(replies, PAIR)
    pooled = pooled_score_histograms(replies, PAIR)
    sums = [
        paired_component_sums(
            sites[reply.site]["labels"],
            sites[reply.site]["dncnn"],
            sites[reply.site]["standard"],
            pooled[PAIR[0]],
            pooled[PAIR[1]],
        )
        for reply in holders
    ]
    (row,) = equivalence_rows(
        [PAIR],
        {PAIR: (pooled[PAIR[0]], pooled[PAIR[1]])},
        {PAIR: sums},
        margin=margin,
    )
    return row


def test_pooled_delong_equals_delong_on_the_binned_scores(
    sites: dict[str, dict[str, np.ndarray]], replies: list[SiteEnhanceReply]
) -> None:
    labels = _concatenated(sites, "labels")
    enhanced = _concatenated(sites, "dncnn")
    standard = _concatenated(sites, "standard")

    row = _equivalence(sites, replies, margin=0.05)

    binned = delong_paired_test(
        labels, bin_indices(enhanced, BINS), bin_indices(standard, BINS)
    )
    raw = delong_paired_test(labels, enhanced, standard)
    assert row["difference"] == pytest.approx(binned.difference, abs=1e-12)
    assert row["se"] == pytest.approx(binned.se, rel=1e-9)
    assert row["p_value"] == pytest.approx(binned.p_value, rel=1e-6)
    assert row["difference"] == pytest.approx(raw.difference, abs=2e-3)
    assert row["se"] == pytest.approx(raw.se, rel=0.02)
    assert row["auc"] == pytest.approx(binned.auc_a, abs=1e-12)
    assert row["auc_standard"] == pytest.approx(binned.auc_b, abs=1e-12)
    assert (row["n_positive"], row["n_negative"]) == (
        int(labels.sum()),
        int((labels == 0).sum()),
    )
    assert row["sites"] == 3 and row["reference"] == "standard-2x"


def test_the_non_inferiority_verdict_follows_the_margin(
    sites: dict[str, dict[str, np.ndarray]], replies: list[SiteEnhanceReply]
) -> None:
    # Prepare: the lower bound of the difference at a loose margin
    lower = _equivalence(sites, replies, margin=0.5)["lower_bound"]
    assert -0.5 < lower < -0.02

    # Execute
    loose = _equivalence(sites, replies, margin=-lower + 0.01)
    strict = _equivalence(sites, replies, margin=-lower - 0.01)

    # Assert
    assert loose["non_inferior"] and loose["noninferiority_p"] < 0.05
    assert not strict["non_inferior"] and strict["noninferiority_p"] > 0.05
    assert loose["lower_bound"] == strict["lower_bound"] == lower


def test_a_withheld_site_is_left_out_of_the_pooled_test(
    sites: dict[str, dict[str, np.ndarray]], replies: list[SiteEnhanceReply]
) -> None:
    withheld = _withheld_reply()

    holders = holding_sites([*replies, withheld], PAIR)
    pooled = pooled_score_histograms([*replies, withheld], PAIR)

    assert [reply.site for reply in holders] == ["A", "B", "C"]
    expected = pooled_score_histograms(replies, PAIR)
    for name in PAIR:
        assert pooled[name].to_dict() == expected[name].to_dict()
    row = _equivalence(sites, [*replies, withheld], margin=0.05)
    assert row == _equivalence(sites, replies, margin=0.05)
    assert not math.isnan(row["se"])
    assert pooled_roc([pooled[PAIR[0]]]).auc == pytest.approx(row["auc"])


def test_a_comparison_without_component_sums_gives_no_row(
    replies: list[SiteEnhanceReply],
) -> None:
    pooled = pooled_score_histograms(replies, PAIR)

    rows = equivalence_rows(
        [PAIR], {PAIR: (pooled[PAIR[0]], pooled[PAIR[1]])}, {PAIR: []}, margin=0.05
    )

    assert rows == []
