"""Typed errors of the evaluation statistics."""

from __future__ import annotations

from fedbone.errors import ProblemsError

__all__ = ["EvaluationError"]


class EvaluationError(ProblemsError, ValueError):
    """Labels, scores or aggregates that cannot be evaluated, every problem listed.

    It is also a :class:`ValueError`, so callers that treat bad arguments
    generically can catch it that way.
    """

    kind = "evaluation input"
