"""Fixed-point encoding of real vectors into the ring of integers modulo 2^64.

Masks cancel only in exact arithmetic, so secure aggregation sums integers
modulo 2^64 (numpy ``uint64`` wraps for free). A real value ``v`` with
``|v| <= bound`` is encoded as ``round(v * 2**scale_bits)`` in two's
complement. The sum of ``n`` encodings, read back as a signed 64-bit integer,
is the exact sum of the rounded values as long as it cannot wrap::

    n * ceil(bound * 2**scale_bits) <= 2**63 - 1      (the capacity)

Each encoding is off by at most ``2**-(scale_bits + 1)``, so a sum of ``n``
inputs by at most ``n * 2**-(scale_bits + 1)`` (:meth:`FixedPoint.precision`).
Settings that break the capacity are refused before anything is encoded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedbone.errors import Problem
from fedbone.federation.secure_aggregation.errors import (
    FixedPointOverflowError,
    SecureAggregationError,
)

__all__ = ["MAX_SCALE_BITS", "MIN_SCALE_BITS", "RING_BITS", "FixedPoint"]

RING_BITS = 64
"""Inputs, masks and sums live in Z_{2^64}."""
MIN_SCALE_BITS = 8
MAX_SCALE_BITS = 40
_SIGNED_MAX = 2**63 - 1


@dataclass(frozen=True)
class FixedPoint:
    """Encode values in ``[-bound, bound]`` with ``scale_bits`` fractional bits.

    Parameters
    ----------
    scale_bits
        Fractional bits: values are multiplied by ``2**scale_bits`` and rounded.
    bound
        The largest magnitude one input may hold (callers clip to it first).
    """

    scale_bits: int
    bound: float

    def __post_init__(self) -> None:
        problems = []
        if not MIN_SCALE_BITS <= self.scale_bits <= MAX_SCALE_BITS:
            problems.append(
                Problem(
                    "bad-scale",
                    f"scale_bits {self.scale_bits}; use {MIN_SCALE_BITS} to "
                    f"{MAX_SCALE_BITS} fractional bits",
                    "scale_bits",
                )
            )
        if not (math.isfinite(self.bound) and self.bound > 0):
            problems.append(
                Problem("bad-bound", "the bound must be a positive number", "bound")
            )
        SecureAggregationError.raise_if_any("fixed-point settings", problems)
        if self._largest_input() > _SIGNED_MAX:
            raise FixedPointOverflowError(
                "fixed-point settings",
                [
                    Problem(
                        "capacity",
                        f"one input of magnitude {self.bound:g} at 2^{self.scale_bits} "
                        "does not fit 63 bits; lower the bound or the scale",
                    )
                ],
            )

    @property
    def scale(self) -> float:
        """``2**scale_bits``."""
        return float(2**self.scale_bits)

    def _largest_input(self) -> int:
        return math.ceil(self.bound * self.scale)

    def capacity(self) -> int:
        """How many inputs may be summed without wrapping around."""
        return _SIGNED_MAX // self._largest_input()

    def check_capacity(self, n_inputs: int) -> None:
        """Refuse summing ``n_inputs`` inputs if the sum could wrap.

        Raises
        ------
        FixedPointOverflowError
            When ``n_inputs * bound * 2**scale_bits`` reaches 2^63.
        """
        if n_inputs > self.capacity():
            raise FixedPointOverflowError(
                "fixed-point settings",
                [
                    Problem(
                        "capacity",
                        f"{n_inputs} inputs of magnitude up to {self.bound:g} at "
                        f"2^{self.scale_bits} could wrap around 2^63 (at most "
                        f"{self.capacity()} fit); lower the clip, the scale bits "
                        "or the largest weight",
                    )
                ],
            )

    def precision(self, n_inputs: int) -> float:
        """Largest error of a decoded sum of ``n_inputs`` inputs."""
        return n_inputs / 2.0 ** (self.scale_bits + 1)

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Return ``values`` as ``uint64`` ring elements.

        Raises
        ------
        SecureAggregationError
            ``out-of-bound`` for a value beyond the bound or not finite
            (clip before encoding).
        """
        values = np.asarray(values, dtype=np.float64)
        if values.size and not (
            np.isfinite(values).all() and float(np.abs(values).max()) <= self.bound
        ):
            raise SecureAggregationError(
                "fixed-point input",
                [
                    Problem(
                        "out-of-bound",
                        f"values must be finite and within +-{self.bound:g}; clip "
                        "them first",
                    )
                ],
            )
        return np.rint(values * self.scale).astype(np.int64).view(np.uint64)

    def decode(self, total: np.ndarray) -> np.ndarray:
        """Return a sum of encodings (``uint64``) as real values (float64)."""
        signed = np.asarray(total, dtype=np.uint64).view(np.int64)
        return signed.astype(np.float64) / self.scale
