"""Shamir t-of-n sharing of 32-byte secrets."""

from __future__ import annotations

import itertools
import os

import pytest

from fedbone.federation.secure_aggregation import SecureAggregationError
from fedbone.federation.secure_aggregation.shamir import (
    SHARE_BYTES,
    reconstruct_secret,
    share_from_bytes,
    share_to_bytes,
    split_secret,
)


def test_any_t_of_n_shares_rebuild_the_secret() -> None:
    secret = os.urandom(32)
    shares = split_secret(secret, threshold=3, n_shares=5)

    rebuilt = {
        subset: reconstruct_secret({x: shares[x - 1] for x in subset}, 3)
        for subset in itertools.combinations(range(1, 6), 3)
    }

    assert set(rebuilt.values()) == {secret}


def test_fewer_than_t_shares_are_refused() -> None:
    shares = split_secret(os.urandom(32), threshold=3, n_shares=5)

    with pytest.raises(SecureAggregationError) as caught:
        reconstruct_secret({1: shares[0], 4: shares[3]}, 3)

    assert caught.value.codes == ["too-few-shares"]


def test_a_garbled_share_does_not_rebuild_a_secret() -> None:
    shares = split_secret(os.urandom(32), threshold=2, n_shares=3)
    garbled = int.from_bytes(os.urandom(SHARE_BYTES - 1), "big")

    with pytest.raises(SecureAggregationError) as caught:
        reconstruct_secret({1: shares[0], 2: garbled}, 2)

    assert caught.value.codes == ["bad-share"]


def test_shares_travel_as_fixed_size_bytes() -> None:
    shares = split_secret(b"\xff" * 32, threshold=2, n_shares=2)

    encoded = [share_to_bytes(s) for s in shares]

    assert {len(e) for e in encoded} == {SHARE_BYTES}
    assert [share_from_bytes(e) for e in encoded] == shares
