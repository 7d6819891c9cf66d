from __future__ import annotations

import json
import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
from lifelines import CoxPHFitter

from fedbone.outcomes.meta_analysis import (
    fit_site_cox,
    meta_analysis,
    meta_analyze_sites,
    proportional_hazards_check,
)
from fedbone.outcomes.stratified_cox import (
    CoxConvergenceWarning,
    CoxDerivatives,
    FederatedCoxPH,
    stratum_derivatives,
)
from fedbone.validation.errors import EvaluationError

ADJUSTED = ["prediction", "age", "sex"]
Sites = list[pd.DataFrame]


def make_sites(sizes: list[int], seed: int = 7, grid: float = 0.25) -> Sites:
    """Synthetic sites; times rounded to ``grid`` years so many events tie."""
    rng = np.random.default_rng(seed)
    sites = []
    for site, n in enumerate(sizes):
        prediction = rng.integers(0, 2, n).astype(float)
        age = rng.normal(68.0 + 3 * site, 9.0, n)
        sex = rng.integers(0, 2, n).astype(float)
        risk = np.exp(1.1 * prediction + 0.04 * (age - 68.0) - 0.3 * sex)
        event_time = rng.exponential(2.0 / risk)
        censor_time = rng.uniform(0.5, 5.0, n)
        time = np.minimum(event_time, censor_time)
        frame = pd.DataFrame(
            {
                "prediction": prediction,
                "age": age,
                "sex": sex,
                "time": np.ceil(time / grid) * grid,
                "event": (event_time <= censor_time).astype(float),
                "site": site,
            }
        )
        sites.append(frame)
    return sites


def federated(
    sites: Sites, columns: list[str], ties: str = "efron"
) -> Callable[[npt.NDArray[np.float64]], list[CoxDerivatives]]:
    """The federated round, simulated: every site works on its own frame."""

    def derivatives(beta: npt.NDArray[np.float64]) -> list[CoxDerivatives]:
        return [
            CoxDerivatives.from_dict(
                json.loads(
                    json.dumps(
                        stratum_derivatives(
                            site["time"], site["event"], site[columns], beta, ties
                        ).to_dict()
                    )
                )
            )
            for site in sites
        ]

    return derivatives


# lifelines stops when the log-likelihood changes by < 1e-9 relative, which leaves
# coefficients ~1e-6 short of the optimum; tighten it so the reference is exact.
TIGHT = {"precision": 1e-12, "r_precision": 1e-15}


def lifelines_stratified(sites: Sites, columns: list[str]) -> CoxPHFitter:
    pooled = pd.concat(sites, ignore_index=True)[[*columns, "time", "event", "site"]]
    return CoxPHFitter().fit(
        pooled, "time", "event", strata=["site"], fit_options=TIGHT
    )


def assert_matches_lifelines(model: FederatedCoxPH, reference: CoxPHFitter) -> None:
    np.testing.assert_allclose(model.params_, reference.params_, atol=1e-6, rtol=0)
    np.testing.assert_allclose(
        model.standard_errors_, reference.standard_errors_, rtol=1e-6
    )
    np.testing.assert_allclose(model.p_values_, reference.summary["p"], rtol=1e-4)
    np.testing.assert_allclose(
        model.confidence_intervals_, reference.confidence_intervals_, atol=1e-5
    )
    assert model.log_likelihood_ == pytest.approx(reference.log_likelihood_, abs=1e-8)


def naive_log_likelihood(
    sites: Sites, columns: list[str], beta: npt.NDArray[np.float64], ties: str
) -> float:
    """Textbook partial likelihood, one event time at a time (independent check)."""
    total = 0.0
    for site in sites:
        x = site[columns].to_numpy()
        time = site["time"].to_numpy()
        event = site["event"].to_numpy() == 1
        score = np.exp(x @ beta)
        for t in np.unique(time[event]):
            tied = event & (time == t)
            at_risk = score[time >= t].sum()
            d = int(tied.sum())
            total += float((x[tied] @ beta).sum())
            for ell in range(d):
                removed = ell / d * score[tied].sum() if ties == "efron" else 0.0
                total -= math.log(at_risk - removed)
    return total


@pytest.mark.parametrize("columns", [["prediction"], ADJUSTED], ids=["crude", "adj"])
def test_efron_equals_lifelines_stratified_on_pooled_records_with_ties(
    columns: list[str],
) -> None:
    # Prepare
    sites = make_sites([90, 140, 70])
    assert pd.concat(sites)["time"].duplicated().any()

    # Execute
    model = FederatedCoxPH().fit(federated(sites, columns), len(columns), columns)

    # Assert
    assert model.converged_
    assert_matches_lifelines(model, lifelines_stratified(sites, columns))
    assert model.n_patients_ == 300
    assert model.summary.loc["prediction", "exp(coef)"] == pytest.approx(
        math.exp(model.params_["prediction"])
    )


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_site_derivatives_match_finite_differences_of_textbook_likelihood(
    ties: str,
) -> None:
    # Prepare
    sites = make_sites([60], seed=3, grid=0.5)
    beta = np.array([0.4, 0.02, -0.2])
    step = 1e-5

    # Execute
    got = stratum_derivatives(
        sites[0]["time"], sites[0]["event"], sites[0][ADJUSTED], beta, ties
    )

    # Assert
    def ll(b: npt.NDArray[np.float64]) -> float:
        return naive_log_likelihood(sites, ADJUSTED, b, ties)

    unit = np.eye(3) * step
    gradient = [(ll(beta + e) - ll(beta - e)) / (2 * step) for e in unit]
    hessian = [
        [
            (ll(beta + a + b) - ll(beta + a - b) - ll(beta - a + b) + ll(beta - a - b))
            / (4 * step**2)
            for b in unit
        ]
        for a in unit
    ]
    assert got.log_likelihood == pytest.approx(ll(beta), abs=1e-9)
    np.testing.assert_allclose(got.gradient, gradient, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.hessian, hessian, rtol=1e-3, atol=1e-2)


def test_breslow_maximises_the_textbook_breslow_likelihood_and_differs_from_efron() -> (
    None
):
    # Prepare
    sites = make_sites([80, 100], seed=11, grid=0.5)

    # Execute
    breslow = FederatedCoxPH(ties="breslow").fit(
        federated(sites, ADJUSTED, "breslow"), 3, ADJUSTED
    )
    efron = FederatedCoxPH(ties="efron").fit(federated(sites, ADJUSTED), 3, ADJUSTED)

    # Assert
    beta = breslow.params_.to_numpy()
    best = naive_log_likelihood(sites, ADJUSTED, beta, "breslow")
    assert breslow.log_likelihood_ == pytest.approx(best, abs=1e-9)
    for direction in np.eye(3) * 1e-3:
        for moved in (beta + direction, beta - direction):
            assert naive_log_likelihood(sites, ADJUSTED, moved, "breslow") < best
    # Breslow attenuates towards zero under heavy ties.
    assert abs(breslow.params_["prediction"]) < abs(efron.params_["prediction"])


def test_breslow_equals_lifelines_when_no_times_tie() -> None:
    # Prepare: with distinct times Breslow and Efron are the same likelihood.
    sites = make_sites([70, 90], seed=5, grid=1e-9)
    assert not pd.concat(sites)["time"].duplicated().any()

    # Execute
    model = FederatedCoxPH(ties="breslow").fit(
        federated(sites, ADJUSTED, "breslow"), 3, ADJUSTED
    )

    # Assert
    assert_matches_lifelines(model, lifelines_stratified(sites, ADJUSTED))


def test_site_without_events_contributes_zero_and_fit_equals_lifelines() -> None:
    # Prepare
    sites = make_sites([90, 120, 30], seed=2)
    sites[2]["event"] = 0.0

    # Execute
    silent = stratum_derivatives(
        sites[2]["time"], sites[2]["event"], sites[2][ADJUSTED], [0.3, 0.1, 0.2]
    )
    model = FederatedCoxPH().fit(federated(sites, ADJUSTED), 3, ADJUSTED)

    # Assert
    assert silent.log_likelihood == 0.0
    assert not silent.gradient.any() and not silent.hessian.any()
    assert silent.n_patients == 30
    assert_matches_lifelines(model, lifelines_stratified(sites, ADJUSTED))


def test_covariate_constant_at_one_site_is_informed_by_the_others() -> None:
    # Prepare: one site scanned only men.
    sites = make_sites([90, 120, 60], seed=4)
    sites[1]["sex"] = 1.0

    # Execute
    at_site = stratum_derivatives(
        sites[1]["time"], sites[1]["event"], sites[1][ADJUSTED], [0.5, 0.03, -0.4]
    )
    model = FederatedCoxPH().fit(federated(sites, ADJUSTED), 3, ADJUSTED)

    # Assert
    assert at_site.gradient[2] == 0.0
    assert not at_site.hessian[2].any() and not at_site.hessian[:, 2].any()
    assert_matches_lifelines(model, lifelines_stratified(sites, ADJUSTED))


def test_covariate_constant_at_every_site_is_refused() -> None:
    # Prepare
    sites = make_sites([50, 50], seed=1)
    for site in sites:
        site["sex"] = 0.0

    # Execute
    with pytest.raises(EvaluationError) as raised:
        FederatedCoxPH().fit(federated(sites, ADJUSTED), 3, ADJUSTED)

    # Assert
    assert raised.value.codes == ["singular-information"]
    assert raised.value.problems[0].where == "sex"


def test_fit_converges_to_a_zero_score_in_few_rounds() -> None:
    # Prepare
    sites = make_sites([100, 100], seed=9)
    rounds = federated(sites, ADJUSTED)

    # Execute
    model = FederatedCoxPH().fit(rounds, 3, ADJUSTED)

    # Assert
    score = sum(d.gradient for d in rounds(model.params_.to_numpy()))
    assert model.converged_
    assert model.iterations_ <= 10
    np.testing.assert_allclose(score, 0.0, atol=1e-8)


def test_separating_covariate_warns_that_fit_did_not_converge() -> None:
    # Prepare: every event has prediction 1, every censoring prediction 0.
    sites = make_sites([60, 60], seed=6)
    for site in sites:
        site["prediction"] = site["event"]

    # Execute
    with pytest.warns(CoxConvergenceWarning):
        model = FederatedCoxPH(max_iter=15).fit(
            federated(sites, ["prediction"]), 1, ["prediction"]
        )

    # Assert
    assert not model.converged_
    assert model.params_["prediction"] > 5


def test_step_halving_rescues_a_newton_step_that_overshoots() -> None:
    # Prepare: a concave log-likelihood -sqrt(1 + (b - 2)^2) on which plain
    # Newton from 0 diverges (b - 2 -> -(b - 2)^3).
    def overshooting_site(beta: npt.NDArray[np.float64]) -> list[CoxDerivatives]:
        u = float(beta[0]) - 2.0
        root = math.sqrt(1.0 + u * u)
        return [
            CoxDerivatives(
                -root, np.array([-u / root]), np.array([[-(root**-3)]]), 10, 5, "efron"
            )
        ]

    # Execute
    model = FederatedCoxPH().fit(overshooting_site, 1)

    # Assert
    assert model.converged_
    assert model.params_["x0"] == pytest.approx(2.0, abs=1e-9)
    assert model.rounds_ > model.iterations_


def test_server_refuses_replies_made_with_other_ties_method() -> None:
    # Prepare
    sites = make_sites([40, 40])

    # Execute
    with pytest.raises(EvaluationError) as raised:
        FederatedCoxPH(ties="efron").fit(federated(sites, ADJUSTED, "breslow"), 3)

    # Assert
    assert raised.value.codes == ["ties-mismatch", "ties-mismatch"]


def test_site_inputs_are_checked_all_at_once() -> None:
    # Prepare
    times = [1.0, 2.0, -1.0]
    events = [1, 2, 0]

    # Execute
    with pytest.raises(EvaluationError) as raised:
        stratum_derivatives(times, events, [[0.0], [1.0]], [0.0], "exact")

    # Assert
    assert set(raised.value.codes) == {
        "unknown-ties",
        "length-mismatch",
        "bad-times",
        "bad-events",
        "too-few-patients",
    }


def test_derivatives_record_with_wrong_hessian_shape_is_refused() -> None:
    # Prepare
    record = stratum_derivatives(
        [1, 2, 3, 4, 5],
        [1, 0, 1, 1, 0],
        [[0, 1], [1, 0], [1, 1], [0, 0], [1, 0]],
        [0.0, 0.0],
    ).to_dict()
    record["hessian"] = [[1.0, 0.0]]

    # Execute
    with pytest.raises(EvaluationError) as raised:
        CoxDerivatives.from_dict(record)

    # Assert
    assert raised.value.codes == ["bad-shape"]


def test_meta_analysis_matches_hand_computation() -> None:
    # Prepare: weights 1/0.04 = 25, 1/0.09 = 100/9, 1/0.01 = 100.
    estimates = [0.5, 1.0, 0.2]
    variances = [0.04, 0.09, 0.01]
    total_weight = 25 + 100 / 9 + 100
    pooled = (25 * 0.5 + 100 / 9 * 1.0 + 100 * 0.2) / total_weight
    q = 25 * (0.5 - pooled) ** 2 + 100 / 9 * (1.0 - pooled) ** 2
    q += 100 * (0.2 - pooled) ** 2

    # Execute
    result = meta_analysis(estimates, variances)

    # Assert
    assert result.estimate == pytest.approx(pooled, abs=1e-12)
    assert result.se == pytest.approx(total_weight**-0.5, abs=1e-12)
    assert result.low == pytest.approx(pooled - 1.959963985 * total_weight**-0.5)
    assert result.q == pytest.approx(q, abs=1e-12)
    assert result.q_p_value == pytest.approx(math.exp(-q / 2), abs=1e-12)  # 2 df
    assert result.i_squared == pytest.approx((q - 2) / q, abs=1e-12)
    assert result.p_value == pytest.approx(
        math.erfc(abs(pooled) * total_weight**0.5 / math.sqrt(2)), abs=1e-12
    )


def test_meta_analysis_of_agreeing_sites_has_no_heterogeneity() -> None:
    # Execute
    result = meta_analysis([0.7, 0.7], [0.1, 0.3])

    # Assert
    assert result.q == pytest.approx(0.0, abs=1e-12)
    assert result.i_squared == 0.0
    assert result.estimate == pytest.approx(0.7)


def test_meta_analysis_refuses_non_positive_variance() -> None:
    with pytest.raises(EvaluationError) as raised:
        meta_analysis([0.1, 0.2], [0.1, 0.0])
    assert raised.value.codes == ["bad-values"]


def test_site_fits_equal_lifelines_and_pool_by_inverse_variance() -> None:
    # Prepare
    sites = make_sites([120, 150], seed=8)
    sites[1]["sex"] = 0.0

    # Execute
    fits = [
        fit_site_cox(sites[0]["time"], sites[0]["event"], sites[0][ADJUSTED], ADJUSTED),
        fit_site_cox(
            sites[1]["time"], sites[1]["event"], sites[1][ADJUSTED[:2]], ADJUSTED[:2]
        ),
    ]
    pooled = meta_analyze_sites([type(f).from_dict(f.to_dict()) for f in fits])

    # Assert
    own = CoxPHFitter().fit(
        sites[0][[*ADJUSTED, "time", "event"]], "time", "event", fit_options=TIGHT
    )
    np.testing.assert_allclose(fits[0].params, own.params_, atol=1e-6)
    np.testing.assert_allclose(fits[0].variances, own.standard_errors_**2, rtol=1e-5)
    assert pooled["sex"].n_studies == 1
    assert pooled["sex"].estimate == pytest.approx(fits[0].params[2])
    assert pooled["prediction"].n_studies == 2
    assert pooled["prediction"].estimate == pytest.approx(
        meta_analysis(
            [f.params[0] for f in fits], [f.variances[0] for f in fits]
        ).estimate
    )


def test_site_fit_refuses_a_covariate_constant_at_the_site() -> None:
    sites = make_sites([60])
    sites[0]["sex"] = 1.0
    with pytest.raises(EvaluationError) as raised:
        fit_site_cox(sites[0]["time"], sites[0]["event"], sites[0][ADJUSTED], ADJUSTED)
    assert raised.value.codes == ["no-variance"]
    assert raised.value.problems[0].where == "sex"


def test_proportional_hazards_check_flags_crossing_hazards_only() -> None:
    # Prepare: group 1 dies early or not at all (Weibull shape 0.5 vs 3).
    rng = np.random.default_rng(12)
    n = 300
    group = rng.integers(0, 2, n).astype(float)
    noise = rng.normal(size=n)
    time = np.where(group == 1, rng.weibull(0.5, n), rng.weibull(3.0, n))
    events = np.ones(n)
    covariates = np.column_stack([group, noise])

    # Execute
    check = proportional_hazards_check(time, events, covariates, ["group", "noise"])

    # Assert
    assert check.p_values["group"] < 1e-6
    assert check.p_values["noise"] > 0.01
    assert set(check.to_dict()["test-statistics"]) == {"group", "noise"}
