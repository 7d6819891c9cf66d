"""Finding 3: validation histograms had no bin limit and escaped small-cell rules.

``bins=10**6`` returned every patient's score to 1e-6; with two positives the
metrics were withheld but the histograms still left. The site's policy now
bounds the bins (checked before scoring, and again by the guard), and a class
of 1 to ``min_patients_per_class - 1`` scans withholds the histograms too.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from adversary import (
    egress_entries,
    model,
    send,
    validate_message,
    write_cohort_cache,
    write_site,
)
from flwr.app import MetricRecord, RecordDict

from fedbone.federation.egress.guard import EgressGuard, EgressRefused, SiteTaskError
from fedbone.federation.egress.reply_rules import RequestSnapshot


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cohort_cache(tmp_path_factory.mktemp("cohort"), n_patients=24)


@pytest.fixture(scope="module")
def three_positives(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A split with 3 positives (rows 1, 3, 5 of 6 patients, one positive less)."""
    return write_cohort_cache(tmp_path_factory.mktemp("small"), n_patients=6)


def test_a_million_bins_are_refused_before_any_scoring(
    tmp_path: Path, cache_dir: Path
) -> None:
    # Prepare
    site = write_site(tmp_path / "site", cache_dir)

    # Execute
    with pytest.raises(SiteTaskError, match="too-many-bins"):
        send(validate_message(model(), bins=10**6), site)

    # Assert
    [entry] = egress_entries(site)
    assert entry["verdict"] == "error" and "too-many-bins" in entry["reason"]


def test_the_site_can_lower_the_bound(tmp_path: Path, cache_dir: Path) -> None:
    site = write_site(tmp_path / "site", cache_dir, policy={"max_histogram_bins": 1000})

    with pytest.raises(SiteTaskError, match="too-many-bins"):
        send(validate_message(model(), bins=2000), site)


def test_an_allowed_request_still_gets_its_histograms(
    tmp_path: Path, cache_dir: Path
) -> None:
    site = write_site(tmp_path / "site", cache_dir)

    reply = send(validate_message(model(), bins=1000), site)

    histograms = reply.content.metric_records["histograms-federated"]
    assert sum(histograms["positives"]) == 12 and sum(histograms["negatives"]) == 12


def test_a_small_class_withholds_the_histograms_with_the_metrics(
    tmp_path: Path, three_positives: Path
) -> None:
    # Prepare: 3 positives, a site that wants at least 5 per class
    site = write_site(tmp_path / "site", three_positives)

    # Execute
    reply = send(validate_message(model(), bins=1000), site)

    # Assert: nothing about the three leaves; the withholding is logged
    histograms = reply.content.metric_records["histograms-federated"]
    assert sum(histograms["positives"]) == 0 == sum(histograms["negatives"])
    assert reply.content.metric_records["metrics-federated"]["n-pos"] == -1
    suppressed = reply.content.config_records["suppressed"]["keys"]
    assert "histograms-federated" in suppressed
    assert "suppressed" in egress_entries(site)[-1]["reason"]


def test_the_guard_refuses_a_histogram_longer_than_the_policy() -> None:
    # Prepare: a reply that would slip past the site's check
    request = RequestSnapshot(
        "query.validate", 1, "run", "validate", {}, frozenset({"m"})
    )
    reply = RecordDict(
        {
            "metrics-m": MetricRecord({"n": 20, "n-pos": 10, "n-neg": 10}),
            "histograms-m": MetricRecord(
                {"positives": [1] * 10 + [0] * 4990, "negatives": [1] * 10 + [0] * 4990}
            ),
        }
    )

    # Execute
    with pytest.raises(EgressRefused) as refused:
        EgressGuard(max_histogram_bins=2000).screen(request, reply)

    # Assert
    assert refused.value.codes == ["long-histogram", "long-histogram"]
