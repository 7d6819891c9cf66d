"""Cross-validation folds by patient (Haberl et al.'s ensemble) and the vote."""

import numpy as np
import pytest

from fedbone.classifier.errors import TrainingError
from fedbone.classifier.folds import ensemble_scores, patient_folds


def _cohort(seed: int = 0) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    patients, labels = [], []
    for p in range(120):
        label = int(rng.random() < 0.2)
        for _ in range(int(rng.integers(1, 4))):  # 1-3 scans per patient
            patients.append(f"P{p:03d}")
            labels.append(label)
    return patients, np.array(labels)


def test_no_patient_is_split_and_folds_are_stratified() -> None:
    # Prepare
    patients, labels = _cohort()

    # Execute
    folds = patient_folds(patients, labels, 10, seed=3)

    # Assert: one fold per patient
    by_patient: dict[str, set[int]] = {}
    for patient, fold in zip(patients, folds, strict=True):
        by_patient.setdefault(patient, set()).add(int(fold))
    assert all(len(f) == 1 for f in by_patient.values())
    # every fold has a share of the positive patients within one patient
    positive = {p for p, y in zip(patients, labels, strict=True) if y}
    per_fold = [len({p for p in positive if by_patient[p] == {k}}) for k in range(10)]
    assert max(per_fold) - min(per_fold) <= 1
    sizes = [len({p for p, f in by_patient.items() if f == {k}}) for k in range(10)]
    assert max(sizes) - min(sizes) <= 1


def test_folds_depend_on_the_seed_only() -> None:
    patients, labels = _cohort()

    first = patient_folds(patients, labels, 5, seed=1)

    assert np.array_equal(first, patient_folds(patients, labels, 5, seed=1))
    assert not np.array_equal(first, patient_folds(patients, labels, 5, seed=2))


@pytest.mark.parametrize(
    ("k", "code"), [(1, "too-few-folds"), (500, "too-few-patients")]
)
def test_impossible_folds_are_typed_errors(k: int, code: str) -> None:
    patients, labels = _cohort()

    with pytest.raises(TrainingError, match=code):
        patient_folds(patients, labels, k)


def test_the_vote_is_the_majority_and_a_tie_goes_by_the_mean() -> None:
    # Prepare: 4 models, 3 scans
    probabilities = [
        [0.9, 0.2, 0.6],
        [0.8, 0.3, 0.4],
        [0.1, 0.4, 0.9],
        [0.7, 0.1, 0.3],
    ]

    # Execute
    scores = ensemble_scores(probabilities)

    # Assert: 3 of 4 positive; 0 of 4; a 2-2 tie with mean 0.55 -> positive
    assert scores.vote.tolist() == [1, 0, 1]
    assert scores.mean_probability == pytest.approx([0.625, 0.25, 0.55])
    assert scores.agreement == pytest.approx([0.75, 1.0, 0.5])
