"""Cross-validation folds by patient and the ensemble of the fold models.

Haberl et al. (2025) trained, per task, ten models by stratified 10-fold
cross-validation of the training data, each stopping early on its held-out
fold, and classified by the ensemble's majority vote (the mean probability
gives the ROC). Two rules matter:

- **patients are never split across folds**: every scan of a patient falls in
  the same fold, or a model would stop early on scans of patients it trained
  on (:func:`patient_folds`);
- **folds are stratified** by the patient's label (positive if any of the
  patient's scans is), dealt out class by class after a seeded shuffle, so
  every fold holds about the same share of positives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedbone.classifier.errors import TrainingError
from fedbone.errors import Problem

__all__ = ["EnsembleScores", "ensemble_scores", "patient_folds"]


def patient_folds(
    patient_ids: Sequence[str], labels: npt.ArrayLike, k: int, *, seed: int = 0
) -> npt.NDArray[np.int64]:
    """Assign every scan a fold ``0..k-1``, by patient and stratified by label.

    Parameters
    ----------
    patient_ids
        The patient of each scan.
    labels
        Each scan's 0/1 label for the task.
    k
        Number of folds (Haberl et al.: 10).
    seed
        Seed of the shuffle; the same inputs and seed give the same folds.

    Raises
    ------
    TrainingError
        For ``k < 2``, fewer patients than folds, labels not 0/1, or lengths
        that differ.
    """
    labels = np.asarray(labels)
    problems = []
    if len(patient_ids) != len(labels):
        problems.append(
            Problem(
                "length-mismatch",
                f"{len(patient_ids)} patient ids but {len(labels)} labels",
            )
        )
    if not np.isin(labels, (0, 1)).all():
        problems.append(Problem("not-binary", "labels must be 0 or 1 (known)"))
    patients = sorted(set(patient_ids))
    if k < 2:
        problems.append(Problem("too-few-folds", f"k={k}; use at least 2 folds"))
    elif len(patients) < k:
        problems.append(
            Problem(
                "too-few-patients",
                f"{len(patients)} patients cannot fill {k} folds; use fewer folds",
            )
        )
    TrainingError.raise_if_any("cross-validation folds", problems)
    positive = {p: False for p in patients}
    for patient, label in zip(patient_ids, labels, strict=True):
        positive[patient] = positive[patient] or bool(label)
    rng = np.random.default_rng(seed)
    fold_of: dict[str, int] = {}
    offset = 0
    for wanted in (True, False):
        group = [p for p in patients if positive[p] == wanted]
        order = rng.permutation(len(group))
        for rank, index in enumerate(order):
            fold_of[group[index]] = (offset + rank) % k
        # the next class continues where this one stopped, so fold sizes
        # stay within one patient of each other
        offset = (offset + len(group)) % k
    return np.array([fold_of[p] for p in patient_ids], dtype=np.int64)


@dataclass(frozen=True)
class EnsembleScores:
    """The ensemble's call and score per scan.

    Parameters
    ----------
    vote
        0/1 majority vote of the models' calls at the threshold; a tie is
        broken by the mean probability.
    mean_probability
        Mean of the models' probabilities (for ROC analysis).
    agreement
        Share of models agreeing with the vote.
    """

    vote: npt.NDArray[np.int64]
    mean_probability: npt.NDArray[np.float64]
    agreement: npt.NDArray[np.float64]


def ensemble_scores(
    probabilities: npt.ArrayLike, *, threshold: float = 0.5
) -> EnsembleScores:
    """Combine ``(models, scans)`` probabilities by majority vote and mean.

    Raises
    ------
    TrainingError
        For an array that is not 2-D, or probabilities outside [0, 1].
    """
    p = np.asarray(probabilities, dtype=np.float64)
    problems = []
    if p.ndim != 2 or p.shape[0] == 0:
        problems.append(Problem("bad-shape", "expected (models, scans) probabilities"))
    elif not ((p >= 0) & (p <= 1)).all():
        problems.append(Problem("not-a-probability", "probabilities lie in [0, 1]"))
    TrainingError.raise_if_any("ensemble", problems)
    calls = p >= threshold
    positive = calls.sum(axis=0)
    negative = p.shape[0] - positive
    mean = p.mean(axis=0)
    vote = np.where(positive == negative, mean >= threshold, positive > negative)
    agreement = np.where(vote, positive, negative) / p.shape[0]
    return EnsembleScores(
        vote=vote.astype(np.int64), mean_probability=mean, agreement=agreement
    )
