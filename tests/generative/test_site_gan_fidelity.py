"""After selection a site scores its generator per class, next to real vs real."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tiny_caches import build_labelled_cache
from tiny_study import ONE_EPOCH, SMALL_CNN, tiny_gan_settings

from fedbone.config.privacy import DpPhaseSettings
from fedbone.data.cache import SiteCache
from fedbone.generative.fidelity.site_page import FIDELITY_PAGE
from fedbone.generative.site_gan import (
    SiteGanOutcome,
    gan_state_dir,
    train_site_generator,
)
from fedbone.privacy.budget import PrivacyBudget
from fedbone.privacy.ledger import PrivacyLedger

GAN = tiny_gan_settings(steps=2, checkpoint_every=2)
DP = DpPhaseSettings(noise_multiplier=1.0, max_grad_norm=1.0)
PER_CLASS = {
    f"{measure}-{source}-{group}"
    for measure in ("fd", "kid", "precision", "recall")
    for source in ("synthetic", "real")
    for group in ("neg", "pos", "all")
}


def _train(
    cache: SiteCache, work: Path, ledger: PrivacyLedger | None = None
) -> SiteGanOutcome:
    return train_site_generator(
        cache,
        "bm",
        GAN,
        SMALL_CNN,
        ONE_EPOCH,
        work_dir=work,
        run_name="r",
        seed=0,
        device="cpu",
        dp=DP if ledger is not None else None,
        ledger=ledger,
    )


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> SiteCache:
    return build_labelled_cache(tmp_path_factory.mktemp("site-gan-fidelity"))


def test_the_site_returns_per_class_figures_and_keeps_its_page(
    cache: SiteCache, tmp_path: Path
) -> None:
    # Execute
    outcome = _train(cache, tmp_path)

    # Assert
    assert PER_CLASS.issubset(outcome.metrics)
    assert np.isfinite(outcome.metrics["fd-real-all"])
    assert np.isfinite(outcome.metrics["fd-synthetic-pos"])
    page = gan_state_dir(tmp_path, "r") / FIDELITY_PAGE
    assert "training real vs held-out real" in page.read_text()
    assert (page.parent / "fidelity-pos.png").is_file()


def test_under_dp_the_real_vs_real_figures_stay_at_the_site(
    cache: SiteCache, tmp_path: Path
) -> None:
    # Prepare
    ledger = PrivacyLedger(tmp_path / "ledger.jsonl", PrivacyBudget(100.0, 1e-3))

    # Execute
    outcome = _train(cache, tmp_path / "work", ledger)

    # Assert
    sent = PER_CLASS & set(outcome.metrics)
    assert sent == {key for key in PER_CLASS if "-synthetic-" in key}
    page = gan_state_dir(tmp_path / "work", "r") / FIDELITY_PAGE
    assert "training real vs held-out real" in page.read_text()
