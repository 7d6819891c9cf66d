"""Model state as named numpy arrays, and FedBN's choice of local keys.

The federation layer ships these arrays; they are keyed by ``state_dict``
names so a site can check that an update matches the model it was sent.
Normalisation statistics and affine weights can be kept local (FedBN, Li et
al. 2021): scanners and tracers differ between hospitals, and per-site norm
layers absorb that shift.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from fedbone.errors import Problem
from fedbone.models.errors import ModelError

__all__ = [
    "NORM_LAYER_TYPES",
    "load_arrays",
    "norm_layer_keys",
    "split_local",
    "state_to_arrays",
]

#: Module types whose parameters and buffers FedBN keeps at the site.
NORM_LAYER_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LayerNorm,
)


def state_to_arrays(model: nn.Module) -> dict[str, np.ndarray]:
    """Return the full state dict (parameters and buffers) as numpy arrays.

    Floating tensors become float32; integer buffers (``num_batches_tracked``)
    become int64.
    """
    arrays: dict[str, np.ndarray] = {}
    for name, tensor in model.state_dict().items():
        value = tensor.detach().cpu()
        dtype = np.float32 if value.is_floating_point() else np.int64
        arrays[name] = value.numpy().astype(dtype, copy=True)
    return arrays


def load_arrays(
    model: nn.Module, arrays: Mapping[str, np.ndarray], *, strict: bool = True
) -> None:
    """Copy named arrays into ``model``'s state, checking them all first.

    Parameters
    ----------
    model
        Receives the values (dtype and device of its own tensors are kept).
    arrays
        Named arrays, as :func:`state_to_arrays` makes them.
    strict
        Require every key of the model's state. ``False`` loads a subset
        (FedBN: everything but the local norm keys).

    Raises
    ------
    ModelError
        Listing every unknown key, shape mismatch and (when strict) missing
        key; nothing is loaded then.
    """
    own = model.state_dict()
    problems = [
        Problem("unknown-key", "the model has no such parameter or buffer", key)
        for key in arrays
        if key not in own
    ]
    problems += [
        Problem(
            "shape-mismatch",
            f"got {tuple(np.shape(arrays[key]))}, the model has "
            f"{tuple(own[key].shape)}",
            key,
        )
        for key in arrays
        if key in own and tuple(np.shape(arrays[key])) != tuple(own[key].shape)
    ]
    if strict:
        problems += [
            Problem("missing-key", "not in the arrays (strict load)", key)
            for key in own
            if key not in arrays
        ]
    ModelError.raise_if_any("state arrays", problems)
    with torch.no_grad():
        for key, value in arrays.items():
            target = own[key]
            target.copy_(torch.as_tensor(np.asarray(value)).to(target.dtype))


def norm_layer_keys(model: nn.Module) -> set[str]:
    """Return the state keys of every normalisation layer (FedBN's local keys)."""
    keys: set[str] = set()
    for prefix, module in model.named_modules():
        if isinstance(module, NORM_LAYER_TYPES):
            keys.update(
                f"{prefix}.{name}" if prefix else name for name in module.state_dict()
            )
    return keys


def split_local(
    arrays: Mapping[str, np.ndarray], local_keys: set[str]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Split arrays into ``(shared, local)`` by key."""
    shared = {key: value for key, value in arrays.items() if key not in local_keys}
    local = {key: value for key, value in arrays.items() if key in local_keys}
    return shared, local
