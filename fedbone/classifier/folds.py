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

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedbone.classifier.errors import TrainingError
from fedbone.classifier.runtime import TrainingImages
from fedbone.errors import Problem

__all__ = [
    "MAX_MEMBERS",
    "MEMBER_PREFIX",
    "BestRound",
    "EnsembleScores",
    "FoldView",
    "ensemble_scores",
    "is_ensemble",
    "pack_ensemble",
    "patient_folds",
    "unpack_ensemble",
]


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


class FoldView:
    """A site's images with one cross-validation fold held out as ``val``.

    The site's development data (its ``train`` and ``val`` splits) is divided
    into ``folds`` folds by :func:`patient_folds`; this view's ``train`` split
    is every other fold and its ``val`` split is fold ``fold``, so the
    existing local training and evaluation code stops early on the held-out
    fold. ``test`` is untouched. Rows whose label is unknown go with their
    patient (training and scoring skip them).

    Parameters
    ----------
    cache
        The site's images; ``patient_ids`` gives each row's patient.
    patient_ids
        The patient of every row of ``cache``.
    task
        The label the folds are stratified by.
    fold, folds
        The held-out fold (``0..folds-1``) and the number of folds.
    seed
        Seed of the fold assignment; every fold model of one ensemble must
        use the same seed so the folds partition the data.
    min_patients
        Fewest patients a fold may hold (the site's small-cell rule): a
        centre asking for so many folds that each holds a handful of patients
        would learn near per-patient validation losses.

    Raises
    ------
    TrainingError
        For a fold outside ``0..folds-1``, or folds too small for the site's
        rule (with the most folds this site allows).
    """

    def __init__(
        self,
        cache: TrainingImages,
        patient_ids: Sequence[str],
        task: str,
        *,
        fold: int,
        folds: int,
        seed: int,
        min_patients: int,
    ) -> None:
        development = np.sort(
            np.concatenate([cache.indices("train"), cache.indices("val")])
        )
        labels = cache.labels(task)
        known = development[labels[development] >= 0]
        patients = [patient_ids[i] for i in known]
        n_patients = len(set(patients))
        most = n_patients // max(1, min_patients)
        problems = []
        if not 0 <= fold < folds:
            problems.append(
                Problem("bad-fold", f"fold {fold} is not one of 0..{folds - 1}")
            )
        if folds > most:
            problems.append(
                Problem(
                    "folds-too-small",
                    f"{folds} folds of {n_patients} patients would hold fewer "
                    f"than {min_patients} patients each (the site's small-cell "
                    f"rule); this site allows at most {most} folds",
                )
            )
        TrainingError.raise_if_any("cross-validation fold", problems)
        assigned = patient_folds(patients, labels[known], folds, seed=seed)
        held_out_patients = {
            patient for patient, f in zip(patients, assigned, strict=True) if f == fold
        }
        # a held-out patient's scans of unknown label go with the patient
        held_out = np.array(
            [i for i in development if patient_ids[i] in held_out_patients],
            dtype=np.int64,
        )
        self._val = held_out
        self._train = np.setdiff1d(development, held_out)
        self._cache = cache
        self.images = cache.images
        self.cache_dir = cache.cache_dir
        self.fold = fold
        self.folds = folds

    def __len__(self) -> int:
        return len(self._cache)

    def indices(self, split: str) -> np.ndarray:
        """Positions in ``split``: the other folds, the held-out fold, or test."""
        if split == "train":
            return self._train.copy()
        if split == "val":
            return self._val.copy()
        return self._cache.indices(split)

    def labels(self, task: str) -> np.ndarray:
        """Return the cache's labels for ``task`` (``-1`` unknown)."""
        return self._cache.labels(task)


class BestRound:
    """Federated early stopping: keep the global model of the best round.

    After each round the sites score the new global model on their held-out
    folds; the round with the lowest example-weighted mean validation loss
    wins, and training stops ``patience`` rounds after the last improvement.

    Parameters
    ----------
    patience
        Rounds without improvement before stopping.
    """

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best_round = 0
        self.best_loss = math.inf
        self.best_arrays: dict[str, np.ndarray] | None = None
        self.losses: dict[int, float] = {}

    def update(
        self,
        round_number: int,
        site_losses: Sequence[tuple[float, int]],
        arrays: dict[str, np.ndarray],
    ) -> bool:
        """Record a round's ``(val_loss, n_examples)`` per site; True: stop.

        A round whose sites sent no finite loss counts as no improvement.

        Parameters
        ----------
        round_number
            The round just finished, counted from 1.
        site_losses
            Each site's held-out loss and the number of scans it scored.
        arrays
            The round's global model (copied when it is the best so far).
        """
        finite = [(loss, n) for loss, n in site_losses if math.isfinite(loss) and n]
        weight = sum(n for _, n in finite)
        loss = sum(v * n for v, n in finite) / weight if weight else math.inf
        self.losses[round_number] = loss
        if loss < self.best_loss:
            self.best_loss, self.best_round = loss, round_number
            self.best_arrays = {k: np.array(v, copy=True) for k, v in arrays.items()}
        return round_number - self.best_round >= self.patience


#: Key prefix of a fold model's arrays inside an ensemble's one array record.
MEMBER_PREFIX = "member-"
#: Most models an ensemble may hold (a site refuses more: each costs a pass).
MAX_MEMBERS = 20


def pack_ensemble(members: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Put the fold models' arrays in one mapping (``member-<j>.<key>``).

    One model record per ensemble lets every existing path (checkpoint, model
    files, validation, the egress guard's model names) carry it unchanged.
    """
    return {
        f"{MEMBER_PREFIX}{j}.{key}": value
        for j, arrays in enumerate(members, start=1)
        for key, value in arrays.items()
    }


def is_ensemble(arrays: dict[str, np.ndarray]) -> bool:
    """Whether ``arrays`` were made by :func:`pack_ensemble`."""
    return bool(arrays) and all(key.startswith(MEMBER_PREFIX) for key in arrays)


def unpack_ensemble(arrays: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Split :func:`pack_ensemble`'s mapping back into the fold models.

    Raises
    ------
    TrainingError
        For keys not of the form ``member-<j>.<key>``, members numbered other
        than ``1..k``, or more than :data:`MAX_MEMBERS` members.
    """
    members: dict[int, dict[str, np.ndarray]] = {}
    problems = []
    for key, value in arrays.items():
        head, _, rest = key.partition(".")
        number = head.removeprefix(MEMBER_PREFIX)
        if not key.startswith(MEMBER_PREFIX) or not number.isdigit() or not rest:
            problems.append(Problem("bad-member-key", f"{key[:80]!r}"))
            continue
        members.setdefault(int(number), {})[rest] = value
    if sorted(members) != list(range(1, len(members) + 1)):
        problems.append(Problem("bad-members", "members must be numbered 1..k"))
    if len(members) > MAX_MEMBERS:
        problems.append(
            Problem(
                "too-many-members",
                f"{len(members)} models; an ensemble holds at most {MAX_MEMBERS}",
            )
        )
    TrainingError.raise_if_any("ensemble", problems[:5])
    return [members[j] for j in sorted(members)]
