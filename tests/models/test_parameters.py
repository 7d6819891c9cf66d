from __future__ import annotations

import numpy as np
import pytest
import torch

from fedbone.models import (
    Architecture,
    ClassifierSpec,
    ModelError,
    Norm,
    build_classifier,
)
from fedbone.models.parameters import (
    load_arrays,
    norm_layer_keys,
    split_local,
    state_to_arrays,
)


def small_cnn(seed: int, norm: Norm = Norm.BATCH) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_classifier(
        ClassifierSpec(architecture=Architecture.SMALL_CNN, norm=norm)
    )


def train_norm_layers(model: torch.nn.Module, seed: int) -> None:
    """Move norm statistics and affine weights away from their initial values."""
    generator = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        model(3.0 * torch.rand(4, 1, 64, 16, generator=generator) + seed)
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.GroupNorm)):
                module.weight.add_(seed)


def test_arrays_are_float32_with_int64_counters() -> None:
    arrays = state_to_arrays(small_cnn(0))

    counters = {k for k in arrays if k.endswith("num_batches_tracked")}
    assert counters
    assert all(arrays[k].dtype == np.int64 for k in counters)
    assert all(arrays[k].dtype == np.float32 for k in set(arrays) - counters)
    assert set(arrays) == set(small_cnn(1).state_dict())


def test_round_trip_reproduces_the_model() -> None:
    source, target = small_cnn(0), small_cnn(1)
    train_norm_layers(source, seed=2)
    images = torch.rand(2, 1, 64, 16)

    load_arrays(target, state_to_arrays(source))

    source.eval()
    target.eval()
    with torch.no_grad():
        torch.testing.assert_close(target(images), source(images))


def test_bad_arrays_list_every_problem_and_load_nothing() -> None:
    model = small_cnn(0)
    before = state_to_arrays(model)
    arrays = dict(state_to_arrays(small_cnn(1)))
    first_key = next(iter(arrays))
    arrays[first_key] = np.zeros((3, 3), dtype=np.float32)
    del arrays["head.bias"]
    arrays["extra.weight"] = np.zeros(1, dtype=np.float32)

    with pytest.raises(ModelError) as caught:
        load_arrays(model, arrays)

    assert sorted(caught.value.codes) == [
        "missing-key",
        "shape-mismatch",
        "unknown-key",
    ]
    for key, value in state_to_arrays(model).items():
        np.testing.assert_array_equal(value, before[key])


def test_norm_keys_cover_norm_layers_only() -> None:
    model = small_cnn(0)

    keys = norm_layer_keys(model)

    bn_modules = [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.BatchNorm2d)
    ]
    assert len(keys) == 5 * len(bn_modules)  # weight, bias, mean, var, counter
    assert all(key.rsplit(".", 1)[0] in bn_modules for key in keys)
    assert not any(key.startswith("head.") for key in keys)


@pytest.mark.parametrize("norm", [Norm.BATCH, Norm.GROUP])
def test_fedbn_global_update_leaves_local_norm_layers_untouched(norm: Norm) -> None:
    site, server = small_cnn(0, norm), small_cnn(1, norm)
    train_norm_layers(site, seed=3)
    train_norm_layers(server, seed=4)
    local_keys = norm_layer_keys(site)
    site_before = state_to_arrays(site)
    shared, _ = split_local(state_to_arrays(server), local_keys)

    load_arrays(site, shared, strict=False)

    after = state_to_arrays(site)
    assert local_keys and shared
    for key in local_keys:
        np.testing.assert_array_equal(after[key], site_before[key])
    for key, value in shared.items():
        np.testing.assert_array_equal(after[key], value)
    assert any(
        not np.array_equal(site_before[key], state_to_arrays(server)[key])
        for key in local_keys
    )


def test_split_local_partitions_the_arrays() -> None:
    arrays = {"a": np.zeros(1), "b": np.ones(1), "c": np.ones(2)}

    shared, local = split_local(arrays, {"b", "z"})

    assert set(shared) == {"a", "c"}
    assert set(local) == {"b"}
