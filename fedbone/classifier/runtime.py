"""Run-time plumbing of local training: device, seeds, batches from the cache.

Batches are read straight from the cache's float16 memory map (indices sorted
for sequential reads, then put back in order) and converted on the fly; at
these image sizes a ``DataLoader`` with worker processes costs more in
start-up and pickling than it saves, on the two cores a CPU site may have.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from fedbone.classifier.errors import TrainingError
from fedbone.errors import Problem

__all__ = [
    "TrainingImages",
    "input_channels",
    "iter_batches",
    "read_batch",
    "resolve_device",
    "seed_everything",
    "to_model_input",
    "torch_threads",
]


class TrainingImages(Protocol):
    """What local training reads: a site's cache, or a view mixing in synthetic.

    :class:`fedbone.data.cache.SiteCache` and
    :class:`fedbone.classifier.synthetic_mix.MixedCache` both provide it.
    """

    @property
    def images(self) -> Any:
        """Rows indexable by a position array, ``(B, H, W)`` floats."""
        ...

    @property
    def cache_dir(self) -> Path:
        """The real cache's folder (for messages)."""
        ...

    def indices(self, split: str) -> np.ndarray:
        """Positions of the rows in ``split``."""
        ...

    def labels(self, task: str) -> np.ndarray:
        """Every row's label for ``task`` (``-1`` unknown)."""
        ...

    def __len__(self) -> int:
        """Return the number of rows."""
        ...


def resolve_device(name: str) -> torch.device:
    """Return the torch device for a config value (``auto``: CUDA if present).

    Raises
    ------
    TrainingError
        When the name is not a device or names a CUDA device this machine
        lacks.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise TrainingError(
            "device",
            [Problem("unknown-device", f"{name!r}; use auto, cpu, cuda or cuda:N")],
        )
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(
            "device",
            [
                Problem(
                    "device-unavailable",
                    f"{name!r} was asked for but this machine has no usable "
                    "CUDA device; set device: auto or cpu",
                )
            ],
        )
    return device


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's global and torch's (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def read_batch(cache: TrainingImages, positions: np.ndarray) -> torch.Tensor:
    """Read images ``positions`` (any order, repeats allowed) as ``(B, H, W)``.

    The memory map is read in ascending order and the rows put back in the
    requested order; float16 becomes float32 in torch.
    """
    order = np.argsort(positions, kind="stable")
    raw = torch.from_numpy(np.asarray(cache.images[positions[order]]))
    batch = torch.empty(raw.shape, dtype=torch.float32)
    batch[torch.from_numpy(order)] = raw.float()
    return batch


def input_channels(model: nn.Module) -> int:
    """Return the channels the model takes.

    A module that declares ``input_channels`` (the two-view fusion network,
    whose per-view backbones each take one channel) decides; otherwise the
    first convolution's input channels.
    """
    for module in model.modules():
        declared = getattr(module, "input_channels", None)
        if isinstance(declared, int):
            return declared
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    return int(first_conv.in_channels)


def to_model_input(batch: torch.Tensor, channels: int) -> torch.Tensor:
    """Reshape canvases ``(B, H, W)`` to ``(B, channels, H, W)``.

    Two channels means two views side by side, split at the middle column.
    """
    if channels == 1:
        return batch.unsqueeze(1)
    count, height, width = batch.shape
    if channels != 2 or width % 2:
        raise TrainingError(
            "model input",
            [
                Problem(
                    "channels-mismatch",
                    f"the model takes {channels} channels but the canvas is one "
                    f"{height}x{width} image; use in_channels 1, or 2 with "
                    "views: both",
                )
            ],
        )
    return batch.reshape(count, height, 2, width // 2).permute(0, 2, 1, 3).contiguous()


def iter_batches(positions: np.ndarray, size: int) -> Iterator[np.ndarray]:
    """Yield consecutive slices of ``positions`` of at most ``size`` items."""
    for start in range(0, len(positions), size):
        yield positions[start : start + size]


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with ``count`` torch threads (``None``: leave as is).

    A simulated site runs in a worker limited to one thread; a job that runs
    alone (one site training its GAN) may use the whole machine.
    """
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(max(1, count))
    try:
        yield
    finally:
        torch.set_num_threads(previous)
