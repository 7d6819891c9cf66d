"""Finding 10: a site with a budget could not insist on noisy statistics.

With ``privacy.require_dp_statistics`` the site refuses exact histograms,
survival counts, paired DeLong components and Cox fits, before computing
them; the guard refuses them again should a handler produce them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from adversary import (
    egress_entries,
    message,
    model,
    outcomes_message,
    send,
    validate_message,
    write_cohort_cache,
    write_site,
)
from flwr.app import MetricRecord, RecordDict

from fedbone.federation.egress.guard import EgressGuard, EgressRefused, SiteTaskError
from fedbone.federation.egress.reply_rules import RequestSnapshot

PRIVATE = {"budget": {"epsilon": 20.0}, "require_dp_statistics": True}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cohort_cache(tmp_path_factory.mktemp("cohort"), n_patients=24)


@pytest.fixture
def site(tmp_path: Path, cache_dir: Path) -> Path:
    return write_site(tmp_path / "site", cache_dir, privacy=PRIVATE)


def test_exact_validation_is_refused(site: Path) -> None:
    with pytest.raises(SiteTaskError, match="dp-statistics-required"):
        send(validate_message(model()), site)

    assert "dp-statistics-required" in egress_entries(site)[-1]["reason"]


def test_exact_outcomes_are_refused_and_no_cohort_is_kept(site: Path) -> None:
    with pytest.raises(SiteTaskError, match="dp-statistics-required"):
        send(outcomes_message(model()), site)

    assert not list(site.parent.rglob("outcome-cohort.npz"))


def test_cox_rounds_are_refused(site: Path) -> None:
    attack = message(
        "query.outcome_cox",
        "outcomes",
        endpoint="death",
        **{"cox-model": "crude", "beta": [0.0], "ties": "efron"},
    )

    with pytest.raises(SiteTaskError, match="dp-statistics-required"):
        send(attack, site)


def test_noisy_validation_is_still_answered(site: Path) -> None:
    reply = send(validate_message(model(), **{"dp-stat-epsilon": 1.0}), site)

    assert "noisy-histograms-federated" in reply.content.metric_records
    assert reply.content.metric_records["privacy"]["epsilon-spent"] > 0


def test_the_guard_refuses_exact_statistics_at_such_a_site() -> None:
    request = RequestSnapshot("query.validate", 1, "r", "validate", {}, frozenset("m"))
    reply = RecordDict({"metrics-m": MetricRecord({"n": 40, "n-pos": 20, "n-neg": 20})})

    with pytest.raises(EgressRefused) as refused:
        EgressGuard(require_private_statistics=True).screen(request, reply)

    assert "dp-statistics-required" in refused.value.codes
