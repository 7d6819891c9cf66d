"""Pooled Kaplan-Meier curves and log-rank tests from per-site grid counts.

Runs at the server on :class:`~fedbone.outcomes.survival_grid.SiteSurvivalCounts`
only. The results equal lifelines' ``KaplanMeierFitter`` and
``multivariate_logrank_test`` run on the pooled records rounded to the grid:
Greenwood variance with lifelines' convention (a term with every patient at risk
dying counts 0) and its default log(-log) ("exponential Greenwood") 95% band.
The site-stratified log-rank test sums each site's observed-minus-expected
vector and hypergeometric covariance, so case mix that differs between sites
does not masquerade as a group effect.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats

from fedbone.errors import Problem
from fedbone.outcomes.survival_grid import SiteSurvivalCounts, pool_site_counts
from fedbone.validation.errors import EvaluationError

__all__ = ["FederatedKaplanMeier", "FederatedLogRank", "logrank_components"]

FloatArray = npt.NDArray[np.float64]


class FederatedKaplanMeier:
    """Kaplan-Meier estimate per group from the pooled counts of every site.

    Parameters
    ----------
    alpha
        1 - coverage of the confidence band (default 0.05 for 95%).

    Attributes
    ----------
    survival_function_ : pandas.DataFrame
        Survival per group (columns) at every grid time from 0 (index, days).
    variance_ : pandas.DataFrame
        Greenwood variance of the survival, same layout.
    confidence_interval_ : pandas.DataFrame
        Columns ``"<group>_lower_0.95"`` and ``"<group>_upper_0.95"``
        (lifelines' names), same index.
    at_risk_ : pandas.DataFrame
        Patients at risk just before every grid time, per group.
    """

    def __init__(self, alpha: float = 0.05) -> None:
        if not 0.0 < alpha < 1.0:
            EvaluationError.raise_if_any(
                "FederatedKaplanMeier",
                [
                    Problem(
                        "bad-alpha", f"alpha={alpha!r}; use 0 < alpha < 1, e.g. 0.05"
                    )
                ],
            )
        self.alpha = alpha

    def fit(self, sites: Sequence[SiteSurvivalCounts]) -> FederatedKaplanMeier:
        """Pool the sites' counts and estimate the curves.

        Parameters
        ----------
        sites
            Every site's counts, all on the same grid.

        Returns
        -------
        FederatedKaplanMeier
            ``self``, fitted.

        Raises
        ------
        EvaluationError
            ``no-sites`` or ``grid-mismatch``.
        """
        pooled = pool_site_counts(sites)
        index = pd.Index(pooled.grid.times, name="timeline")
        z = stats.norm.ppf(1.0 - self.alpha / 2.0)
        level = f"{1.0 - self.alpha:g}"
        survival, variance, at_risk, bounds = {}, {}, {}, {}
        for name, counts in pooled.groups.items():
            # Prepend interval 0 (time 0: nobody has left yet) so row k is time k*r.
            events = np.concatenate(([0], counts.events)).astype(np.float64)
            leaving = np.concatenate(([0], counts.events + counts.censored))
            risk = counts.n_at_risk - (np.cumsum(leaving) - leaving).astype(np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                factor = np.where(risk > 0, 1.0 - events / risk, 1.0)
                term = events / (risk * (risk - events))
            # lifelines drops the infinite term of a grid point where all die.
            term = np.where(np.isfinite(term), term, 0.0)
            curve = np.cumprod(factor).astype(np.float64)
            greenwood = np.cumsum(term)
            lower, upper = _log_log_band(curve, greenwood, z)
            survival[name] = curve
            variance[name] = curve**2 * greenwood
            at_risk[name] = risk
            bounds[f"{name}_lower_{level}"] = lower
            bounds[f"{name}_upper_{level}"] = upper
        self.survival_function_ = pd.DataFrame(survival, index=index)
        self.variance_ = pd.DataFrame(variance, index=index)
        self.at_risk_ = pd.DataFrame(at_risk, index=index)
        self.confidence_interval_ = pd.DataFrame(bounds, index=index)
        return self


class FederatedLogRank:
    """Log-rank test of equal survival across groups, pooled or site-stratified.

    Parameters
    ----------
    stratified
        ``False``: one test on the pooled counts (lifelines'
        ``multivariate_logrank_test`` on the pooled records). ``True``: the
        site-stratified test, summing every site's observed-minus-expected and
        covariance.

    Attributes
    ----------
    groups_ : list of str
        Group labels, sorted.
    observed_, expected_ : dict of str to float
        Events observed and expected under the null, per group (summed over
        sites when stratified).
    test_statistic_ : float
        Chi-squared statistic.
    degrees_of_freedom_ : int
        Groups minus one.
    p_value_ : float
        Upper tail of the chi-squared distribution.
    """

    def __init__(self, stratified: bool = False) -> None:
        self.stratified = stratified

    def fit(self, sites: Sequence[SiteSurvivalCounts]) -> FederatedLogRank:
        """Run the test on the sites' counts.

        Returns
        -------
        FederatedLogRank
            ``self``, fitted.

        Raises
        ------
        EvaluationError
            ``no-sites``, ``grid-mismatch``, or ``one-group`` when the sites
            hold fewer than two groups in all.
        """
        pooled = pool_site_counts(sites)
        names = list(pooled.groups)
        if len(names) < 2:
            EvaluationError.raise_if_any(
                "log-rank test",
                [
                    Problem(
                        "one-group",
                        f"only group(s) {names} found; a log-rank test compares "
                        "at least two groups",
                    )
                ],
            )
        strata = list(sites) if self.stratified else [pooled]
        observed = np.zeros(len(names))
        expected = np.zeros(len(names))
        covariance = np.zeros((len(names), len(names)))
        for stratum in strata:
            o, e, v = logrank_components(stratum, names)
            observed += o
            expected += e
            covariance += v
        difference = (observed - expected)[:-1]
        # pinv as lifelines does, so a singular covariance gives the same answer.
        statistic = float(
            difference @ np.linalg.pinv(covariance[:-1, :-1]) @ difference
        )
        self.groups_ = names
        self.observed_ = dict(zip(names, observed.tolist(), strict=True))
        self.expected_ = dict(zip(names, expected.tolist(), strict=True))
        self.test_statistic_ = statistic
        self.degrees_of_freedom_ = len(names) - 1
        self.p_value_ = float(stats.chi2.sf(statistic, self.degrees_of_freedom_))
        return self


def logrank_components(
    counts: SiteSurvivalCounts, names: Sequence[str]
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Observed and expected events and their covariance within one stratum.

    Parameters
    ----------
    counts
        One stratum's counts (a site, or the pooled sites).
    names
        Group order of the result; a group absent from ``counts`` has no
        patients there.

    Returns
    -------
    tuple of numpy.ndarray
        Observed events per group, expected events per group under equal
        hazards, and the hypergeometric covariance matrix of observed minus
        expected.
    """
    intervals = counts.grid.intervals
    events = np.zeros((intervals, len(names)))
    leaving = np.zeros((intervals, len(names)))
    for j, name in enumerate(names):
        if name in counts.groups:
            events[:, j] = counts.groups[name].events
            leaving[:, j] = events[:, j] + counts.groups[name].censored
    risk = leaving.sum(axis=0) - (np.cumsum(leaving, axis=0) - leaving)
    total_risk = risk.sum(axis=1)
    total_events = events.sum(axis=1)
    used = total_risk > 0
    risk, total_risk, total_events = risk[used], total_risk[used], total_events[used]
    share = risk / total_risk[:, None]
    expected = (share * total_events[:, None]).sum(axis=0)
    # (n - d) / (n - 1) is taken as 1 when one patient is at risk (0/0).
    correction = np.where(
        total_risk > 1, (total_risk - total_events) / np.maximum(total_risk - 1, 1), 1.0
    )
    weight = total_events * correction
    covariance = -(share * weight[:, None]).T @ share
    covariance[np.diag_indices(len(names))] += (share * weight[:, None]).sum(axis=0)
    return events.sum(axis=0), expected, covariance


def _log_log_band(
    survival: FloatArray, greenwood: FloatArray, z: float
) -> tuple[FloatArray, FloatArray]:
    """Exponential Greenwood band as lifelines; 1 where undefined (S = 1)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        log_s = np.log(survival)
        spread = z * np.sqrt(greenwood) / log_s
        lower = np.exp(-np.exp(np.log(-log_s) - spread))
        upper = np.exp(-np.exp(np.log(-log_s) + spread))
    return np.where(np.isnan(lower), 1.0, lower), np.where(np.isnan(upper), 1.0, upper)
