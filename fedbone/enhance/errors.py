"""Typed errors of fast-scan enhancement."""

from __future__ import annotations

from fedbone.errors import ProblemsError

__all__ = ["EnhanceError"]


class EnhanceError(ProblemsError, ValueError):
    """Images, settings or an enhancer file that cannot be used, every problem listed.

    It is also a :class:`ValueError`, so callers that treat bad arguments
    generically can catch it that way.
    """

    kind = "enhancement input"
