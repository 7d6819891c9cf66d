"""Per-class fidelity next to the real-vs-real reference, on tiny random images."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from fedbone.generative.fidelity.reference import (
    LabelledImages,
    fidelity_reference,
    group_rows,
    task_positive,
)
from fedbone.validation.errors import EvaluationError

HEIGHT, WIDTH = 32, 16


def band_means(images: np.ndarray) -> np.ndarray:
    """Stub encoder: the mean of each of 8 horizontal bands (8 features)."""
    return images.reshape(len(images), 8, -1).mean(axis=2)


def draw(class_ids: list[int], *, brightness: float, seed: int) -> LabelledImages:
    """Noise images whose bands get brighter with the class and ``brightness``."""
    rng = np.random.default_rng(seed)
    ids = np.asarray(class_ids, dtype=np.int64)
    bands = rng.uniform(0.0, 0.5, size=(len(ids), 8, 1, 1)) + brightness
    bands[:, :4] += 0.1 * ids[:, None, None, None]
    noise = rng.uniform(0.0, 0.05, size=(len(ids), 8, HEIGHT // 8, WIDTH))
    return LabelledImages((bands + noise).reshape(len(ids), HEIGHT, WIDTH), ids)


def _classes(n_each: int) -> list[int]:
    return [0, 1, 2, 3] * n_each


def test_real_vs_real_is_closer_than_a_generator_of_another_distribution() -> None:
    # Prepare: training and held-out from one distribution, synthetic brighter
    training = draw(_classes(12), brightness=0.0, seed=1)
    held_out = draw(_classes(6), brightness=0.0, seed=2)
    synthetic = draw(list(held_out.class_ids), brightness=0.3, seed=3)

    # Execute
    reference = fidelity_reference(
        training, held_out, synthetic, embed=band_means, task="bm", seed=0
    )

    # Assert
    for item in reference.classes:
        assert item.real.fd < item.synthetic.fd, item.group
        assert item.real.kid < item.synthetic.kid, item.group
        assert item.real.precision > item.synthetic.precision, item.group


def test_real_vs_real_uses_as_many_training_as_held_out_scans() -> None:
    # Prepare: 48 training scans, 24 held-out
    training = draw(_classes(12), brightness=0.0, seed=1)
    held_out = draw(_classes(6), brightness=0.0, seed=2)

    # Execute
    reference = fidelity_reference(
        training, held_out, held_out, embed=band_means, task="ca", seed=0
    )

    # Assert
    sizes = {i.group: (i.real.n_held_out, i.real.n_other) for i in reference.classes}
    assert sizes == {"neg": (12, 12), "pos": (12, 12), "all": (24, 24)}


def test_the_larger_held_out_side_is_subsampled_to_the_training_scans() -> None:
    # Prepare: only 5 training positives (classes 2, 3) against 12 held-out
    training = draw([0, 1] * 10 + [2, 3, 2, 3, 2], brightness=0.0, seed=1)
    held_out = draw(_classes(6), brightness=0.0, seed=2)

    # Execute
    reference = fidelity_reference(
        training, held_out, held_out, embed=band_means, task="bm", seed=0
    )

    # Assert
    positive = reference.classes[1]
    assert (positive.real.n_held_out, positive.real.n_other) == (5, 5)
    assert positive.synthetic.n_held_out == 12


def test_a_class_with_too_few_held_out_scans_is_nan_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Prepare: two bm-positive held-out scans only
    training = draw(_classes(8), brightness=0.0, seed=1)
    held_out = draw([0, 1] * 6 + [2, 3], brightness=0.0, seed=2)
    synthetic = draw(list(held_out.class_ids), brightness=0.1, seed=3)

    # Execute
    with caplog.at_level(logging.WARNING):
        reference = fidelity_reference(
            training, held_out, synthetic, embed=band_means, task="bm", seed=0
        )

    # Assert
    metrics = reference.to_metrics()
    assert np.isnan(metrics["fd-synthetic-pos"]) and np.isnan(
        metrics["recall-real-pos"]
    )
    assert np.isfinite(metrics["fd-synthetic-neg"]) and np.isfinite(
        metrics["fd-real-all"]
    )
    assert "bm pos" in caplog.text and "NaN" in caplog.text


def test_to_metrics_gives_every_measure_source_and_class_as_floats() -> None:
    # Prepare
    training = draw(_classes(6), brightness=0.0, seed=1)
    held_out = draw(_classes(4), brightness=0.0, seed=2)
    reference = fidelity_reference(
        training, held_out, held_out, embed=band_means, task="bm", seed=0
    )

    # Execute
    everything = reference.to_metrics()
    synthetic_only = reference.to_metrics(("synthetic",))

    # Assert
    assert len(everything) == 4 * 2 * 3
    assert {"fd-synthetic-pos", "kid-real-neg", "precision-real-all"} <= set(everything)
    assert all(isinstance(value, float) for value in everything.values())
    assert set(synthetic_only) == {k for k in everything if "-synthetic-" in k}


def test_classes_split_by_the_task_label() -> None:
    # Prepare: class ids 2 * bm + ca
    ids = np.array([0, 1, 2, 3])

    # Execute
    bm, ca = task_positive(ids, "bm"), task_positive(ids, "ca")

    # Assert
    assert bm.tolist() == [False, False, True, True]
    assert ca.tolist() == [False, True, False, True]
    assert group_rows(ids, "ca", "neg").tolist() == [0, 2]


def test_an_unknown_task_is_refused() -> None:
    with pytest.raises(EvaluationError, match="unknown-task"):
        task_positive(np.array([0, 1]), "lung")
