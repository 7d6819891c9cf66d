"""Shared fixtures of the whole suite.

- Every test runs torch on one thread: tiny networks on a shared 2-core machine
  run fastest that way, and one test can no longer starve the others.
- ``tiny_study`` writes a study YAML over phantom sites (``tests/support/
  tiny_study.py``); the tiny caches unit tests train on are in
  ``tests/support/tiny_caches.py``.
- Markers: ``slow`` (minutes: a whole study, real processes) and
  ``integration`` (real Flower runtimes). ``make test-fast`` runs
  ``-m "not slow"``; ``make test`` runs everything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_study import write_tiny_study


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny networks on a shared 2-core machine run fastest on one thread.

    On a busy runner OpenMP's spinning threads made one GAN test ~60x slower
    (294 s against 4.7 s on one thread).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny_study(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[..., Path]:
    """Return ``write(name, phases, **sections) -> study.yaml`` in a fresh folder."""

    def write(name: str, phases: list[str], **sections: Any) -> Path:
        root = tmp_path_factory.mktemp(name)
        return write_tiny_study(root, name, phases, **sections)

    return write
