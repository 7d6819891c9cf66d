"""A point estimate with its confidence interval."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Estimate"]


@dataclass(frozen=True)
class Estimate:
    """A statistic and its confidence interval (95% unless stated otherwise).

    Parameters
    ----------
    value
        The point estimate; ``nan`` where it is undefined (e.g. an AUC with one
        class absent).
    low, high
        Interval bounds; ``nan`` where the interval is undefined.
    """

    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        """Return ``{"value", "low", "high"}`` as floats, for transport."""
        return {"value": self.value, "low": self.low, "high": self.high}
