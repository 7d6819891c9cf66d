"""Checks shared by every evaluation entry point: labels, scores, settings.

Each check collects every problem it finds and raises one
:class:`~fedbone.validation.errors.EvaluationError`, so a caller fixes a bad
call in one pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from fedbone.errors import Problem
from fedbone.validation.errors import EvaluationError

__all__ = ["check_binary_inputs", "check_confidence", "check_threshold"]

_SHOWN = 5  # offending values/positions quoted in a message


def check_binary_inputs(
    subject: str,
    labels: npt.ArrayLike,
    scores: Mapping[str, npt.ArrayLike],
    *,
    unit_interval: bool = False,
) -> tuple[npt.NDArray[np.bool_], dict[str, npt.NDArray[np.float64]]]:
    """Validate 0/1 labels and one or more score vectors for the same patients.

    Parameters
    ----------
    subject
        What is being computed (``"roc_auc"``...), quoted in the error.
    labels
        One label per patient, 0 (negative) or 1 (positive); bools accepted.
    scores
        Score vectors by name (``{"scores": ...}``), each as long as ``labels``.
    unit_interval
        Also require every score to lie in [0, 1] (probabilities).

    Returns
    -------
    tuple
        The positive mask and the scores as float64 arrays, by name.

    Raises
    ------
    EvaluationError
        Listing every problem: ``not-one-dimensional``, ``labels-not-binary``,
        ``scores-not-numeric``, ``length-mismatch``, ``scores-not-finite``,
        ``scores-outside-unit-interval``.
    """
    problems: list[Problem] = []
    label_array = np.asarray(labels)
    if label_array.ndim != 1:
        problems.append(_not_1d("labels", label_array))
    positive = np.zeros(label_array.shape[:1], dtype=bool)
    if label_array.ndim == 1:
        positive, problem = _binary_labels(label_array)
        if problem is not None:
            problems.append(problem)
    checked: dict[str, npt.NDArray[np.float64]] = {}
    for name, values in scores.items():
        array, found = _scores(name, values, len(positive), unit_interval)
        problems.extend(found)
        checked[name] = array
    EvaluationError.raise_if_any(subject, problems)
    return positive, checked


def check_confidence(subject: str, confidence: float) -> None:
    """Require a confidence level strictly between 0 and 1 (``0.95``).

    Raises
    ------
    EvaluationError
        With code ``bad-confidence``.
    """
    if not 0.0 < confidence < 1.0:
        EvaluationError.raise_if_any(
            subject,
            [
                Problem(
                    "bad-confidence",
                    f"confidence is {confidence!r}; use a level strictly between "
                    "0 and 1, e.g. 0.95 for a 95% interval",
                )
            ],
        )


def check_threshold(subject: str, threshold: float) -> None:
    """Require a finite operating point (``0.5``).

    Raises
    ------
    EvaluationError
        With code ``bad-threshold``.
    """
    try:
        finite = math.isfinite(threshold)
    except TypeError:
        finite = False
    if not finite:
        EvaluationError.raise_if_any(
            subject,
            [
                Problem(
                    "bad-threshold",
                    f"threshold is {threshold!r}; use a finite score, e.g. 0.5 "
                    "(positive if p >= 0.5)",
                )
            ],
        )


def _not_1d(name: str, array: npt.NDArray[np.generic]) -> Problem:
    return Problem(
        "not-one-dimensional",
        f"{name} has shape {array.shape}; pass one value per patient as a 1-D sequence",
        name,
    )


def _binary_labels(
    labels: npt.NDArray[np.generic],
) -> tuple[npt.NDArray[np.bool_], Problem | None]:
    if labels.dtype == bool:
        return labels.astype(bool), None
    is_zero = np.zeros(labels.shape, dtype=bool)
    is_one = np.zeros(labels.shape, dtype=bool)
    if np.issubdtype(labels.dtype, np.number):
        is_zero = labels == 0
        is_one = labels == 1
    bad = ~(is_zero | is_one)
    if not bad.any():
        return is_one, None
    shown = ", ".join(repr(v) for v in np.unique(labels[bad].astype(str))[:_SHOWN])
    return is_one, Problem(
        "labels-not-binary",
        f"{int(bad.sum())} labels are not 0 or 1 (found {shown}); encode the "
        "positive class as 1 and the negative class as 0",
        "labels",
    )


def _scores(
    name: str, values: npt.ArrayLike, expected_length: int, unit_interval: bool
) -> tuple[npt.NDArray[np.float64], list[Problem]]:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return np.zeros(0), [
            Problem(
                "scores-not-numeric",
                "scores must be numbers (model probabilities); convert them to "
                "floats before evaluating",
                name,
            )
        ]
    if array.ndim != 1:
        return array, [_not_1d(name, array)]
    problems: list[Problem] = []
    if array.size != expected_length:
        problems.append(
            Problem(
                "length-mismatch",
                f"{array.size} scores for {expected_length} labels; pass exactly "
                "one score per labelled patient, in the same order",
                name,
            )
        )
    finite = np.isfinite(array)
    if not finite.all():
        positions = np.flatnonzero(~finite)
        problems.append(
            Problem(
                "scores-not-finite",
                f"{positions.size} scores are NaN or infinite (positions "
                f"{positions[:_SHOWN].tolist()}); fix or drop those patients",
                name,
            )
        )
    outside = finite & ((array < 0.0) | (array > 1.0))
    if unit_interval and outside.any():
        problems.append(
            Problem(
                "scores-outside-unit-interval",
                f"{int(outside.sum())} scores lie outside [0, 1] (e.g. "
                f"{array[outside][:_SHOWN].tolist()}); pass probabilities, e.g. "
                "the softmax or sigmoid output, not logits",
                name,
            )
        )
    return array, problems
