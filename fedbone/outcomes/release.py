"""What a site releases for the outcome analysis, and why it withholds the rest.

For each endpoint the site computes, from its :class:`OutcomeCohort` only:

- survival counts per predicted group on the study's grid (for pooled
  Kaplan-Meier and log-rank), under the disclosure rules of
  :func:`~fedbone.outcomes.survival_grid.site_counts`;
- whether it can be a stratum of each federated Cox model (enough complete
  cases, every predicted group at least the site's minimum);
- its own Cox fit per model (for the meta-analysis) and a Schoenfeld
  proportional-hazards check.

Every part that cannot be released gets a status code instead (``no-follow-up``,
``small-group``, ``too-few-patients``, ``no-events``, ``no-variance``,
``grid-too-fine``, ``no-convergence``), which the server reports; the rest of
the analysis goes on. Later, :func:`cohort_derivatives` answers one Newton step
of a federated Cox model.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from lifelines.exceptions import ConvergenceError

from fedbone.errors import Problem
from fedbone.outcomes.cohort import COX_MODELS, OutcomeCohort
from fedbone.outcomes.meta_analysis import (
    ProportionalHazardsCheck,
    SiteCoxFit,
    fit_site_cox,
    proportional_hazards_check,
)
from fedbone.outcomes.stratified_cox import (
    CoxConvergenceWarning,
    CoxDerivatives,
    stratum_derivatives,
)
from fedbone.outcomes.survival_grid import SiteSurvivalCounts, TimeGrid, site_counts
from fedbone.validation.errors import EvaluationError

__all__ = [
    "GROUPS",
    "INCLUDED",
    "MAX_ABS_COEFFICIENT",
    "EndpointRelease",
    "cohort_derivatives",
    "group_labels",
    "outcome_release",
]

logger = logging.getLogger(__name__)

INCLUDED = "included"
"""Status of a part the site releases."""

GROUPS = ("negative", "positive")
"""Group labels of the survival counts: predicted negative and positive."""

MAX_ABS_COEFFICIENT = 20.0
"""Largest |log hazard ratio| a site evaluates derivatives at.

A Newton step of a sane fit never goes there (a hazard ratio of e^20); the
bound stops a server from probing a site's records with extreme coefficients.
"""


@dataclass(frozen=True)
class EndpointRelease:
    """A site's releasable results for one endpoint.

    Parameters
    ----------
    counts
        Survival counts per group, or ``None`` when withheld.
    site_fits, ph_checks
        Per Cox model (``crude``, ``adjusted``) that the site could fit.
    status
        Per part (``counts``, ``<model>-stratum``, ``<model>-fit``,
        ``<model>-ph``): :data:`INCLUDED` or the code of the reason it is not.
    """

    counts: SiteSurvivalCounts | None = None
    site_fits: dict[str, SiteCoxFit] = field(default_factory=dict)
    ph_checks: dict[str, ProportionalHazardsCheck] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)


def group_labels(predicted: npt.NDArray[np.float64]) -> npt.NDArray[np.str_]:
    """``positive``/``negative`` label of each 0/1 prediction."""
    return np.where(np.asarray(predicted) >= 1, GROUPS[1], GROUPS[0])


def _first_code(error: EvaluationError) -> str:
    return error.problems[0].code if error.problems else "refused"


def _stratum_problems(
    times: npt.NDArray[np.float64],
    events: npt.NDArray[np.float64],
    covariates: npt.NDArray[np.float64],
    min_patients: int,
) -> list[Problem]:
    """Why a site cannot be a stratum of a federated Cox model (if it cannot)."""
    if times.size < min_patients:
        return [
            Problem(
                "too-few-patients",
                f"{times.size} complete cases, below the site's minimum of "
                f"{min_patients}",
            )
        ]
    # A binary covariate (the prediction, sex) with a handful of patients on
    # one side would let the site's coefficients describe those few patients.
    for column in covariates.T:
        if not np.isin(column, (0.0, 1.0)).all():
            continue
        smallest = min(int((column == 1).sum()), int((column == 0).sum()))
        if 0 < smallest < min_patients:
            return [
                Problem(
                    "small-group",
                    f"a group of a binary covariate holds {smallest} patients, "
                    f"below the site's minimum of {min_patients}",
                )
            ]
    return []


def _site_fit(
    times: npt.NDArray[np.float64],
    events: npt.NDArray[np.float64],
    covariates: npt.NDArray[np.float64],
    model: str,
    ties: str,
    min_patients: int,
) -> tuple[SiteCoxFit | None, str]:
    if not events.any():
        return None, "no-events"
    with warnings.catch_warnings():
        warnings.simplefilter("error", CoxConvergenceWarning)
        try:
            fit = fit_site_cox(
                times,
                events,
                covariates,
                COX_MODELS[model],
                ties,
                min_patients=min_patients,
            )
        except EvaluationError as error:
            return None, _first_code(error)
        except CoxConvergenceWarning:
            return None, "no-convergence"
    finite = all(math.isfinite(v) and v > 0 for v in fit.variances)
    return (fit, INCLUDED) if finite else (None, "no-convergence")


def _ph_check(
    times: npt.NDArray[np.float64],
    events: npt.NDArray[np.float64],
    covariates: npt.NDArray[np.float64],
    model: str,
    min_patients: int,
) -> tuple[ProportionalHazardsCheck | None, str]:
    if not events.any():
        return None, "no-events"
    try:
        with warnings.catch_warnings():
            # lifelines warns about convergence and low variance at small sites;
            # the status says what matters.
            warnings.simplefilter("ignore")
            check = proportional_hazards_check(
                times, events, covariates, COX_MODELS[model], min_patients=min_patients
            )
    except EvaluationError as error:
        return None, _first_code(error)
    except (ConvergenceError, np.linalg.LinAlgError):
        return None, "no-convergence"
    values = [*check.test_statistics.values(), *check.p_values.values()]
    if not all(math.isfinite(v) for v in values):
        return None, "no-convergence"
    return check, INCLUDED


def _endpoint_release(
    cohort: OutcomeCohort,
    endpoint: str,
    grid: TimeGrid,
    *,
    min_patients: int,
    ties: str,
    counts_only: bool,
) -> EndpointRelease:
    release = EndpointRelease()
    times, events, covariates = cohort.records(endpoint, "crude")
    if times.size == 0:
        release.status["counts"] = "no-follow-up"
        return release
    if times.size < min_patients:
        release.status["counts"] = "too-few-patients"
    else:
        try:
            counts = site_counts(
                times,
                events.astype(np.int64),
                group_labels(covariates[:, 0]),
                grid,
                min_per_group=min_patients,
            )
            release = EndpointRelease(counts=counts, status={"counts": INCLUDED})
        except EvaluationError as error:
            release.status["counts"] = _first_code(error)
    if counts_only:
        return release
    for model in COX_MODELS:
        t, d, x = cohort.records(endpoint, model)
        problems = _stratum_problems(t, d, x, min_patients)
        release.status[f"{model}-stratum"] = problems[0].code if problems else INCLUDED
        if problems:
            release.status[f"{model}-fit"] = problems[0].code
            release.status[f"{model}-ph"] = problems[0].code
            continue
        fit, release.status[f"{model}-fit"] = _site_fit(
            t, d, x, model, ties, min_patients
        )
        if fit is not None:
            release.site_fits[model] = fit
        check, release.status[f"{model}-ph"] = _ph_check(t, d, x, model, min_patients)
        if check is not None:
            release.ph_checks[model] = check
    return release


def outcome_release(
    cohort: OutcomeCohort,
    endpoints: Sequence[str],
    grid: TimeGrid,
    *,
    min_patients: int,
    ties: str = "efron",
    counts_only: bool = False,
) -> dict[str, EndpointRelease]:
    """Everything the site may release for each endpoint, with reasons.

    Parameters
    ----------
    cohort
        The site's scored outcome cohort.
    endpoints
        Endpoints the study analyses.
    grid
        The study's shared time grid.
    min_patients
        The site's small-cell threshold: fewest patients per site and per
        predicted group.
    ties
        Tie handling of the Cox models.
    counts_only
        Only the survival counts (under differential privacy: the Cox parts
        are exact releases, so they are not computed).

    Returns
    -------
    dict
        Endpoint name to its :class:`EndpointRelease`.
    """
    releases = {}
    for endpoint in endpoints:
        if endpoint not in cohort.times:
            releases[endpoint] = EndpointRelease(status={"counts": "no-follow-up"})
            continue
        releases[endpoint] = _endpoint_release(
            cohort,
            endpoint,
            grid,
            min_patients=min_patients,
            ties=ties,
            counts_only=counts_only,
        )
        logger.info("outcome %s: %s", endpoint, releases[endpoint].status)
    return releases


def cohort_derivatives(
    cohort: OutcomeCohort,
    endpoint: str,
    model: str,
    beta: Sequence[float],
    *,
    ties: str,
    min_patients: int,
) -> CoxDerivatives:
    """One Newton step's aggregates of this site's stratum.

    Parameters
    ----------
    cohort
        The site's scored outcome cohort.
    endpoint
        An endpoint name (``death``, ``hf``...).
    model
        ``crude`` or ``adjusted`` (:data:`~fedbone.outcomes.cohort.COX_MODELS`).
    beta
        Current log hazard ratios sent by the server, one per covariate of
        ``model``.
    ties
        ``efron`` or ``breslow``.
    min_patients
        The site's small-cell threshold: fewest patients in the stratum and in
        each predicted group.

    Returns
    -------
    CoxDerivatives
        Log partial likelihood, gradient and Hessian of the site's stratum.

    Raises
    ------
    EvaluationError
        ``bad-coefficients`` for a wrong number of coefficients or one beyond
        :data:`MAX_ABS_COEFFICIENT`; ``too-few-patients`` / ``small-group``
        when the site is not a stratum of this model.
    """
    times, events, covariates = cohort.records(endpoint, model)
    b = np.asarray(beta, dtype=np.float64).reshape(-1)
    problems = []
    if b.size != covariates.shape[1] or not np.all(np.abs(b) <= MAX_ABS_COEFFICIENT):
        problems.append(
            Problem(
                "bad-coefficients",
                f"expected {covariates.shape[1]} coefficients, each within "
                f"±{MAX_ABS_COEFFICIENT:g}",
            )
        )
    problems += _stratum_problems(times, events, covariates, min_patients)
    EvaluationError.raise_if_any(f"Cox derivatives ({endpoint}, {model})", problems)
    return stratum_derivatives(
        times, events, covariates, b, ties, min_patients=min_patients
    )
