from __future__ import annotations

import json
import math

import numpy as np
import numpy.typing as npt
import pytest
from lifelines import KaplanMeierFitter
from lifelines.statistics import logrank_test, multivariate_logrank_test

from fedbone.outcomes.kaplan_meier import FederatedKaplanMeier, FederatedLogRank
from fedbone.outcomes.survival_grid import SiteSurvivalCounts, TimeGrid, site_counts
from fedbone.validation.errors import EvaluationError

Records = tuple[npt.NDArray[np.float64], npt.NDArray[np.int64], npt.NDArray[np.str_]]

RESOLUTION = 30.0
HORIZON = 720.0
GRID = TimeGrid(RESOLUTION, HORIZON)


def site_records(seed: int, n: int, hazard_ratio: float, groups: int = 2) -> Records:
    """Exponential survival, group k with hazard ratio ** k, some past the horizon."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % groups
    times = rng.exponential(400.0 / hazard_ratio**labels)
    censoring = rng.uniform(0.0, 900.0, n)
    events = (times <= censoring).astype(np.int64)
    return np.minimum(times, censoring), events, labels.astype(str)


def silent_site(n: int) -> Records:
    """Every patient censored, at a handful of administrative dates (no events)."""
    times = np.tile([60.0, 95.0, 150.0, 200.0, 330.0], n // 5)
    labels = np.arange(times.size) % 2
    return times, np.zeros(times.size, dtype=np.int64), labels.astype(str)


def federation(groups: int = 2) -> list[Records]:
    return [
        site_records(10, 120, 2.0, groups),
        site_records(11, 300, 1.6, groups),
        silent_site(40),
    ]


def rounded(records: Records) -> Records:
    """The records as lifelines should see them: rounded up, horizon-censored."""
    times, events, labels = records
    intervals = np.maximum(1, np.ceil(times / RESOLUTION))
    beyond = intervals > HORIZON / RESOLUTION
    intervals = np.minimum(intervals, HORIZON / RESOLUTION)
    return intervals * RESOLUTION, np.where(beyond, 0, events), labels


def pooled_rounded(sites: list[Records]) -> Records:
    times, events, labels = zip(*(rounded(site) for site in sites), strict=True)
    return np.concatenate(times), np.concatenate(events), np.concatenate(labels)


def counts_of(sites: list[Records]) -> list[SiteSurvivalCounts]:
    return [site_counts(*site, GRID) for site in sites]


def test_pooled_curves_and_bands_equal_lifelines_on_rounded_records() -> None:
    # Prepare
    sites = federation()
    times, events, labels = pooled_rounded(sites)

    # Execute
    fitted = FederatedKaplanMeier().fit(counts_of(sites))

    # Assert: survival, Greenwood variance and log(-log) band at every lifelines time
    for group in ("0", "1"):
        chosen = labels == group
        reference = KaplanMeierFitter().fit(times[chosen], events[chosen])
        timeline = reference.timeline
        expected = reference.survival_function_.to_numpy()[:, 0]
        ours = fitted.survival_function_.loc[timeline, group].to_numpy()
        np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-9)
        greenwood = expected**2 * reference._cumulative_sq_.to_numpy()
        np.testing.assert_allclose(
            fitted.variance_.loc[timeline, group], greenwood, rtol=0, atol=1e-9
        )
        band = fitted.confidence_interval_.loc[
            timeline, [f"{group}_lower_0.95", f"{group}_upper_0.95"]
        ]
        np.testing.assert_allclose(
            band.to_numpy(), reference.confidence_interval_.to_numpy(), atol=1e-9
        )


def test_curve_that_reaches_zero_matches_lifelines() -> None:
    # Prepare: every patient of a small cohort dies, with ties on the grid
    times = np.array([10.0, 20.0, 25.0, 40.0, 45.0, 50.0, 70.0, 80.0, 85.0, 89.0])
    events = np.ones(10, dtype=np.int64)
    labels = np.array(["a"] * 10)
    counts = site_counts(times, events, labels, GRID)
    reference_times, reference_events, _ = rounded((times, events, labels))

    # Execute
    fitted = FederatedKaplanMeier().fit([counts])

    # Assert
    reference = KaplanMeierFitter().fit(reference_times, reference_events)
    timeline = reference.timeline
    np.testing.assert_allclose(
        fitted.survival_function_.loc[timeline, "a"],
        reference.survival_function_.to_numpy()[:, 0],
        atol=1e-9,
    )
    np.testing.assert_allclose(
        fitted.confidence_interval_.loc[timeline].to_numpy(),
        reference.confidence_interval_.to_numpy(),
        atol=1e-9,
    )


def test_pooled_logrank_equals_lifelines_on_rounded_records() -> None:
    # Prepare
    sites = federation()
    times, events, labels = pooled_rounded(sites)

    # Execute
    fitted = FederatedLogRank().fit(counts_of(sites))

    # Assert
    first, second = labels == "0", labels == "1"
    reference = logrank_test(times[first], times[second], events[first], events[second])
    assert math.isclose(fitted.test_statistic_, reference.test_statistic, abs_tol=1e-9)
    assert math.isclose(fitted.p_value_, reference.p_value, abs_tol=1e-9)
    assert fitted.observed_["1"] == events[second].sum()


def test_three_group_logrank_equals_lifelines_multivariate_test() -> None:
    # Prepare
    sites = [site_records(20, 150, 1.5, groups=3), site_records(21, 240, 1.3, groups=3)]
    times, events, labels = pooled_rounded(sites)

    # Execute
    fitted = FederatedLogRank().fit(counts_of(sites))

    # Assert
    reference = multivariate_logrank_test(times, labels, events)
    assert fitted.degrees_of_freedom_ == 2
    assert math.isclose(fitted.test_statistic_, reference.test_statistic, abs_tol=1e-9)
    assert math.isclose(fitted.p_value_, reference.p_value, abs_tol=1e-9)


def test_stratified_logrank_of_one_site_is_the_plain_logrank() -> None:
    # Prepare
    site = site_records(30, 200, 1.8)
    times, events, labels = rounded(site)

    # Execute
    fitted = FederatedLogRank(stratified=True).fit(counts_of([site]))

    # Assert
    reference = multivariate_logrank_test(times, labels, events)
    assert math.isclose(fitted.test_statistic_, reference.test_statistic, abs_tol=1e-9)


def stratified_by_patient_loops(sites: list[Records]) -> float:
    """Textbook stratified log-rank for two groups, one distinct time at a time."""
    difference = variance = 0.0
    for site in sites:
        times, events, labels = rounded(site)
        for t in np.unique(times[events == 1]):
            at_risk = times >= t
            dying = at_risk & (times == t) & (events == 1)
            n, d = at_risk.sum(), dying.sum()
            n1, d1 = (at_risk & (labels == "1")).sum(), (dying & (labels == "1")).sum()
            difference += d1 - d * n1 / n
            if n > 1:
                variance += d * (n1 / n) * (1 - n1 / n) * (n - d) / (n - 1)
    return difference**2 / variance


def test_stratified_logrank_equals_a_per_patient_computation() -> None:
    # Prepare: sites with different baseline hazards and group balance
    sites = [site_records(40, 150, 2.0), site_records(41, 90, 1.2), silent_site(30)]
    times, events, labels = site_records(42, 200, 1.5)
    late = (times * 0.4, events, labels)
    sites.append(late)

    # Execute
    stratified = FederatedLogRank(stratified=True).fit(counts_of(sites))
    pooled = FederatedLogRank().fit(counts_of(sites))

    # Assert: equal to the loops, and different from ignoring the sites
    expected = stratified_by_patient_loops(sites)
    assert math.isclose(stratified.test_statistic_, expected, rel_tol=1e-12)
    assert abs(stratified.test_statistic_ - pooled.test_statistic_) > 1e-3


def test_results_are_the_same_after_transport_as_dicts() -> None:
    # Prepare
    counts = counts_of(federation())
    sent = [json.loads(json.dumps(site.to_dict())) for site in counts]

    # Execute
    received = [SiteSurvivalCounts.from_dict(data) for data in sent]

    # Assert
    before = FederatedLogRank(stratified=True).fit(counts).test_statistic_
    after = FederatedLogRank(stratified=True).fit(received).test_statistic_
    assert after == before


def test_logrank_with_one_group_is_refused() -> None:
    # Prepare
    times, events, _ = site_records(50, 40, 1.0)
    counts = site_counts(times, events, np.zeros(40, dtype=int), GRID)

    # Execute
    with pytest.raises(EvaluationError) as raised:
        FederatedLogRank().fit([counts])

    # Assert
    assert raised.value.codes == ["one-group"]


def test_no_sites_is_refused() -> None:
    # Prepare / Execute
    with pytest.raises(EvaluationError) as raised:
        FederatedKaplanMeier().fit([])

    # Assert
    assert raised.value.codes == ["no-sites"]
