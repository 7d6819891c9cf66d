"""The typed errors of secure aggregation."""

from __future__ import annotations

from fedbone.errors import ProblemsError

__all__ = ["FixedPointOverflowError", "SecureAggregationError"]


class SecureAggregationError(ProblemsError):
    """A secure aggregation step that cannot go on; every problem listed.

    At a site this is a refusal (a request out of order, a threshold too low
    to protect the site's secrets, a share that does not decrypt); at the
    centre a round that cannot be unmasked (too few sites left).
    """

    kind = "secure aggregation"


class FixedPointOverflowError(SecureAggregationError):
    """Settings under which a sum of encoded inputs could wrap around 2^64."""

    kind = "fixed-point encoding"
