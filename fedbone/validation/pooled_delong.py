"""Federated paired DeLong test of two models from aggregates only.

Two models A and B are scored on the same patients at every site. Two
exchanges give DeLong's test on all sites' patients, exact up to binning:

1. sites send :func:`~fedbone.validation.histograms.score_histograms` for A and
   for B; the server pools them (these give both AUCs);
2. the server sends the pooled histograms back; each site computes, for its own
   patients, the structural components against the *pooled* other-class
   distribution and returns only their count, sums, sums of squares and
   cross-products per class (:func:`paired_component_sums`); the server adds
   them, forms the 2x2 covariance matrices ``S10`` and ``S01`` and runs the
   z-test (:func:`pooled_paired_test`).
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fedbone.errors import Problem
from fedbone.validation.delong import PairedComparison
from fedbone.validation.errors import EvaluationError
from fedbone.validation.histograms import (
    ScoreHistograms,
    auc_from_counts,
    bin_components,
    bin_indices,
)
from fedbone.validation.inputs import check_binary_inputs, check_confidence

__all__ = [
    "ComponentSums",
    "PairedComponentSums",
    "paired_component_sums",
    "pooled_paired_test",
]

_CONTRAST = np.array([1.0, -1.0])  # var(A - B) = c' S c
_SUM_FIELDS = ("a", "b", "aa", "bb", "ab")  # ComponentSums.sum_<field>


@dataclass(frozen=True)
class ComponentSums:
    """Sums of two models' structural components over one class of patients.

    Parameters
    ----------
    n
        Patients summed over.
    sum_a, sum_b
        Sums of the components of model A and of model B.
    sum_aa, sum_bb, sum_ab
        Sums of their squares and of their products.
    """

    n: int
    sum_a: float
    sum_b: float
    sum_aa: float
    sum_bb: float
    sum_ab: float

    @classmethod
    def of(
        cls,
        components_a: npt.NDArray[np.float64],
        components_b: npt.NDArray[np.float64],
    ) -> ComponentSums:
        """Sum one class's components of model A and model B (same patients)."""
        return cls(
            n=int(components_a.size),
            sum_a=float(components_a.sum()),
            sum_b=float(components_b.sum()),
            sum_aa=float(components_a @ components_a),
            sum_bb=float(components_b @ components_b),
            sum_ab=float(components_a @ components_b),
        )

    def __add__(self, other: ComponentSums) -> ComponentSums:
        """Add two sites' sums."""
        return ComponentSums(
            self.n + other.n,
            self.sum_a + other.sum_a,
            self.sum_b + other.sum_b,
            self.sum_aa + other.sum_aa,
            self.sum_bb + other.sum_bb,
            self.sum_ab + other.sum_ab,
        )

    def covariance(self) -> npt.NDArray[np.float64]:
        """Sample covariance matrix (2x2) of (A, B); ``nan`` below 2 patients."""
        if self.n < 2:
            return np.full((2, 2), np.nan)
        sums = np.array([self.sum_a, self.sum_b])
        products = np.array([[self.sum_aa, self.sum_ab], [self.sum_ab, self.sum_bb]])
        return (products - np.outer(sums, sums) / self.n) / (self.n - 1)


@dataclass(frozen=True)
class PairedComponentSums:
    """What a site returns in exchange 2 of the federated paired DeLong test.

    Parameters
    ----------
    positives
        Sums of ``V10`` of models A and B over the site's positives.
    negatives
        Sums of ``V01`` of models A and B over the site's negatives.
    """

    positives: ComponentSums
    negatives: ComponentSums

    def __add__(self, other: PairedComponentSums) -> PairedComponentSums:
        """Add two sites' sums."""
        return PairedComponentSums(
            self.positives + other.positives, self.negatives + other.negatives
        )

    def to_dict(self) -> dict[str, int | float]:
        """Return flat kebab-case scalars, ready for one Flower ``MetricRecord``.

        Keys: ``n-pos``, ``n-neg`` and ``sum-{pos,neg}-{a,b,aa,bb,ab}``.
        """
        flat: dict[str, int | float] = {}
        for tag, sums in (("pos", self.positives), ("neg", self.negatives)):
            flat[f"n-{tag}"] = sums.n
            for field in _SUM_FIELDS:
                flat[f"sum-{tag}-{field}"] = getattr(sums, f"sum_{field}")
        return flat

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PairedComponentSums:
        """Rebuild (and check) sums written by :meth:`to_dict`.

        Raises
        ------
        EvaluationError
            ``bad-component-sums`` for missing, non-numeric or non-count entries.
        """
        try:
            positives, negatives = (
                ComponentSums(
                    _count(data[f"n-{tag}"]),
                    *(float(data[f"sum-{tag}-{field}"]) for field in _SUM_FIELDS),
                )
                for tag in ("pos", "neg")
            )
        except (KeyError, TypeError, ValueError) as error:
            problem = Problem(
                "bad-component-sums",
                f"cannot read component sums ({error!r}); send the dict written "
                "by PairedComponentSums.to_dict()",
            )
            raise EvaluationError("paired component sums", [problem]) from error
        return cls(positives, negatives)


def paired_component_sums(
    labels: npt.ArrayLike,
    scores_a: npt.ArrayLike,
    scores_b: npt.ArrayLike,
    pooled_a: ScoreHistograms,
    pooled_b: ScoreHistograms,
) -> PairedComponentSums:
    """Sum a site's structural components against the pooled histograms (site).

    Parameters
    ----------
    labels
        The site's 0/1 labels.
    scores_a, scores_b
        The site's scores from model A and model B (same patients, in [0, 1]).
    pooled_a, pooled_b
        Pooled histograms of model A and of model B over every site, this one
        included, as the server sent them back.

    Returns
    -------
    PairedComponentSums
        Counts and sums only; no per-patient value.

    Raises
    ------
    EvaluationError
        For bad labels or scores, or pooled histograms that do not contain this
        site's patients (``site-not-in-pooled-histograms``) or that disagree on
        class sizes (``pooled-class-sizes-differ``).
    """
    subject = "paired_component_sums"
    positive, checked = check_binary_inputs(
        subject,
        labels,
        {"scores_a": scores_a, "scores_b": scores_b},
        unit_interval=True,
    )
    models = (("scores_a", pooled_a), ("scores_b", pooled_b))
    found = {name: bin_indices(checked[name], pooled.bins) for name, pooled in models}
    problems = _class_size_problems(pooled_a, pooled_b)
    for name, pooled in models:
        own_positives = np.bincount(found[name][positive], minlength=pooled.bins)
        own_negatives = np.bincount(found[name][~positive], minlength=pooled.bins)
        if (own_positives > pooled.positives).any() or (
            own_negatives > pooled.negatives
        ).any():
            problems.append(
                Problem(
                    "site-not-in-pooled-histograms",
                    "this site's patients are not all counted in the pooled "
                    "histograms; pass the pooled histograms of the same model and "
                    "bins that this site contributed to",
                    name,
                )
            )
    EvaluationError.raise_if_any(subject, problems)
    v10_a, v01_a = bin_components(pooled_a)
    v10_b, v01_b = bin_components(pooled_b)
    bins_a, bins_b = found["scores_a"], found["scores_b"]
    return PairedComponentSums(
        positives=ComponentSums.of(v10_a[bins_a[positive]], v10_b[bins_b[positive]]),
        negatives=ComponentSums.of(v01_a[bins_a[~positive]], v01_b[bins_b[~positive]]),
    )


def pooled_paired_test(
    sums: Sequence[PairedComponentSums],
    pooled_a: ScoreHistograms,
    pooled_b: ScoreHistograms,
    *,
    confidence: float = 0.95,
) -> PairedComparison:
    """Run the federated two-sided DeLong test of models A and B (server).

    Parameters
    ----------
    sums
        :func:`paired_component_sums` from every site.
    pooled_a, pooled_b
        The pooled histograms the sites computed their sums against.
    confidence
        Level of the interval on the AUC difference.

    Returns
    -------
    PairedComparison
        As :func:`~fedbone.validation.delong.delong_paired_test` would give on
        all sites' binned scores.

    Raises
    ------
    EvaluationError
        ``no-component-sums``, ``pooled-class-sizes-differ``, or
        ``sums-do-not-match-histograms`` when the sites' patient counts do not
        add up to the pooled histograms (a site missing or sent twice).
    """
    subject = "pooled_paired_test"
    check_confidence(subject, confidence)
    if not sums:
        EvaluationError.raise_if_any(
            subject,
            [
                Problem(
                    "no-component-sums",
                    "no site sums to combine; pass every site's "
                    "paired_component_sums()",
                )
            ],
        )
    total = functools.reduce(operator.add, sums)
    problems = _class_size_problems(pooled_a, pooled_b)
    counted = (total.positives.n, total.negatives.n)
    expected = (pooled_a.n_positive, pooled_a.n_negative)
    if counted != expected:
        problems.append(
            Problem(
                "sums-do-not-match-histograms",
                f"the sites' sums cover {counted[0]} positives and {counted[1]} "
                f"negatives but the pooled histograms hold {expected[0]} and "
                f"{expected[1]}; collect exactly one reply from every site that "
                "contributed to the histograms",
            )
        )
    EvaluationError.raise_if_any(subject, problems)
    auc_a = float(auc_from_counts(pooled_a.positives, pooled_a.negatives))
    auc_b = float(auc_from_counts(pooled_b.positives, pooled_b.negatives))
    m, n = expected
    variance = math.nan
    if m >= 2 and n >= 2:
        s10 = total.positives.covariance()
        s01 = total.negatives.covariance()
        variance = float(
            _CONTRAST @ s10 @ _CONTRAST / m + _CONTRAST @ s01 @ _CONTRAST / n
        )
    return PairedComparison.from_variance(auc_a, auc_b, variance, confidence)


def _class_size_problems(
    pooled_a: ScoreHistograms, pooled_b: ScoreHistograms
) -> list[Problem]:
    sizes_a = (pooled_a.n_positive, pooled_a.n_negative)
    sizes_b = (pooled_b.n_positive, pooled_b.n_negative)
    if sizes_a == sizes_b:
        return []
    return [
        Problem(
            "pooled-class-sizes-differ",
            f"model A's pooled histograms count {sizes_a} (positives, negatives) "
            f"but model B's count {sizes_b}; both models must be scored on the "
            "same patients at every site",
        )
    ]


def _count(value: object) -> int:
    """Read a patient count, refusing fractions, negatives and bools."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise TypeError(f"count {value!r} is not a number")
    if value < 0 or value != int(value):
        raise ValueError(f"count {value!r} is not a non-negative whole number")
    return int(value)
