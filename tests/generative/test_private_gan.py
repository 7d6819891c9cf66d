"""A site's GAN with DP-SGD on the discriminator: charged to the site's ledger."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_caches import build_labelled_cache
from tiny_study import ONE_EPOCH, SMALL_CNN, tiny_gan_settings

from fedbone.config.privacy import DpPhaseSettings
from fedbone.data.cache import SiteCache
from fedbone.generative.site_gan import (
    SELECTION_FILE,
    gan_state_dir,
    train_site_generator,
)
from fedbone.privacy.budget import PrivacyBudget
from fedbone.privacy.errors import BudgetExceeded
from fedbone.privacy.ledger import PrivacyLedger

GAN = tiny_gan_settings(steps=3, checkpoint_every=3)
CLASSIFIER = SMALL_CNN
TRAIN = ONE_EPOCH
DP = DpPhaseSettings(noise_multiplier=1.0, max_grad_norm=1.0)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> SiteCache:
    return build_labelled_cache(tmp_path_factory.mktemp("private-gan"))


def _train(cache: SiteCache, work: Path, ledger: PrivacyLedger) -> dict[str, float]:
    outcome = train_site_generator(
        cache,
        "bm",
        GAN,
        CLASSIFIER,
        TRAIN,
        work_dir=work,
        run_name="r",
        seed=0,
        device="cpu",
        dp=DP,
        ledger=ledger,
    )
    return outcome.metrics


def test_the_discriminators_steps_are_recorded_with_their_epsilon(
    cache: SiteCache, tmp_path: Path
) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.jsonl", PrivacyBudget(100.0, 1e-3))

    metrics = _train(cache, tmp_path / "work", ledger)

    (entry,) = ledger.entries()
    assert entry.kind == "gan-round" and entry.details["steps"] == 3
    assert metrics["dp-epsilon"] == pytest.approx(entry.stream_epsilon)


def test_a_gan_beyond_the_budget_is_refused_before_it_trains(
    cache: SiteCache, tmp_path: Path
) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.jsonl", PrivacyBudget(0.01, 1e-3))

    with pytest.raises(BudgetExceeded):
        _train(cache, tmp_path / "work", ledger)

    assert ledger.entries() == []
    assert not (gan_state_dir(tmp_path / "work", "r") / SELECTION_FILE).exists()
