"""Typed errors of the model layer."""

from __future__ import annotations

from fedbone.errors import ProblemsError

__all__ = ["ModelError"]


class ModelError(ProblemsError):
    """A model that cannot be built, or weights that do not fit it.

    Raised with every problem found (unsupported architecture/normalisation
    combinations, pretrained files with the wrong checksum, state arrays whose
    keys or shapes do not match the model).
    """

    kind = "model"
