"""A site's capabilities without Flower: typed requests in, typed results out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_caches import build_toy_cache
from tiny_study import tiny_gan_settings

from fedbone.classifier.augment import AugmentSpec
from fedbone.classifier.local import TrainSpec
from fedbone.classifier.rounds import DpRoundSpec
from fedbone.config.site import DataSettings, PrivacySettings, SiteConfig, SiteRole
from fedbone.generative.pool import pool_digest
from fedbone.models import Architecture, ClassifierSpec, Norm, build_classifier
from fedbone.models.parameters import state_to_arrays
from fedbone.privacy.errors import PrivacyError
from fedbone.site import (
    ClassifierTrainRequest,
    GanRequest,
    ReceiveSyntheticRequest,
    Site,
)

SPEC = ClassifierSpec(architecture=Architecture.SMALL_CNN, norm=Norm.GROUP)
TRAIN = TrainSpec(
    epochs=1, batch_size=8, augment=AugmentSpec(enabled=False), device="cpu"
)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_toy_cache(tmp_path_factory.mktemp("cache"), count=24).cache_dir


def _site(tmp_path: Path, cache_dir: Path, budget: float | None = None) -> Site:
    return Site(
        SiteConfig(
            site_id="vienna",
            role=SiteRole.TRAIN,
            data=DataSettings(manifest=tmp_path / "m.csv", cache_dir=cache_dir),
            privacy=PrivacySettings(
                epsilon_budget=budget, ledger=tmp_path / "ledger.jsonl"
            ),
            work_dir=tmp_path / "work",
        )
    )


def _train(dp: DpRoundSpec | None = None) -> ClassifierTrainRequest:
    return ClassifierTrainRequest(
        task="bm",
        run_name="r1",
        phase="train",
        classifier=SPEC,
        training=TRAIN,
        dp=dp,
        fedbn=False,
        local_state=None,
        synthetic_ratio=0.0,
        synthetic_only=False,
        seed=0,
    )


def _model() -> dict[str, np.ndarray]:
    torch.manual_seed(0)
    return state_to_arrays(build_classifier(SPEC))


def test_census_counts_the_sites_scans(tmp_path: Path, cache_dir: Path) -> None:
    census = _site(tmp_path, cache_dir).census()

    assert census.site_id == "vienna"
    assert sum(v for k, v in census.counts.items() if k.startswith("n-")) > 0


def test_non_private_work_is_refused_before_the_cache_is_read(
    tmp_path: Path,
) -> None:
    # Prepare: a site with a budget and no cache at all
    site = _site(tmp_path, tmp_path / "no-cache", budget=8.0)
    gan = GanRequest("bm", "r1", tiny_gan_settings(), SPEC, TRAIN, seed=0, dp=None)

    # Execute
    with pytest.raises(PrivacyError) as classifier:
        site.train(_train(), _model())
    with pytest.raises(PrivacyError) as generator:
        site.train_gan(gan)

    # Assert
    assert classifier.value.codes == generator.value.codes == ["dp-required"]


def test_a_private_round_is_charged_to_the_sites_ledger(
    tmp_path: Path, cache_dir: Path
) -> None:
    site = _site(tmp_path, cache_dir, budget=50.0)
    dp = DpRoundSpec(1.0, None, 1.0, "hooks", rounds=2)

    result = site.train(_train(dp), _model())

    assert result.metrics["dp-epsilon"] > 0
    assert len(site.ledger(24).entries()) == 1


def test_a_plain_round_returns_weights_as_received(
    tmp_path: Path, cache_dir: Path
) -> None:
    sent = _model()

    result = _site(tmp_path, cache_dir).train(_train(), sent)

    assert {k: v.dtype for k, v in result.arrays.items()} == {
        k: v.dtype for k, v in sent.items()
    }
    assert result.metrics["num-examples"] > 0


def test_a_received_pool_is_stored_when_its_digest_matches(
    tmp_path: Path, cache_dir: Path
) -> None:
    images = np.random.default_rng(0).random((2, 32, 16)).astype(np.float32)
    class_ids = np.array([0, 1])
    request = ReceiveSyntheticRequest(
        "r1", images, class_ids, pool_digest(images, class_ids)
    )

    stored = _site(tmp_path, cache_dir).receive_synthetic(request)

    assert (stored.n_received, stored.n_stored) == (2, 2)
