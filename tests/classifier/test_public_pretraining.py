"""Phantom pretraining at the centre: a trained start, kept and reused, no site data."""

import time
from pathlib import Path

import numpy as np
import pytest

from fedbone.classifier.local import TrainSpec
from fedbone.classifier.public_pretraining import (
    PhantomPretraining,
    pretrain_on_phantoms,
)
from fedbone.config.profiles import profile_spec
from fedbone.models import Architecture, ClassifierSpec, Norm, build_classifier
from fedbone.models.parameters import state_to_arrays

CLASSIFIER = ClassifierSpec(architecture=Architecture.SMALL_CNN_NARROW, norm=Norm.GROUP)


@pytest.mark.slow
def test_the_centre_pretrains_on_its_own_phantoms_and_reuses_the_model(
    tmp_path: Path,
) -> None:
    # Prepare
    settings = PhantomPretraining(epochs=1, scale=0.001)
    training = TrainSpec(batch_size=16, device="cpu", max_batches_per_epoch=3)
    untrained = state_to_arrays(build_classifier(CLASSIFIER))

    # Execute
    first = pretrain_on_phantoms(
        CLASSIFIER,
        profile_spec("cpu"),
        "bm",
        settings,
        training,
        seed=0,
        work_dir=tmp_path / "pretrained",
    )
    started = time.perf_counter()
    again = pretrain_on_phantoms(
        CLASSIFIER,
        profile_spec("cpu"),
        "bm",
        settings,
        training,
        seed=0,
        work_dir=tmp_path / "pretrained",
    )
    reuse_s = time.perf_counter() - started

    # Assert: the weights moved, the model is kept by its settings and reused
    assert first.keys() == untrained.keys()
    moved = [
        k for k in first if not np.array_equal(first[k], untrained[k]) and "head" in k
    ]
    assert moved
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert len(list((tmp_path / "pretrained").glob("*.npz"))) == 1
    assert reuse_s < 5.0
