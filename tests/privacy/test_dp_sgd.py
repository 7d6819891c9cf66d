from __future__ import annotations

import pytest
import torch
from opacus.accountants import RDPAccountant
from opacus.validators import ModuleValidator

from fedbone.models import Architecture, ClassifierSpec, Norm, build_classifier
from fedbone.privacy.dp_sgd import (
    AccountantState,
    DpSgdSpec,
    epsilon_after,
    make_dp_compatible,
    noise_for_target,
    prepare_for_dp_hooks,
)
from fedbone.privacy.errors import PrivacyError


def classifier(architecture: Architecture, norm: Norm) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_classifier(ClassifierSpec(architecture=architecture, norm=norm))


def test_epsilon_equals_opacus_rdp_accountant_stepped_the_same_way() -> None:
    opacus = RDPAccountant()
    for _ in range(30):
        opacus.step(noise_multiplier=1.1, sample_rate=0.01)
    for _ in range(20):
        opacus.step(noise_multiplier=0.9, sample_rate=0.02)

    state = AccountantState("rdp").extended(1.1, 0.01, 30).extended(0.9, 0.02, 20)

    assert state.history == tuple(opacus.history)
    assert state.epsilon(1e-5) == pytest.approx(opacus.get_epsilon(1e-5), abs=1e-9)


def test_noise_for_target_reaches_the_target_within_opacus_tolerance() -> None:
    noise = noise_for_target(8.0, 1e-5, 0.01, 2000, "rdp")

    spent = epsilon_after([(noise, 0.01, 2000)], 1e-5, "rdp")

    assert 8.0 - 0.01 <= spent <= 8.0


def test_two_extensions_equal_one_accountant_over_all_steps() -> None:
    once = AccountantState("rdp").extended(1.0, 0.05, 25)

    twice = AccountantState("rdp").extended(1.0, 0.05, 10).extended(1.0, 0.05, 15)

    assert twice.history == once.history == ((1.0, 0.05, 25),)
    assert twice.epsilon(1e-5) == once.epsilon(1e-5)
    assert twice.steps == 25


def test_accountant_state_json_round_trip() -> None:
    state = AccountantState("prv").extended(1.2, 0.03, 7).extended(0.8, 0.03, 4)

    restored = AccountantState.from_json(state.to_json())

    assert restored == state


def test_unreadable_accountant_state_is_a_privacy_error() -> None:
    with pytest.raises(PrivacyError) as caught:
        AccountantState.from_json('{"history": [[1.0, 0.1]]}')

    assert caught.value.problems[0].code == "bad-accountant-state"


def test_empty_history_has_spent_nothing() -> None:
    assert AccountantState().epsilon(1e-5) == 0.0


def test_spec_lists_every_problem() -> None:
    with pytest.raises(PrivacyError) as caught:
        DpSgdSpec(
            noise_multiplier=-1.0,
            target_epsilon=8.0,
            max_grad_norm=0.0,
            delta=1.5,
            accountant="moments",
            clipping="fast",
        )

    codes = sorted(p.code for p in caught.value.problems)
    assert codes == [
        "bad-delta",
        "noise-or-target",
        "not-positive",
        "not-positive",
        "unknown-accountant",
        "unknown-clipping",
    ]


@pytest.mark.parametrize(
    "architecture", [Architecture.SMALL_CNN, Architecture.RESNET18]
)
def test_group_norm_classifiers_pass_the_opacus_validator(
    architecture: Architecture,
) -> None:
    model = classifier(architecture, Norm.GROUP)

    checked = make_dp_compatible(model, fix=False)

    assert checked is model
    assert ModuleValidator.validate(model, strict=False) == []


def test_batch_norm_model_is_refused_listing_every_norm_layer() -> None:
    model = classifier(Architecture.SMALL_CNN, Norm.BATCH)
    batch_norms = [
        m
        for m in model.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
    ]

    with pytest.raises(PrivacyError) as caught:
        make_dp_compatible(model, fix=False)

    problems = caught.value.problems
    assert len(problems) == len(batch_norms) > 0
    assert all("classifier.norm: group" in p.message for p in problems)


def test_batch_norm_model_is_fixed_when_asked() -> None:
    model = classifier(Architecture.SMALL_CNN, Norm.BATCH)

    fixed = make_dp_compatible(model, fix=True)

    assert ModuleValidator.validate(fixed, strict=False) == []
    assert any(isinstance(m, torch.nn.GroupNorm) for m in fixed.modules())


def test_preparing_for_hooks_keeps_weights_and_outputs() -> None:
    model = classifier(Architecture.RESNET18, Norm.GROUP).eval()
    images = torch.rand(2, 1, 64, 32)
    keys = list(model.state_dict())
    with torch.no_grad():
        before = model(images)

    prepare_for_dp_hooks(model)

    with torch.no_grad():
        after = model(images)
    assert list(model.state_dict()) == keys
    torch.testing.assert_close(after, before)
    assert not any(getattr(m, "inplace", False) for m in model.modules())
