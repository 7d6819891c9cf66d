"""Tiny reader sets: small arrays of noise, real and synthetic alike."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from fedbone.reader_study.kit import ReaderSet, make_reader_set
from fedbone.reader_study.web import ReaderStudyServer, make_server

SHAPE = (16, 8)


def tiny_images(count: int, seed: int) -> np.ndarray:
    """``count`` images of noise with a few hot pixels, ``SHAPE`` each."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 0.3, size=(count, *SHAPE)).astype(np.float32)
    images[:, 4:6, 3:5] = 1.0
    return images


@pytest.fixture
def tiny_set(tmp_path: Path) -> Callable[..., ReaderSet]:
    """Return ``make(n_per_group=2, seed=0, name="set") -> ReaderSet``.

    Each group has three images to draw from, so 2 per group is a real draw.
    """

    def make(n_per_group: int = 2, seed: int = 0, name: str = "set") -> ReaderSet:
        labels = np.array([1, 1, 1, 0, 0, 0])
        return make_reader_set(
            tiny_images(6, seed=1),
            labels,
            tiny_images(6, seed=2),
            labels,
            tmp_path / name,
            n_per_group=n_per_group,
            seed=seed,
            task="bm",
        )

    return make


@pytest.fixture
def served(tiny_set: Callable[..., ReaderSet]) -> Iterator[ReaderStudyServer]:
    """A tiny set's reading page, served on a free loopback port in a thread."""
    server = make_server(tiny_set().folder)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)
