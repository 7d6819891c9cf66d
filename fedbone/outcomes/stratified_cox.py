"""Federated site-stratified Cox proportional hazards, exact.

Each site is one stratum with its own baseline hazard. The stratified log
partial likelihood is the sum of the sites' log partial likelihoods, so its
gradient and Hessian are sums too: at every Newton-Raphson step the server sends
the current coefficients, each site returns only the log partial likelihood,
gradient ``(p,)`` and Hessian ``(p, p)`` of its own stratum
(:func:`stratum_derivatives`, sent as :meth:`CoxDerivatives.to_dict`), and the
server adds them up and takes the step (:class:`FederatedCoxPH`). The result is
the maximum partial-likelihood estimate of the pooled stratified model, equal to
lifelines ``CoxPHFitter().fit(pooled, ..., strata=["site"])``.

A site without events contributes zeros. A covariate constant at one site also
contributes exactly zero to that coordinate (it cancels from the stratum's
partial likelihood); the coefficient is then estimated from the other sites,
exactly as in the pooled stratified fit. Only a covariate without information at
any site is refused (``singular-information``).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats

from fedbone.errors import Problem
from fedbone.validation.errors import EvaluationError

__all__ = [
    "TIES",
    "CoxConvergenceWarning",
    "CoxDerivatives",
    "FederatedCoxPH",
    "stratum_derivatives",
]

logger = logging.getLogger(__name__)

TIES = ("efron", "breslow")
"""Supported ways of handling tied event times."""

FloatArray = npt.NDArray[np.float64]
DerivativesFn = Callable[[FloatArray], Sequence["CoxDerivatives"]]

_Z95 = float(stats.norm.ppf(0.975))
_MAX_HALVINGS = 30


class CoxConvergenceWarning(UserWarning):
    """Newton-Raphson stopped at ``max_iter`` before converging."""


@dataclass(frozen=True, eq=False)
class CoxDerivatives:
    """One stratum's log partial likelihood and its derivatives at ``beta``.

    Parameters
    ----------
    log_likelihood
        Log partial likelihood of the stratum.
    gradient
        Score vector, shape ``(p,)``.
    hessian
        Second derivatives, shape ``(p, p)`` (negative semi-definite).
    n_patients, n_events
        Size of the stratum, for reporting.
    ties
        ``"efron"`` or ``"breslow"``, so the server can check every site used
        the method it asked for.
    """

    log_likelihood: float
    gradient: FloatArray
    hessian: FloatArray
    n_patients: int
    n_events: int
    ties: str

    def to_dict(self) -> dict[str, Any]:
        """Return plain floats, lists and ints with kebab-case keys."""
        return {
            "log-likelihood": float(self.log_likelihood),
            "gradient": [float(v) for v in self.gradient],
            "hessian": [[float(v) for v in row] for row in self.hessian],
            "num-patients": int(self.n_patients),
            "num-events": int(self.n_events),
            "ties": self.ties,
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> CoxDerivatives:
        """Rebuild from :meth:`to_dict` output, checking shapes and values.

        Raises
        ------
        EvaluationError
            Missing keys, a Hessian that is not ``(p, p)``, or non-finite values.
        """
        keys = ("log-likelihood", "gradient", "hessian", "num-patients", "num-events")
        problems = [
            Problem("missing-key", f"add {key!r} to the site's Cox reply", key)
            for key in (*keys, "ties")
            if key not in record
        ]
        EvaluationError.raise_if_any("Cox derivatives record", problems)
        gradient = np.asarray(record["gradient"], dtype=np.float64).reshape(-1)
        hessian = np.asarray(record["hessian"], dtype=np.float64)
        p = gradient.size
        if hessian.shape != (p, p):
            problems.append(
                Problem(
                    "bad-shape",
                    f"the Hessian must be ({p}, {p}) to match the gradient, "
                    f"got {hessian.shape}",
                    "hessian",
                )
            )
        values = [record["log-likelihood"], *gradient, *hessian.reshape(-1)]
        if not all(math.isfinite(float(v)) for v in values):
            problems.append(
                Problem("not-finite", "derivatives must be finite numbers", "")
            )
        EvaluationError.raise_if_any("Cox derivatives record", problems)
        return cls(
            log_likelihood=float(record["log-likelihood"]),
            gradient=gradient,
            hessian=hessian,
            n_patients=int(record["num-patients"]),
            n_events=int(record["num-events"]),
            ties=str(record["ties"]),
        )


def _check_site_inputs(
    times: FloatArray,
    events: FloatArray,
    covariates: FloatArray,
    beta: FloatArray,
    ties: str,
    min_patients: int,
) -> list[Problem]:
    n, p = covariates.shape
    problems: list[Problem] = []
    if ties not in TIES:
        problems.append(Problem("unknown-ties", f"use one of {TIES}, not {ties!r}"))
    if times.size != n or events.size != n:
        problems.append(
            Problem(
                "length-mismatch",
                f"times ({times.size}), events ({events.size}) and covariate rows "
                f"({n}) must have one entry per patient",
            )
        )
    if beta.size != p:
        problems.append(
            Problem("bad-shape", f"beta has {beta.size} entries for {p} covariates")
        )
    if not np.all(np.isfinite(times)) or np.any(times < 0):
        problems.append(
            Problem("bad-times", "times must be finite and non-negative", "times")
        )
    if not np.all(np.isin(events, (0.0, 1.0))):
        problems.append(
            Problem("bad-events", "events must be 1 (event) or 0 (censored)", "events")
        )
    if not np.all(np.isfinite(covariates)) or not np.all(np.isfinite(beta)):
        problems.append(
            Problem("not-finite", "covariates and beta must be finite; impute first")
        )
    if n < min_patients:
        problems.append(
            Problem(
                "too-few-patients",
                f"the site has {n} patients, below its minimum of {min_patients}; "
                "leave this site out of the Cox model",
            )
        )
    return problems


def stratum_derivatives(
    times: npt.ArrayLike,
    events: npt.ArrayLike,
    covariates: npt.ArrayLike,
    beta: npt.ArrayLike,
    ties: str = "efron",
    *,
    min_patients: int = 5,
) -> CoxDerivatives:
    """Log partial likelihood, gradient and Hessian of one site's stratum.

    Runs at the site on its own records; only the returned aggregates leave.

    Parameters
    ----------
    times
        Follow-up time per patient, shape ``(n,)``.
    events
        1 if the event was observed, 0 if censored, shape ``(n,)``.
    covariates
        Shape ``(n, p)``, or ``(n,)`` for one covariate.
    beta
        Current coefficients sent by the server, shape ``(p,)``.
    ties
        ``"efron"`` (lifelines' default) or ``"breslow"``.
    min_patients
        Disclosure control: refuse sites smaller than this (site config).

    Returns
    -------
    CoxDerivatives
        Zeros when the site has no events. A covariate constant at this site
        gets exactly zero gradient and Hessian entries.

    Raises
    ------
    EvaluationError
        Every problem with the inputs, listed once.
    """
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    d = np.asarray(events, dtype=np.float64).reshape(-1)
    x = np.asarray(covariates, dtype=np.float64)
    x = x.reshape(-1, 1) if x.ndim == 1 else x
    b = np.asarray(beta, dtype=np.float64).reshape(-1)
    problems = _check_site_inputs(t, d, x, b, ties, min_patients)
    EvaluationError.raise_if_any("site Cox inputs", problems)

    n, p = x.shape
    n_events = int(d.sum())
    if n_events == 0:
        zeros = np.zeros(p)
        return CoxDerivatives(0.0, zeros, np.zeros((p, p)), n, 0, ties)
    # Centring and shifting the linear predictor leave every derivative unchanged
    # but keep exp() in range and make a site-constant covariate exactly zero.
    x = x - x.mean(axis=0)
    eta = x @ b
    eta = eta - eta.max()
    w = np.exp(eta)

    unique_times, group = np.unique(t, return_inverse=True)
    k = unique_times.size

    def per_time(values: FloatArray) -> FloatArray:
        sums = np.zeros((k, *values.shape[1:]))
        np.add.at(sums, group, values)
        return sums

    wx = w[:, None] * x
    wxx = wx[:, :, None] * x[:, None, :]
    # Risk set at time t = everyone still followed at t: reverse cumulative sums.
    risk = [np.cumsum(per_time(v)[::-1], axis=0)[::-1] for v in (w, wx, wxx)]
    is_event = d == 1.0
    tied = [per_time(v * _mask(is_event, v)) for v in (w, wx, wxx)]

    # Efron removes l/d of the tied events' weight for the l-th of d tied events;
    # the order of events within a tie does not matter, so sort them by time.
    event_group = np.sort(group[is_event])
    deaths = np.bincount(event_group, minlength=k)
    first = np.cumsum(deaths) - deaths
    rank = np.arange(event_group.size) - first[event_group]
    frac = rank / deaths[event_group] if ties == "efron" else np.zeros(rank.size)

    s0 = risk[0][event_group] - frac * tied[0][event_group]
    s1 = risk[1][event_group] - frac[:, None] * tied[1][event_group]
    s2 = risk[2][event_group] - frac[:, None, None] * tied[2][event_group]
    mean = s1 / s0[:, None]
    log_likelihood = float(eta[is_event].sum() - np.log(s0).sum())
    gradient = x[is_event].sum(axis=0) - mean.sum(axis=0)
    hessian = -(s2 / s0[:, None, None]).sum(axis=0) + np.einsum("ei,ej->ij", mean, mean)
    return CoxDerivatives(log_likelihood, gradient, hessian, n, n_events, ties)


def _newton_step(total: CoxDerivatives) -> FloatArray | None:
    """Newton direction ``I^-1 U``, or None where the information is singular."""
    try:
        step = np.linalg.solve(-total.hessian, total.gradient)
    except np.linalg.LinAlgError:
        return None
    return np.asarray(step, dtype=np.float64) if np.all(np.isfinite(step)) else None


def _mask(is_event: npt.NDArray[np.bool_], values: FloatArray) -> FloatArray:
    """Broadcast the event indicator over trailing axes of ``values``."""
    return is_event.reshape((-1,) + (1,) * (values.ndim - 1)).astype(np.float64)


class FederatedCoxPH:
    """Site-stratified Cox model fitted by federated Newton-Raphson.

    Parameters
    ----------
    ties
        ``"efron"`` or ``"breslow"``; every site's reply must say the same.
    tol
        Converged when the largest Newton step is below ``tol``.
    max_iter
        Newton steps (each one federated round, plus one per step halving).

    Attributes
    ----------
    params_, hazard_ratios_, standard_errors_, p_values_ : pandas.Series
        Per covariate, indexed by name.
    confidence_intervals_ : pandas.DataFrame
        95% bounds of the coefficients, lifelines' column names.
    variance_matrix_ : pandas.DataFrame
        Inverse of the observed information at the estimate.
    log_likelihood_ : float
        Stratified log partial likelihood at the estimate.
    iterations_ : int
        Newton steps taken; ``rounds_`` counts calls to ``derivatives_fn``.
    converged_ : bool
        False if ``max_iter`` was reached (a :class:`CoxConvergenceWarning` is
        issued), typically monotone likelihood (a covariate that separates).
    n_patients_, n_events_, n_sites_ : int
        Totals from the sites' replies.
    """

    def __init__(
        self, ties: str = "efron", tol: float = 1e-9, max_iter: int = 50
    ) -> None:
        problems = []
        if ties not in TIES:
            problems.append(Problem("unknown-ties", f"use one of {TIES}", "ties"))
        if not tol > 0:
            problems.append(Problem("bad-tolerance", "tol must be positive", "tol"))
        if max_iter < 1:
            problems.append(Problem("bad-max-iter", "max_iter must be >= 1"))
        EvaluationError.raise_if_any("FederatedCoxPH settings", problems)
        self.ties = ties
        self.tol = tol
        self.max_iter = max_iter

    def fit(
        self,
        derivatives_fn: DerivativesFn,
        n_covariates: int,
        names: Sequence[str] | None = None,
    ) -> FederatedCoxPH:
        """Iterate to the maximum stratified partial likelihood.

        Parameters
        ----------
        derivatives_fn
            ``derivatives_fn(beta)`` returns one :class:`CoxDerivatives` per
            site at ``beta``; in production one federated round.
        n_covariates
            Number of coefficients ``p``.
        names
            Covariate names, default ``x0, x1, ...``.

        Returns
        -------
        FederatedCoxPH
            ``self``, fitted.

        Raises
        ------
        EvaluationError
            No events at any site, a covariate without information at any site,
            replies of the wrong shape or ties method.
        """
        labels = (
            list(names) if names is not None else [f"x{i}" for i in range(n_covariates)]
        )
        if len(labels) != n_covariates or len(set(labels)) != len(labels):
            raise EvaluationError(
                "FederatedCoxPH.fit",
                [Problem("bad-names", f"give {n_covariates} distinct names")],
            )
        self.rounds_ = 0
        beta = np.zeros(n_covariates)
        total = self._evaluate(derivatives_fn, beta)
        # At beta = 0 a zero or singular information means no site has usable
        # variation; later it can only come from monotone likelihood.
        self._check_information(total, labels)
        self.converged_ = False
        self.iterations_ = 0
        while self.iterations_ < self.max_iter:
            step = _newton_step(total)
            self.iterations_ += 1
            if step is None:
                break
            if np.max(np.abs(step)) < self.tol:
                self.converged_ = True
                break
            beta, total = self._halving_step(derivatives_fn, beta, step, total)
        if not self.converged_:
            warnings.warn(
                f"Cox Newton-Raphson stopped after {self.iterations_} steps without "
                "converging; "
                "a covariate may separate events (monotone likelihood)",
                CoxConvergenceWarning,
                stacklevel=2,
            )
        self._store(beta, total, labels)
        return self

    def _evaluate(
        self, derivatives_fn: DerivativesFn, beta: FloatArray
    ) -> CoxDerivatives:
        """Call the sites once and return the summed derivatives."""
        self.rounds_ += 1
        replies = list(derivatives_fn(beta.copy()))
        p = beta.size
        problems = []
        if not replies:
            problems.append(Problem("no-sites", "derivatives_fn returned no sites"))
        for i, reply in enumerate(replies):
            if reply.gradient.shape != (p,) or reply.hessian.shape != (p, p):
                problems.append(
                    Problem("bad-shape", f"expected {p} covariates", f"site {i}")
                )
            if reply.ties != self.ties:
                problems.append(
                    Problem(
                        "ties-mismatch",
                        f"site used {reply.ties!r}, the server asked {self.ties!r}",
                        f"site {i}",
                    )
                )
        if sum(r.n_events for r in replies) == 0:
            problems.append(Problem("no-events", "no site has any event"))
        EvaluationError.raise_if_any("site Cox replies", problems)
        self.n_sites_ = len(replies)
        return CoxDerivatives(
            log_likelihood=sum(r.log_likelihood for r in replies),
            gradient=np.sum([r.gradient for r in replies], axis=0),
            hessian=np.sum([r.hessian for r in replies], axis=0),
            n_patients=sum(r.n_patients for r in replies),
            n_events=sum(r.n_events for r in replies),
            ties=self.ties,
        )

    def _halving_step(
        self,
        derivatives_fn: DerivativesFn,
        beta: FloatArray,
        step: FloatArray,
        current: CoxDerivatives,
    ) -> tuple[FloatArray, CoxDerivatives]:
        """Take the Newton step, halving it while the likelihood decreases."""
        for _ in range(_MAX_HALVINGS):
            candidate = beta + step
            trial = self._evaluate(derivatives_fn, candidate)
            # A tiny slack so rounding at the optimum does not trigger halving.
            slack = 1e-12 * max(1.0, abs(current.log_likelihood))
            if trial.log_likelihood >= current.log_likelihood - slack:
                return candidate, trial
            logger.debug("Cox step halved at iteration %d", self.iterations_)
            step = step / 2.0
        return candidate, trial

    @staticmethod
    def _check_information(total: CoxDerivatives, labels: list[str]) -> None:
        """Refuse covariates that no site informs, or collinear ones."""
        information = -total.hessian
        empty = [
            Problem(
                "singular-information",
                "no site has variation in this covariate among its patients at "
                "risk; drop it from the model",
                label,
            )
            for label, value in zip(labels, np.diag(information), strict=True)
            if not value > 1e-12 * max(1.0, float(np.max(np.diag(information))))
        ]
        EvaluationError.raise_if_any("stratified Cox model", empty)
        try:
            np.linalg.cholesky(information)
        except np.linalg.LinAlgError:
            raise EvaluationError(
                "stratified Cox model",
                [
                    Problem(
                        "singular-information",
                        "the covariates are collinear within sites; drop one",
                    )
                ],
            ) from None

    def _store(
        self, beta: FloatArray, total: CoxDerivatives, labels: list[str]
    ) -> None:
        try:
            covariance = np.linalg.inv(-total.hessian)
        except np.linalg.LinAlgError:
            # Only reachable after a non-converged, diverging fit (already warned).
            covariance = np.full_like(total.hessian, np.nan)
        se = np.sqrt(np.diag(covariance))
        z = beta / se
        index = pd.Index(labels, name="covariate")
        self.params_ = pd.Series(beta, index=index, name="coef")
        self.hazard_ratios_ = pd.Series(np.exp(beta), index=index, name="exp(coef)")
        self.standard_errors_ = pd.Series(se, index=index, name="se(coef)")
        self.p_values_ = pd.Series(2 * stats.norm.sf(np.abs(z)), index=index, name="p")
        self.confidence_intervals_ = pd.DataFrame(
            {
                "95% lower-bound": beta - _Z95 * se,
                "95% upper-bound": beta + _Z95 * se,
            },
            index=index,
        )
        self.variance_matrix_ = pd.DataFrame(covariance, index=index, columns=index)
        self.log_likelihood_ = float(total.log_likelihood)
        self.n_patients_ = total.n_patients
        self.n_events_ = total.n_events

    @property
    def summary(self) -> pd.DataFrame:
        """Per-covariate table with lifelines' column names."""
        ci = self.confidence_intervals_
        p = self.p_values_
        return pd.DataFrame(
            {
                "coef": self.params_,
                "exp(coef)": self.hazard_ratios_,
                "se(coef)": self.standard_errors_,
                "coef lower 95%": ci["95% lower-bound"],
                "coef upper 95%": ci["95% upper-bound"],
                "exp(coef) lower 95%": np.exp(ci["95% lower-bound"]),
                "exp(coef) upper 95%": np.exp(ci["95% upper-bound"]),
                "z": self.params_ / self.standard_errors_,
                "p": p,
                "-log2(p)": -np.log2(p),
            }
        )
