"""A DP classifier round at a site: planned, budget-checked, then recorded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_caches import build_toy_cache

from fedbone.classifier.augment import AugmentSpec
from fedbone.classifier.local import TrainSpec
from fedbone.classifier.rounds import DpRoundSpec, train_round_dp
from fedbone.config.site import DataSettings, PrivacySettings, SiteConfig, SiteRole
from fedbone.data.cache import SiteCache
from fedbone.models import Architecture, ClassifierSpec, Norm, build_classifier
from fedbone.models.parameters import state_to_arrays
from fedbone.privacy.budget import PrivacyBudget
from fedbone.privacy.errors import BudgetExceeded, PrivacyError
from fedbone.privacy.ledger import PrivacyLedger
from fedbone.privacy.site_spending import (
    SGD_STREAM,
    open_site_ledger,
    plan_sgd_release,
    refuse_without_dp,
    sgd_history,
)

SPEC = ClassifierSpec(architecture=Architecture.SMALL_CNN, norm=Norm.GROUP)
TRAIN = TrainSpec(
    epochs=1, batch_size=8, augment=AugmentSpec(enabled=False), device="cpu"
)
DP = DpRoundSpec(
    noise_multiplier=1.0,
    target_epsilon=None,
    max_grad_norm=1.0,
    clipping="hooks",
    rounds=2,
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> SiteCache:
    return build_toy_cache(tmp_path_factory.mktemp("dp-round"))


def _start() -> dict[str, np.ndarray]:
    torch.manual_seed(0)
    return state_to_arrays(build_classifier(SPEC))


def _round(cache: SiteCache, ledger: PrivacyLedger) -> dict[str, float | int]:
    result = train_round_dp(
        cache, "bm", SPEC, TRAIN, _start(), DP, ledger, run_name="r1", phase="train"
    )
    return result.metrics


def test_rounds_are_recorded_and_compose_in_one_stream(
    cache: SiteCache, tmp_path: Path
) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.jsonl", PrivacyBudget(50.0, 1e-3))

    first = _round(cache, ledger)
    second = _round(cache, ledger)

    entries = PrivacyLedger(tmp_path / "ledger.jsonl", ledger.budget).entries()
    assert [e.stream for e in entries] == [SGD_STREAM, SGD_STREAM]
    assert 0 < first["dp-epsilon"] < second["dp-epsilon"]
    assert second["dp-epsilon"] == pytest.approx(sgd_history(entries).epsilon(1e-3))
    assert "train-loss" not in second


def test_a_round_beyond_the_budget_is_refused_before_training(
    cache: SiteCache, tmp_path: Path
) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.jsonl", PrivacyBudget(0.05, 1e-3))

    with pytest.raises(BudgetExceeded):
        _round(cache, ledger)

    assert ledger.entries() == []


def test_a_batch_norm_model_is_refused_with_a_fix(
    cache: SiteCache, tmp_path: Path
) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.jsonl", PrivacyBudget(50.0, 1e-3))
    batch = ClassifierSpec(architecture=Architecture.SMALL_CNN, norm=Norm.BATCH)
    torch.manual_seed(0)
    start = state_to_arrays(build_classifier(batch))

    with pytest.raises(PrivacyError, match="norm: group"):
        train_round_dp(
            cache, "bm", batch, TRAIN, start, DP, ledger, run_name="r", phase="train"
        )

    assert ledger.entries() == []


def _site(tmp_path: Path, epsilon: float | None) -> SiteConfig:
    return SiteConfig(
        site_id="A",
        role=SiteRole.TRAIN,
        data=DataSettings(manifest=tmp_path / "m.csv", cache_dir=tmp_path / "c"),
        privacy=PrivacySettings(
            epsilon_budget=epsilon, ledger=tmp_path / "ledger.jsonl"
        ),
    )


def test_a_site_with_a_budget_releases_weights_only_under_dp(tmp_path: Path) -> None:
    with pytest.raises(PrivacyError) as caught:
        refuse_without_dp(_site(tmp_path, 8.0))

    assert caught.value.codes == ["dp-required"]
    refuse_without_dp(_site(tmp_path, None))  # no budget: no DP demanded


def test_dp_training_needs_a_site_budget(tmp_path: Path) -> None:
    with pytest.raises(PrivacyError) as caught:
        open_site_ledger(_site(tmp_path, None), n_training=100)

    assert caught.value.codes == ["no-privacy-budget"]
    ledger = open_site_ledger(_site(tmp_path, 8.0), n_training=100)
    assert ledger.budget.delta == pytest.approx(1e-3)


def test_two_plans_open_at_once_compose_when_committed(tmp_path: Path) -> None:
    # Prepare: two DP-SGD releases planned before either committed
    ledger = PrivacyLedger(tmp_path / "ledger.jsonl", PrivacyBudget(50.0, 1e-3))
    first = plan_sgd_release(ledger, 1.0, 0.1, 20)
    second = plan_sgd_release(ledger, 1.0, 0.1, 20)
    both = plan_sgd_release(ledger, 1.0, 0.1, 20).after.extended(1.0, 0.1, 20)

    # Execute
    first.commit(run="r", phase="train", kind="classifier-round")
    entry = second.commit(run="r", phase="train", kind="classifier-round")

    # Assert: the second is charged on top of the first, not over the same start
    assert entry.stream_epsilon == pytest.approx(both.epsilon(1e-3))
    assert entry.stream_epsilon > first.epsilon


@pytest.mark.parametrize("clipping", ["hooks", "ghost"])
def test_head_only_dp_keeps_the_received_backbone(
    tmp_path: Path, cache: SiteCache, clipping: str
) -> None:
    # Prepare
    ledger = PrivacyLedger(tmp_path / "ledger.jsonl", PrivacyBudget(50.0, 1e-3))
    start = _start()
    head_only = DpRoundSpec(
        noise_multiplier=1.0,
        target_epsilon=None,
        max_grad_norm=1.0,
        clipping=clipping,
        rounds=2,
        train_layers="head",
    )

    # Execute
    result = train_round_dp(
        cache, "bm", SPEC, TRAIN, start, head_only, ledger, run_name="r", phase="train"
    )

    # Assert: the backbone as received, the head trained, the round charged
    changed = {k for k in start if not np.array_equal(start[k], result.arrays[k])}
    assert changed and all(k.startswith("head.") for k in changed)
    assert result.metrics["dp-epsilon"] > 0
