from __future__ import annotations

import math

import pytest
import torch
from opacus.accountants import RDPAccountant
from tiny_caches import build_toy_cache

from fedbone.classifier.augment import AugmentSpec
from fedbone.classifier.dp_local import plan_dp_call, train_local_dp
from fedbone.classifier.local import TrainSpec
from fedbone.data.cache import SiteCache
from fedbone.models import Architecture, ClassifierSpec, Norm, build_classifier
from fedbone.privacy.dp_sgd import DpSgdSpec
from fedbone.privacy.errors import PrivacyError

QUICK = TrainSpec(
    epochs=1, batch_size=8, device="cpu", augment=AugmentSpec(enabled=False)
)
NOISY = DpSgdSpec(noise_multiplier=1.0, delta=1e-3)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> SiteCache:
    return build_toy_cache(tmp_path_factory.mktemp("toy"))


def group_norm_cnn(norm: Norm = Norm.GROUP) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_classifier(
        ClassifierSpec(architecture=Architecture.SMALL_CNN, norm=norm)
    )


def test_trains_and_hands_back_a_plain_model_with_the_same_keys(
    cache: SiteCache,
) -> None:
    model = group_norm_cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    result = train_local_dp(
        model, cache, "bm", QUICK, NOISY, state=None, planned_steps=None
    )

    after = model.state_dict()
    assert list(after) == list(before)
    assert any(not torch.equal(after[k], before[k]) for k in before)
    assert math.isfinite(result.train_loss) and result.epsilon > 0
    assert result.steps == round(1 / result.sample_rate) and result.clipping == "ghost"
    assert not any(hasattr(p, "grad_sample") for p in model.parameters())
    assert type(model).__name__ == "SingleLogitClassifier"


def test_epsilon_accumulates_over_calls_like_one_accountant(cache: SiteCache) -> None:
    model = group_norm_cnn()
    hooks = DpSgdSpec(noise_multiplier=1.0, delta=1e-3, clipping="hooks")
    first = train_local_dp(
        model, cache, "bm", QUICK, hooks, state=None, planned_steps=None
    )

    second = train_local_dp(
        model,
        cache,
        "bm",
        QUICK,
        hooks,
        state=first.accountant_state,
        planned_steps=None,
    )

    opacus = RDPAccountant()
    for _ in range(first.steps + second.steps):
        opacus.step(noise_multiplier=1.0, sample_rate=first.sample_rate)
    assert second.epsilon == pytest.approx(opacus.get_epsilon(1e-3), abs=1e-9)
    assert second.epsilon > first.epsilon


def test_target_epsilon_is_spent_by_the_planned_steps(cache: SiteCache) -> None:
    model = group_norm_cnn()
    target = DpSgdSpec(target_epsilon=4.0, delta=1e-3)
    planned = 5  # 33 labelled scans, batches of 8: one epoch is 5 steps
    plan = plan_dp_call(33, QUICK, target, planned)

    result = train_local_dp(
        model, cache, "bm", QUICK, target, state=None, planned_steps=planned
    )

    assert (result.noise_multiplier, result.sample_rate, result.steps) == (
        plan.noise_multiplier,
        plan.sample_rate,
        plan.steps,
    )
    assert result.steps == planned
    assert 4.0 - 0.01 <= result.epsilon <= 4.0


def test_settings_dp_cannot_honour_are_refused_together(cache: SiteCache) -> None:
    fedprox = TrainSpec(epochs=1, batch_size=8, proximal_mu=0.1)
    target = DpSgdSpec(target_epsilon=4.0, delta=1e-3)

    with pytest.raises(PrivacyError) as caught:
        train_local_dp(
            group_norm_cnn(),
            cache,
            "bm",
            fedprox,
            target,
            state=None,
            planned_steps=None,
        )

    codes = {p.code for p in caught.value.problems}
    assert codes == {"proximal-in-dp", "missing-planned-steps"}


def test_batch_norm_model_is_refused(cache: SiteCache) -> None:
    with pytest.raises(PrivacyError) as caught:
        train_local_dp(
            group_norm_cnn(Norm.BATCH),
            cache,
            "bm",
            QUICK,
            NOISY,
            state=None,
            planned_steps=None,
        )

    assert {p.code for p in caught.value.problems} == {"dp-unsupported-module"}
