"""Shamir's t-of-n secret sharing of 32-byte secrets over a prime field.

A secret ``s`` is the constant term of a random polynomial of degree
``t - 1`` over GF(p); share ``k`` (``k = 1..n``) is the polynomial's value at
``x = k``. Any ``t`` shares give ``s`` back by Lagrange interpolation at 0;
fewer say nothing about it. ``p = 2^521 - 1`` (a Mersenne prime) is larger
than every 32-byte secret, so a secret is one field element; a share is 66
bytes. Interpolating garbled shares gives an element beyond 2^256 with
overwhelming probability, which :func:`reconstruct_secret` refuses (a share
altered on purpose by a small amount is not caught: shares are not
authenticated, see ``docs/secure-aggregation.md``).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping

from fedbone.errors import Problem
from fedbone.federation.secure_aggregation.errors import SecureAggregationError

__all__ = [
    "PRIME",
    "SECRET_BYTES",
    "SHARE_BYTES",
    "reconstruct_secret",
    "share_from_bytes",
    "share_to_bytes",
    "split_secret",
]

PRIME = 2**521 - 1
SECRET_BYTES = 32
SHARE_BYTES = (PRIME.bit_length() + 7) // 8


def _refuse(code: str, message: str) -> SecureAggregationError:
    return SecureAggregationError("secret sharing", [Problem(code, message)])


def split_secret(secret: bytes, threshold: int, n_shares: int) -> list[int]:
    """Return ``n_shares`` shares of ``secret``; any ``threshold`` rebuild it.

    Parameters
    ----------
    secret
        Exactly :data:`SECRET_BYTES` bytes.
    threshold
        How many shares rebuild the secret (1 to ``n_shares``).
    n_shares
        How many shares to make; share ``k`` (0-based) is the value at
        ``x = k + 1``.
    """
    if len(secret) != SECRET_BYTES:
        raise _refuse("bad-secret", f"secrets are {SECRET_BYTES} bytes")
    if not 1 <= threshold <= n_shares:
        raise _refuse("bad-threshold", f"threshold {threshold} for {n_shares} shares")
    coefficients = [int.from_bytes(secret, "big")] + [
        secrets.randbelow(PRIME) for _ in range(threshold - 1)
    ]
    shares = []
    for x in range(1, n_shares + 1):
        value = 0
        for coefficient in reversed(coefficients):  # Horner
            value = (value * x + coefficient) % PRIME
        shares.append(value)
    return shares


def reconstruct_secret(shares: Mapping[int, int], threshold: int) -> bytes:
    """Rebuild a secret from at least ``threshold`` shares ``{x: value}``.

    Parameters
    ----------
    shares
        Share values by their ``x`` (1-based position of their holder).
    threshold
        The threshold the secret was split with.

    Raises
    ------
    SecureAggregationError
        ``too-few-shares`` below the threshold; ``bad-share`` for shares
        that do not rebuild a 32-byte secret.
    """
    if len(shares) < threshold:
        raise _refuse(
            "too-few-shares",
            f"{len(shares)} shares, {threshold} needed to rebuild the secret",
        )
    points = sorted(shares.items())[:threshold]
    if any(not 0 < x < PRIME or not 0 <= y < PRIME for x, y in points):
        raise _refuse("bad-share", "a share lies outside the field")
    secret = 0
    for j, (x_j, y_j) in enumerate(points):
        numerator, denominator = 1, 1
        for m, (x_m, _) in enumerate(points):
            if m != j:
                numerator = numerator * x_m % PRIME
                denominator = denominator * (x_m - x_j) % PRIME
        secret = (secret + y_j * numerator * pow(denominator, -1, PRIME)) % PRIME
    if secret >= 2 ** (8 * SECRET_BYTES):
        raise _refuse("bad-share", "the shares do not rebuild a 32-byte secret")
    return secret.to_bytes(SECRET_BYTES, "big")


def share_to_bytes(value: int) -> bytes:
    """Return a share value as :data:`SHARE_BYTES` big-endian bytes."""
    return value.to_bytes(SHARE_BYTES, "big")


def share_from_bytes(data: bytes) -> int:
    """Return the share value :func:`share_to_bytes` wrote."""
    if len(data) != SHARE_BYTES:
        raise _refuse("bad-share", f"a share is {SHARE_BYTES} bytes, got {len(data)}")
    return int.from_bytes(data, "big")
