"""Fixed-point encoding into Z_{2^64}: round trips, sums, and the overflow bound."""

from __future__ import annotations

import numpy as np
import pytest

from fedbone.federation.secure_aggregation import (
    FixedPoint,
    FixedPointOverflowError,
    SecureAggregationError,
)


def test_values_round_trip_to_the_scale_s_precision() -> None:
    codec = FixedPoint(scale_bits=24, bound=10.0)
    values = np.array([-10.0, -1.5e-3, 0.0, 3.25, 9.999999])

    decoded = codec.decode(codec.encode(values))

    assert np.abs(decoded - values).max() <= codec.precision(1)


def test_a_wrapping_sum_of_encodings_decodes_to_the_sum_of_values() -> None:
    codec = FixedPoint(scale_bits=24, bound=100.0)
    rng = np.random.default_rng(0)
    inputs = [rng.uniform(-100, 100, size=50) for _ in range(5)]

    total = np.zeros(50, dtype=np.uint64)
    for values in inputs:
        total += codec.encode(values)  # negative values wrap around 2^64

    assert np.abs(codec.decode(total) - sum(inputs)).max() <= codec.precision(5)


def test_summing_more_inputs_than_the_capacity_is_refused() -> None:
    codec = FixedPoint(scale_bits=40, bound=2.0**20)  # 2^60 per input

    codec.check_capacity(7)
    with pytest.raises(FixedPointOverflowError) as caught:
        codec.check_capacity(8)  # 8 * 2^60 = 2^63 would wrap

    assert caught.value.codes == ["capacity"]
    assert codec.capacity() == 7


def test_settings_whose_one_input_overflows_are_refused() -> None:
    with pytest.raises(FixedPointOverflowError):
        FixedPoint(scale_bits=40, bound=2.0**23)


@pytest.mark.parametrize("bad", [np.array([10.5]), np.array([np.nan])])
def test_a_value_beyond_the_bound_is_refused_not_wrapped(bad: np.ndarray) -> None:
    codec = FixedPoint(scale_bits=24, bound=10.0)

    with pytest.raises(SecureAggregationError) as caught:
        codec.encode(bad)

    assert caught.value.codes == ["out-of-bound"]


def test_scale_bits_outside_the_supported_range_are_refused() -> None:
    with pytest.raises(SecureAggregationError) as caught:
        FixedPoint(scale_bits=4, bound=1.0)

    assert caught.value.codes == ["bad-scale"]
