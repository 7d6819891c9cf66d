"""Check that the federated estimators recover the phantom's planted hazard ratios.

The phantom follow-up (:mod:`fedbone.data.phantom.outcomes`) plants a
proportional-hazards effect of the true label on each endpoint, adjusted for age
and sex. :func:`plan_outcome_cohorts` plans phantom sites without rendering,
keeps each patient's first scan (the outcome cohort of issue #6) and groups the
patients by a predicted label: the true label, or the true label passed through
an imperfect classifier. :func:`recover_hazard_ratios` then runs exactly the
computation of the ``outcomes`` phase on those records: the site-stratified Cox
model by federated Newton-Raphson (crude and adjusted), the site-stratified
log-rank test from grid counts, and per-site Cox fits pooled by inverse-variance
meta-analysis. It reports whether the planted hazard ratio lies in each 95% CI.
"""

from __future__ import annotations

import logging
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedbone.data.phantom.outcomes import DEATH, HEART_FAILURE, EndpointModel
from fedbone.data.phantom.plan import ScanPlan, plan_site_cohort
from fedbone.errors import Problem
from fedbone.outcomes.kaplan_meier import FederatedLogRank
from fedbone.outcomes.meta_analysis import SiteCoxFit, fit_site_cox, meta_analyze_sites
from fedbone.outcomes.stratified_cox import (
    CoxConvergenceWarning,
    CoxDerivatives,
    FederatedCoxPH,
    stratum_derivatives,
)
from fedbone.outcomes.survival_grid import TimeGrid, site_counts
from fedbone.validation.errors import EvaluationError

__all__ = [
    "ENDPOINTS",
    "HazardRatioEstimate",
    "PlantedRecovery",
    "SiteOutcomeCohort",
    "plan_outcome_cohorts",
    "recover_hazard_ratios",
]

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

ENDPOINTS: dict[str, EndpointModel] = {
    DEATH.name: DEATH,
    HEART_FAILURE.name: HEART_FAILURE,
}
"""The phantom's endpoint models by name."""

_CRUDE = ("group",)
_ADJUSTED = ("group", "age", "male")


@dataclass(frozen=True, eq=False)
class SiteOutcomeCohort:
    """One site's outcome cohort: one row per patient, first scan only.

    Parameters
    ----------
    site
        Site letter.
    task
        The label the grouping predicts: ``"bm"`` or ``"ca"``.
    group
        Predicted label (0/1) per patient.
    true_label
        True label (0/1) per patient; the planted effect acts on it.
    age, male
        Age in years and 1 for male; NaN where the site records no
        demographics.
    time_days, event
        Endpoint name to follow-up days and event flags (0/1).
    """

    site: str
    task: str
    group: IntArray
    true_label: IntArray
    age: FloatArray
    male: FloatArray
    time_days: dict[str, IntArray]
    event: dict[str, IntArray]

    @property
    def n_patients(self) -> int:
        """Number of patients (rows)."""
        return int(self.group.size)


@dataclass(frozen=True)
class HazardRatioEstimate:
    """Hazard ratio of the predicted group from one model, with its 95% CI.

    ``covers_planted`` says whether ``low <= planted <= high``.
    """

    hazard_ratio: float
    low: float
    high: float
    p_value: float
    covers_planted: bool


@dataclass(frozen=True)
class PlantedRecovery:
    """Every estimate of the group effect on one endpoint, for one cohort draw.

    Parameters
    ----------
    endpoint
        Endpoint name (``"death"``, ``"hf"``).
    planted_hazard_ratio
        The conditional hazard ratio the phantom planted for the true label.
    crude, adjusted
        Site-stratified federated Cox: group only; group + age + male.
    meta_crude, meta_adjusted
        Per-site Cox fits pooled by fixed-effect meta-analysis.
    logrank_statistic, logrank_p_value
        Site-stratified log-rank test from grid counts.
    n_patients, n_events
        Patients and events in the crude model (the adjusted model uses the
        complete cases).
    meta_sites
        Sites whose own fit entered the meta-analysis (a site whose fit does
        not converge or has no events is left out).
    """

    endpoint: str
    planted_hazard_ratio: float
    crude: HazardRatioEstimate
    adjusted: HazardRatioEstimate
    meta_crude: HazardRatioEstimate
    meta_adjusted: HazardRatioEstimate
    logrank_statistic: float
    logrank_p_value: float
    n_patients: int
    n_events: int
    meta_sites: tuple[str, ...]


def _first_scans(plans: Sequence[ScanPlan]) -> list[ScanPlan]:
    """Keep the earliest scan of every patient (ties broken by scan index)."""
    first: dict[str, ScanPlan] = {}
    for plan in plans:
        kept = first.get(plan.patient_id)
        if kept is None or (plan.study_date, plan.index) < (
            kept.study_date,
            kept.index,
        ):
            first[plan.patient_id] = plan
    return sorted(first.values(), key=lambda plan: plan.index)


def _true_label(plan: ScanPlan, task: str) -> int:
    # The phantom plants the hf effect on grade >= 2 even where the site did not
    # grade the heart, so the truth is the grade, not the recorded label_ca.
    return plan.label_bm if task == "bm" else int(plan.perugini_grade >= 2)


def _endpoint_columns(
    plans: Sequence[ScanPlan], endpoint: str
) -> tuple[IntArray, IntArray]:
    """Follow-up days and event flags of one endpoint, one entry per plan."""
    days, flags = [], []
    for plan in plans:
        recorded = {name: (time, event) for name, time, event in plan.outcomes or ()}
        time, event = recorded[endpoint]
        days.append(time)
        flags.append(event)
    return np.array(days, dtype=np.int64), np.array(flags, dtype=np.int64)


def _misclassify(
    truth: IntArray,
    sensitivity: float,
    specificity: float,
    rng: np.random.Generator,
) -> IntArray:
    """Flip labels as a classifier with this sensitivity and specificity would."""
    draw = rng.random(truth.size)
    positive = np.where(truth == 1, draw < sensitivity, draw >= specificity)
    return positive.astype(np.int64)


def _check_planning(
    task: str, sites: Sequence[str], sensitivity: float, specificity: float
) -> None:
    problems = []
    if task not in {model.label for model in ENDPOINTS.values()}:
        problems.append(
            Problem("unknown-task", f"task must be 'bm' or 'ca', not {task!r}")
        )
    if not sites:
        problems.append(Problem("no-sites", "name at least one phantom site"))
    for name, value in (("sensitivity", sensitivity), ("specificity", specificity)):
        if not 0.0 <= value <= 1.0:
            problems.append(Problem("bad-rate", f"{name} must be in [0, 1]", name))
    EvaluationError.raise_if_any("outcome cohort planning", problems)


def plan_outcome_cohorts(
    task: str,
    sites: Sequence[str],
    *,
    seed: int,
    scale: float,
    min_scans: int,
    sensitivity: float = 1.0,
    specificity: float = 1.0,
) -> list[SiteOutcomeCohort]:
    """Plan phantom sites with follow-up and build their outcome cohorts.

    Parameters
    ----------
    task
        Label to group by: ``"bm"`` (death) or ``"ca"`` (heart failure).
    sites
        Phantom site letters.
    seed
        Cohort seed, passed to :func:`~fedbone.data.phantom.plan.plan_site_cohort`;
        the simulated classifier's errors are seeded from it too.
    scale, min_scans
        Cohort size, as for ``plan_site_cohort``.
    sensitivity, specificity
        Of the simulated classifier that assigns the group; 1 and 1 (the
        default) group by the true label.

    Returns
    -------
    list of SiteOutcomeCohort
        One per site, in the order given.

    Raises
    ------
    EvaluationError
        Unknown task, no sites, or rates outside [0, 1].
    """
    _check_planning(task, sites, sensitivity, specificity)
    cohorts = []
    for site in sites:
        plans = _first_scans(
            plan_site_cohort(
                site, scale=scale, min_scans=min_scans, seed=seed, outcomes=True
            )
        )
        truth = np.array([_true_label(p, task) for p in plans], dtype=np.int64)
        rng = np.random.default_rng(
            np.random.SeedSequence(seed, spawn_key=(zlib.crc32(site.encode()), 9))
        )
        known = np.array([p.demographics_known for p in plans])
        age = np.where(known, [p.age_years for p in plans], np.nan)
        male = np.where(known, [0.0 if p.female else 1.0 for p in plans], np.nan)
        columns = {name: _endpoint_columns(plans, name) for name in ENDPOINTS}
        cohorts.append(
            SiteOutcomeCohort(
                site=site,
                task=task,
                group=_misclassify(truth, sensitivity, specificity, rng),
                true_label=truth,
                age=age.astype(np.float64),
                male=male.astype(np.float64),
                time_days={name: days for name, (days, _) in columns.items()},
                event={name: flags for name, (_, flags) in columns.items()},
            )
        )
    return cohorts


def _estimate(
    log_hr: float, low: float, high: float, p_value: float, planted: float
) -> HazardRatioEstimate:
    return HazardRatioEstimate(
        hazard_ratio=float(np.exp(log_hr)),
        low=float(np.exp(low)),
        high=float(np.exp(high)),
        p_value=float(p_value),
        covers_planted=bool(low <= np.log(planted) <= high),
    )


def _design(
    cohort: SiteOutcomeCohort, endpoint: str, names: Sequence[str]
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Return times, events and covariates of the complete cases for ``names``."""
    columns = {"group": cohort.group, "age": cohort.age, "male": cohort.male}
    x = np.column_stack([np.asarray(columns[n], dtype=np.float64) for n in names])
    complete = np.all(np.isfinite(x), axis=1)
    return (
        cohort.time_days[endpoint][complete].astype(np.float64),
        cohort.event[endpoint][complete].astype(np.float64),
        x[complete],
    )


def _stratified_fit(
    cohorts: Sequence[SiteOutcomeCohort],
    endpoint: str,
    names: Sequence[str],
    min_patients: int,
) -> FederatedCoxPH:
    designs = [_design(cohort, endpoint, names) for cohort in cohorts]

    def derivatives(beta: FloatArray) -> list[CoxDerivatives]:
        # In the outcomes phase each call is one federated round: every site
        # evaluates its own stratum at the server's beta.
        return [
            stratum_derivatives(t, d, x, beta, "efron", min_patients=min_patients)
            for t, d, x in designs
        ]

    return FederatedCoxPH(ties="efron").fit(derivatives, len(names), names)


def _site_fits(
    cohorts: Sequence[SiteOutcomeCohort],
    endpoint: str,
    names: Sequence[str],
    min_patients: int,
) -> list[tuple[str, SiteCoxFit]]:
    """Per-site fits that converged; the others are logged and left out."""
    fits = []
    for cohort in cohorts:
        t, d, x = _design(cohort, endpoint, names)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CoxConvergenceWarning)
            try:
                fit = fit_site_cox(t, d, x, names, min_patients=min_patients)
            except EvaluationError as error:
                logger.info(
                    "site %s left out of the meta-analysis: %s", cohort.site, error
                )
                continue
        if any(issubclass(w.category, CoxConvergenceWarning) for w in caught):
            logger.info(
                "site %s left out of the meta-analysis: no convergence", cohort.site
            )
            continue
        values = np.array([*fit.params, *fit.variances])
        if not np.all(np.isfinite(values)):
            # Monotone likelihood (e.g. every event among men at a small site):
            # Newton stops on a flat ridge with an infinite variance.
            logger.info(
                "site %s left out of the meta-analysis: separation", cohort.site
            )
            continue
        fits.append((cohort.site, fit))
    return fits


def _meta_estimate(
    fits: Sequence[tuple[str, SiteCoxFit]], planted: float
) -> HazardRatioEstimate:
    if not fits:
        nan = float("nan")
        return HazardRatioEstimate(nan, nan, nan, nan, covers_planted=False)
    pooled = meta_analyze_sites([fit for _, fit in fits])["group"]
    return _estimate(pooled.estimate, pooled.low, pooled.high, pooled.p_value, planted)


def _cox_estimate(model: FederatedCoxPH, planted: float) -> HazardRatioEstimate:
    bounds = model.confidence_intervals_.loc["group"]
    return _estimate(
        float(model.params_["group"]),
        float(bounds["95% lower-bound"]),
        float(bounds["95% upper-bound"]),
        float(model.p_values_["group"]),
        planted,
    )


def recover_hazard_ratios(
    cohorts: Sequence[SiteOutcomeCohort],
    endpoint: EndpointModel,
    *,
    grid: TimeGrid | None = None,
    min_patients: int = 5,
) -> PlantedRecovery:
    """Estimate the group's hazard ratio on one endpoint the federated way.

    Parameters
    ----------
    cohorts
        The sites' outcome cohorts (:func:`plan_outcome_cohorts`); their
        ``task`` must be the label ``endpoint`` plants its effect on.
    endpoint
        Endpoint model (:data:`~fedbone.data.phantom.outcomes.DEATH`,
        :data:`~fedbone.data.phantom.outcomes.HEART_FAILURE`); its
        ``hazard_ratio_label`` is the planted value checked.
    grid
        Time grid of the log-rank counts; default ``TimeGrid()`` (7 days).
    min_patients
        Sites' small-cell threshold (Cox strata and log-rank groups).

    Returns
    -------
    PlantedRecovery

    Raises
    ------
    EvaluationError
        Cohorts for another task or without this endpoint, or anything the
        estimators refuse (a grid too fine for a site, too few patients).
    """
    problems = [
        Problem(
            "wrong-task",
            f"{endpoint.name} is planted on {endpoint.label!r}, but the cohort "
            f"is grouped by {cohort.task!r}",
            cohort.site,
        )
        for cohort in cohorts
        if cohort.task != endpoint.label or endpoint.name not in cohort.time_days
    ]
    if not cohorts:
        problems.append(Problem("no-sites", "give at least one site's cohort"))
    EvaluationError.raise_if_any("planted hazard-ratio recovery", problems)
    planted = endpoint.hazard_ratio_label
    crude = _stratified_fit(cohorts, endpoint.name, _CRUDE, min_patients)
    adjusted = _stratified_fit(cohorts, endpoint.name, _ADJUSTED, min_patients)
    counts = [
        site_counts(
            cohort.time_days[endpoint.name],
            cohort.event[endpoint.name],
            cohort.group,
            grid,
            min_per_group=min_patients,
        )
        for cohort in cohorts
    ]
    logrank = FederatedLogRank(stratified=True).fit(counts)
    adjusted_fits = _site_fits(cohorts, endpoint.name, _ADJUSTED, min_patients)
    return PlantedRecovery(
        endpoint=endpoint.name,
        planted_hazard_ratio=planted,
        crude=_cox_estimate(crude, planted),
        adjusted=_cox_estimate(adjusted, planted),
        meta_crude=_meta_estimate(
            _site_fits(cohorts, endpoint.name, _CRUDE, min_patients), planted
        ),
        meta_adjusted=_meta_estimate(adjusted_fits, planted),
        logrank_statistic=logrank.test_statistic_,
        logrank_p_value=logrank.p_value_,
        n_patients=crude.n_patients_,
        n_events=crude.n_events_,
        meta_sites=tuple(site for site, _ in adjusted_fits),
    )
