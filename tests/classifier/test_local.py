from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from tiny_caches import build_toy_cache

from fedbone.classifier.augment import AugmentSpec
from fedbone.classifier.errors import TrainingError
from fedbone.classifier.local import (
    TrainSpec,
    predict,
    read_batch,
    resolve_device,
    train_local,
)
from fedbone.classifier.sampling import Sampling
from fedbone.data.cache import SiteCache
from fedbone.models import Architecture, ClassifierSpec, build_classifier
from fedbone.models.parameters import state_to_arrays

QUICK = TrainSpec(epochs=2, batch_size=8, augment=AugmentSpec(enabled=False))


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> SiteCache:
    return build_toy_cache(tmp_path_factory.mktemp("toy"))


def small_cnn(seed: int = 0, in_channels: int = 1) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_classifier(
        ClassifierSpec(architecture=Architecture.SMALL_CNN, in_channels=in_channels)
    )


def distance(model: torch.nn.Module, reference: dict[str, torch.Tensor]) -> float:
    return float(
        sum(
            ((p.detach() - reference[n]) ** 2).sum()
            for n, p in model.named_parameters()
        )
    )


def test_reports_distinct_labelled_training_scans(cache: SiteCache) -> None:
    labels = cache.labels("bm")[cache.indices("train")]
    model = small_cnn()

    result = train_local(model, cache, "bm", QUICK)

    assert result.n_examples == int((labels >= 0).sum())
    assert result.n_examples < len(labels)  # the unlabelled scan is skipped
    assert result.epochs_run == 2 and result.best_epoch == 2
    assert result.val_loss is not None and result.val_auc is not None
    assert result.train_loss > 0 and result.seconds > 0


def test_same_seed_gives_the_same_weights(cache: SiteCache) -> None:
    spec = TrainSpec(epochs=1, batch_size=8, seed=3)
    first, second = small_cnn(), small_cnn()

    train_local(first, cache, "bm", spec)
    train_local(second, cache, "bm", spec)

    for name, value in state_to_arrays(first).items():
        np.testing.assert_array_equal(value, state_to_arrays(second)[name])


def test_proximal_term_changes_the_update_and_keeps_weights_near_global(
    cache: SiteCache,
) -> None:
    start = small_cnn()
    global_params = {n: p.detach().clone() for n, p in start.named_parameters()}
    plain, proximal = small_cnn(), small_cnn()

    train_local(plain, cache, "bm", QUICK, global_params=global_params)
    train_local(
        proximal,
        cache,
        "bm",
        TrainSpec(
            epochs=2,
            batch_size=8,
            augment=AugmentSpec(enabled=False),
            proximal_mu=50.0,
        ),
        global_params=global_params,
    )

    plain_state, proximal_state = state_to_arrays(plain), state_to_arrays(proximal)
    assert any(
        not np.array_equal(plain_state[key], proximal_state[key]) for key in plain_state
    )
    assert distance(proximal, global_params) < 0.5 * distance(plain, global_params)


def test_early_stopping_restores_the_best_epoch(cache: SiteCache) -> None:
    spec = TrainSpec(epochs=6, batch_size=8, lr=3e-2, early_stopping_patience=1, seed=1)
    model = small_cnn()

    result = train_local(model, cache, "bm", spec)

    assert 1 <= result.best_epoch <= result.epochs_run <= 6
    assert result.epochs_run == 6 or result.epochs_run == result.best_epoch + 1
    val = cache.indices("val")
    labels = cache.labels("bm")[val]
    scores = predict(model, cache, val[labels >= 0])
    assert result.val_auc == pytest.approx(roc_auc_score(labels[labels >= 0], scores))


def test_learns_an_obvious_finding(cache: SiteCache) -> None:
    spec = TrainSpec(epochs=8, batch_size=8, lr=3e-3, sampling=Sampling.BALANCED)
    model = small_cnn()

    result = train_local(model, cache, "bm", spec)

    assert result.val_auc is not None and result.val_auc >= 0.9


def test_two_channel_model_reads_views_side_by_side(tmp_path: Path) -> None:
    wide = build_toy_cache(tmp_path, count=20, width=32)
    model = small_cnn(in_channels=2)

    result = train_local(model, wide, "bm", QUICK)

    assert result.epochs_run == 2


def test_task_without_training_labels_is_refused(cache: SiteCache) -> None:
    with pytest.raises(TrainingError) as caught:
        train_local(small_cnn(), cache, "ca", QUICK)

    assert caught.value.codes == ["no-training-scans"]


def test_predict_follows_the_order_of_indices(cache: SiteCache) -> None:
    model = small_cnn()
    indices = cache.indices("test")

    forward = predict(model, cache, indices, batch_size=3)
    backward = predict(model, cache, indices[::-1], batch_size=3)

    assert forward.shape == (len(indices),)
    assert ((forward > 0) & (forward < 1)).all()
    np.testing.assert_allclose(forward, backward[::-1], rtol=1e-5)


def test_read_batch_keeps_order_and_repeats(cache: SiteCache) -> None:
    positions = np.array([7, 2, 7, 0])

    batch = read_batch(cache, positions)

    expected = np.stack([cache[i] for i in positions])
    np.testing.assert_array_equal(batch.numpy(), expected)


def test_devices_resolve_or_fail_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(TrainingError) as missing:
        resolve_device("cuda")
    with pytest.raises(TrainingError) as unknown:
        resolve_device("tpu-9")

    assert missing.value.codes == ["device-unavailable"]
    assert unknown.value.codes == ["unknown-device"]


def test_train_spec_lists_every_bad_setting() -> None:
    with pytest.raises(TrainingError) as caught:
        TrainSpec(epochs=0, lr=0.0, proximal_mu=-1.0, sampling="sometimes")  # type: ignore[arg-type]

    assert sorted(caught.value.codes) == [
        "negative",
        "not-positive",
        "not-positive",
        "unknown-sampling",
    ]
