"""Typed errors of local training."""

from __future__ import annotations

from fedbone.errors import ProblemsError

__all__ = ["TrainingError"]


class TrainingError(ProblemsError):
    """A training run that cannot start: bad settings, no usable data, no device.

    Lists every problem found before any weight changes.
    """

    kind = "training run"
