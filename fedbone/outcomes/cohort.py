"""A site's outcome cohort: one record per patient, kept at the site.

The outcome cohort of a site is the first scan of every patient in the
validation split who has follow-up for at least one endpoint, scored by the
study's final model and grouped predicted-positive (score >= threshold) or
predicted-negative. Age and sex come from the cache (manifest, else DICOM
header). The cohort is written to the site's work folder between the rounds of
the outcome analysis (:meth:`OutcomeCohort.save`), so the federated Cox rounds
do not score the model again; nothing of it leaves the site.

Covariates of the two Cox models (:data:`COX_MODELS`): the crude model has the
prediction only; the adjusted model adds age (per year) and male sex (1 for
``M``, 0 for ``F``; ``O`` and unknown sex leave the patient out of the adjusted
model, as does unknown age: complete cases).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedbone.classifier.local import predict
from fedbone.data.cache import SiteCache
from fedbone.errors import Problem
from fedbone.models import ClassifierSpec, build_classifier
from fedbone.models.parameters import load_arrays
from fedbone.safe_names import run_folder
from fedbone.validation.errors import EvaluationError

__all__ = [
    "COX_MODELS",
    "OutcomeCohort",
    "cohort_path",
    "first_scans",
    "score_outcome_cohort",
]

FloatArray = npt.NDArray[np.float64]

#: Covariates of the crude and the adjusted Cox model, in column order.
COX_MODELS: Mapping[str, tuple[str, ...]] = {
    "crude": ("predicted-positive",),
    "adjusted": ("predicted-positive", "age-per-year", "male"),
}

_SEX_CODES = {"M": 1.0, "F": 0.0}


@dataclass(frozen=True, eq=False)
class OutcomeCohort:
    """One row per patient: prediction, covariates and follow-up per endpoint.

    Parameters
    ----------
    predicted
        1 for predicted positive, else 0.
    age
        Years at the scan, NaN when unknown.
    male
        1 male, 0 female, NaN when unknown or other.
    times, events
        Per endpoint: follow-up days and 0/1 event flags, NaN where the
        patient has no follow-up for that endpoint.
    """

    predicted: npt.NDArray[np.int64]
    age: FloatArray
    male: FloatArray
    times: Mapping[str, FloatArray]
    events: Mapping[str, FloatArray]

    @property
    def n_patients(self) -> int:
        """Patients in the cohort."""
        return int(self.predicted.size)

    @property
    def endpoints(self) -> tuple[str, ...]:
        """Endpoints with follow-up for at least one patient."""
        return tuple(
            name
            for name, values in sorted(self.times.items())
            if np.isfinite(values).any()
        )

    def records(
        self, endpoint: str, model: str = "crude"
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Return times, events and covariates of one model's complete cases.

        Parameters
        ----------
        endpoint
            An endpoint name (``death``, ``hf``...).
        model
            ``crude`` or ``adjusted`` (:data:`COX_MODELS`).

        Returns
        -------
        tuple of numpy.ndarray
            ``(n,)`` times, ``(n,)`` events and ``(n, p)`` covariates of the
            patients with follow-up and every covariate of the model known.

        Raises
        ------
        EvaluationError
            ``unknown-endpoint`` or ``unknown-model``.
        """
        problems = []
        if endpoint not in self.times:
            problems.append(
                Problem(
                    "unknown-endpoint",
                    f"no {endpoint!r} follow-up at this site; it has "
                    f"{', '.join(self.endpoints) or 'none'}",
                )
            )
        if model not in COX_MODELS:
            problems.append(
                Problem("unknown-model", f"use one of {', '.join(COX_MODELS)}")
            )
        EvaluationError.raise_if_any("outcome cohort", problems)
        columns = {
            "predicted-positive": self.predicted.astype(np.float64),
            "age-per-year": self.age,
            "male": self.male,
        }
        x = np.column_stack([columns[name] for name in COX_MODELS[model]])
        t = self.times[endpoint]
        d = self.events[endpoint]
        keep = np.isfinite(t) & np.isfinite(d) & np.isfinite(x).all(axis=1)
        return t[keep], d[keep], x[keep]

    def save(self, path: Path) -> Path:
        """Write the cohort (at the site) for the later rounds of the analysis."""
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {
            "predicted": self.predicted,
            "age": self.age,
            "male": self.male,
        }
        for name in self.times:
            arrays[f"time:{name}"] = self.times[name]
            arrays[f"event:{name}"] = self.events[name]
        with path.open("wb") as handle:
            np.savez(handle, **arrays)  # type: ignore[arg-type]
        return path

    @classmethod
    def load(cls, path: Path) -> OutcomeCohort:
        """Read a cohort written by :meth:`save`.

        Raises
        ------
        EvaluationError
            ``no-cohort`` when the file is missing (the counts round of the
            outcome analysis has not run at this site for this run).
        """
        if not path.is_file():
            raise EvaluationError(
                "outcome cohort",
                [
                    Problem(
                        "no-cohort",
                        f"{path} is missing; the server must ask for the "
                        "outcome counts (query.outcomes) before the Cox rounds",
                    )
                ],
            )
        with np.load(path) as data:
            names = [k.split(":", 1)[1] for k in data.files if k.startswith("time:")]
            return cls(
                predicted=data["predicted"].astype(np.int64),
                age=data["age"].astype(np.float64),
                male=data["male"].astype(np.float64),
                times={n: data[f"time:{n}"].astype(np.float64) for n in names},
                events={n: data[f"event:{n}"].astype(np.float64) for n in names},
            )


def cohort_path(work_dir: Path, run_name: str) -> Path:
    """Where a run's outcome cohort lives in the site's work folder."""
    return run_folder(work_dir, "runs", run_name) / "outcome-cohort.npz"


def first_scans(cache: SiteCache, split: str) -> npt.NDArray[np.int64]:
    """Positions of each patient's first scan among the scans of ``split``.

    The first scan is the one with the earliest study date; scans without a
    date come after dated ones, and ties keep cache order.
    """
    first: dict[str, tuple[tuple[int, str, int], int]] = {}
    for position in cache.indices(split).tolist():
        record = cache.index[position]
        key = (0 if record.study_date else 1, record.study_date or "", position)
        best = first.get(record.patient_id)
        if best is None or key < best[0]:
            first[record.patient_id] = (key, position)
    return np.array(sorted(p for _, p in first.values()), dtype=np.int64)


def _endpoint_values(
    cache: SiteCache, positions: npt.NDArray[np.int64], endpoint: str
) -> tuple[FloatArray, FloatArray]:
    times = np.full(positions.size, np.nan)
    events = np.full(positions.size, np.nan)
    for row, position in enumerate(positions.tolist()):
        time, event = cache.index[position].endpoints.get(endpoint, (None, None))
        if time is not None and event is not None:
            times[row], events[row] = float(time), float(event)
    return times, events


def score_outcome_cohort(
    cache: SiteCache,
    spec: ClassifierSpec,
    arrays: Mapping[str, np.ndarray],
    *,
    split: str,
    threshold: float,
    endpoints: tuple[str, ...],
) -> OutcomeCohort:
    """Score the first scan of every patient with follow-up; build the cohort.

    Parameters
    ----------
    cache
        The site's prepared scans.
    spec, arrays
        The classifier and the final model's weights.
    split
        The split whose patients form the cohort (the study's validation
        split; validation-only sites hold every scan in ``test``).
    threshold
        Predicted positive when the probability is at least this.
    endpoints
        Endpoints the study analyses; those the site lacks stay NaN.

    Returns
    -------
    OutcomeCohort
        Possibly empty when no patient has follow-up.
    """
    positions = first_scans(cache, split)
    values = {name: _endpoint_values(cache, positions, name) for name in endpoints}
    followed = np.zeros(positions.size, dtype=bool)
    for times, _ in values.values():
        followed |= np.isfinite(times)
    positions = positions[followed]
    scores = np.zeros(0)
    if positions.size:
        model = build_classifier(spec)
        load_arrays(model, arrays)
        scores = predict(model, cache, positions)
    records = [cache.index[p] for p in positions.tolist()]
    return OutcomeCohort(
        predicted=(scores >= threshold).astype(np.int64),
        age=np.array(
            [np.nan if r.age is None else float(r.age) for r in records],
            dtype=np.float64,
        ),
        male=np.array(
            [_SEX_CODES.get(r.sex or "", np.nan) for r in records], dtype=np.float64
        ),
        times={name: t[followed] for name, (t, _) in values.items()},
        events={name: e[followed] for name, (_, e) in values.items()},
    )
