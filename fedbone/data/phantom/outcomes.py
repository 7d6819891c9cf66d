"""Follow-up with planted effects: death after metastases, heart failure after CA.

Each endpoint is a proportional-hazards model with an exponential baseline::

    hazard = base * HR_label**label * HR_age**(age - 68) * HR_male**male

observed under administrative censoring (end of study, uniform entry) and
loss to follow-up. The baseline hazard is solved for so that the expected
fraction of patients with an event matches the paper (11 % deaths over a
median 1.8 years, 4 % heart-failure hospitalisations over 2.4 years in cohort
D). A Cox model fitted to the output recovers the planted hazard ratios.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "DEATH",
    "HEART_FAILURE",
    "REFERENCE_AGE",
    "EndpointModel",
    "EndpointOutcome",
    "simulate_endpoint",
    "simulate_outcomes",
]

#: Age at which the baseline hazard applies.
REFERENCE_AGE = 68.0
_DAYS_PER_YEAR = 365.25


@dataclass(frozen=True)
class EndpointModel:
    """How one endpoint is simulated.

    Parameters
    ----------
    name
        Endpoint name used in manifest columns (``time_<name>_days``).
    label
        Which true label drives it: ``"bm"`` or ``"ca"``.
    hazard_ratio_label, hazard_ratio_age_per_year, hazard_ratio_male
        Planted (adjusted) hazard ratios.
    event_fraction
        Expected fraction of patients with an observed event.
    median_follow_up_years
        Median of the administrative follow-up window.
    loss_rate_per_year
        Rate of loss to follow-up (independent censoring).
    """

    name: str
    label: str
    hazard_ratio_label: float
    hazard_ratio_age_per_year: float
    hazard_ratio_male: float
    event_fraction: float
    median_follow_up_years: float
    loss_rate_per_year: float = 0.03

    def follow_up_window(self) -> tuple[float, float]:
        """Range (years) of the uniform administrative follow-up."""
        return 0.4 * self.median_follow_up_years, 1.9 * self.median_follow_up_years


#: All-cause mortality; Haberl et al. cohort D, crude HR 3.76 for BM.
DEATH = EndpointModel("death", "bm", 3.76, 1.04, 1.25, 0.11, 1.8)
#: Heart-failure hospitalisation; crude HR 5.43 for CA.
HEART_FAILURE = EndpointModel("hf", "ca", 5.43, 1.04, 1.4, 0.04, 2.4)


@dataclass(frozen=True)
class EndpointOutcome:
    """Observed follow-up of one endpoint: days (>= 1) and event flags."""

    time_days: np.ndarray
    event: np.ndarray


def _relative_hazard(
    model: EndpointModel, label: np.ndarray, age: np.ndarray, male: np.ndarray
) -> np.ndarray:
    log_hr = (
        np.log(model.hazard_ratio_label) * label
        + np.log(model.hazard_ratio_age_per_year) * (age - REFERENCE_AGE)
        + np.log(model.hazard_ratio_male) * male
    )
    return np.exp(log_hr)


def _expected_event_fraction(
    base: float, relative: np.ndarray, model: EndpointModel
) -> float:
    """Mean P(event observed) under uniform admin and exponential loss."""
    low, high = model.follow_up_window()
    rate = base * relative
    total = rate + model.loss_rate_per_year
    # E over A ~ U(low, high) of 1 - exp(-total * A), in closed form.
    survive = (np.exp(-total * low) - np.exp(-total * high)) / (total * (high - low))
    return float(np.mean(rate / total * (1.0 - survive)))


def _baseline_hazard(relative: np.ndarray, model: EndpointModel) -> float:
    """Solve (bisection on the log scale) for the baseline hazard per year."""
    low, high = np.log(1e-6), np.log(10.0)
    for _ in range(60):
        middle = (low + high) / 2
        if _expected_event_fraction(float(np.exp(middle)), relative, model) < (
            model.event_fraction
        ):
            low = middle
        else:
            high = middle
    return float(np.exp((low + high) / 2))


def simulate_endpoint(
    model: EndpointModel,
    label: np.ndarray,
    age: np.ndarray,
    male: np.ndarray,
    rng: np.random.Generator,
) -> EndpointOutcome:
    """Simulate one endpoint for a cohort of patients (one row per patient).

    Parameters
    ----------
    model
        The endpoint's hazard model.
    label
        True label (0/1) that drives the endpoint.
    age
        Age in years at the (first) scan.
    male
        1 for male patients, else 0.
    rng
        Source of randomness.

    Returns
    -------
    EndpointOutcome
        Follow-up in whole days (at least 1) and event indicators.
    """
    label = np.asarray(label, dtype=np.float64)
    age = np.asarray(age, dtype=np.float64)
    male = np.asarray(male, dtype=np.float64)
    relative = _relative_hazard(model, label, age, male)
    base = _baseline_hazard(relative, model)
    event_time = rng.exponential(1.0 / (base * relative))
    admin = rng.uniform(*model.follow_up_window(), size=label.shape)
    lost = rng.exponential(1.0 / model.loss_rate_per_year, size=label.shape)
    censor = np.minimum(admin, lost)
    observed = np.minimum(event_time, censor)
    days = np.maximum(np.ceil(observed * _DAYS_PER_YEAR), 1).astype(np.int64)
    return EndpointOutcome(days, (event_time <= censor).astype(np.int64))


def simulate_outcomes(
    label_bm: np.ndarray,
    label_ca: np.ndarray,
    age: np.ndarray,
    male: np.ndarray,
    rng: np.random.Generator,
    endpoints: tuple[EndpointModel, ...] = (DEATH, HEART_FAILURE),
) -> dict[str, EndpointOutcome]:
    """Simulate every endpoint; no images needed.

    Parameters
    ----------
    label_bm, label_ca
        True labels per patient (0/1).
    age, male
        Covariates per patient.
    rng
        Source of randomness.
    endpoints
        Models to simulate; each reads the label it names.

    Returns
    -------
    dict
        Endpoint name to its outcome, e.g. ``{"death": ..., "hf": ...}``.
    """
    labels = {"bm": label_bm, "ca": label_ca}
    return {
        model.name: simulate_endpoint(model, labels[model.label], age, male, rng)
        for model in endpoints
    }
