from __future__ import annotations

import hashlib

import numpy as np
import pytest
from federation_messages import model_state
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedbone.federation.records import (
    array_signature,
    arrays_to_record,
    canonical_bytes,
    content_digest,
    payload_signature,
    record_to_arrays,
)


def _content(loss: float = 0.5, seed: int = 0) -> RecordDict:
    return RecordDict(
        {
            "arrays": arrays_to_record(model_state(seed)),
            "metrics": MetricRecord({"num-examples": 12, "val-auc": float("nan")}),
            "site": ConfigRecord({"site-id": "vienna", "blob": b"\x00\x01"}),
            "loss": MetricRecord({"train-loss": loss}),
        }
    )


def test_arrays_round_trip_keeps_order_values_and_dtypes() -> None:
    state = model_state()

    back = record_to_arrays(arrays_to_record(state))

    assert list(back) == list(state)
    for key, value in state.items():
        assert back[key].dtype == value.dtype
        np.testing.assert_array_equal(back[key], value)


def test_array_signature_lists_shape_and_dtype_per_key() -> None:
    record = arrays_to_record(model_state())

    signature = array_signature(record)

    assert signature == {
        "conv.weight": ((4, 1, 3, 3), "float32"),
        "conv.bias": ((4,), "float32"),
        "bn.num_batches_tracked": ((), "int64"),
    }


def test_payload_signature_catches_bytes_hidden_behind_a_small_declared_shape() -> None:
    honest = Array(np.zeros((2, 2), dtype=np.float32))
    smuggled = Array(np.zeros((256, 64), dtype=np.float32))
    liar = Array(dtype="float32", shape=(2, 2), stype=honest.stype, data=smuggled.data)
    truncated = Array(
        dtype="float32", shape=(2, 2), stype=honest.stype, data=honest.data[:-4]
    )

    assert payload_signature(honest) == ((2, 2), "float32")
    assert payload_signature(liar) == ((256, 64), "float32")
    with pytest.raises(ValueError, match="bytes"):
        payload_signature(truncated)


def test_canonical_bytes_are_deterministic_and_independent_of_insertion_order() -> None:
    first = _content()
    reordered = RecordDict({name: first[name] for name in reversed(list(first))})

    assert canonical_bytes(_content()) == canonical_bytes(first)
    assert canonical_bytes(reordered) == canonical_bytes(first)


def test_canonical_bytes_change_when_any_value_changes() -> None:
    base = canonical_bytes(_content())
    weights = _content()
    state = model_state()
    state["conv.bias"] = state["conv.bias"].copy()
    state["conv.bias"][0] += np.float32(1e-3)
    weights["arrays"] = arrays_to_record(state)
    dtype = _content()
    dtype["arrays"] = arrays_to_record(
        {k: v.astype(np.float64) for k, v in model_state().items()}
    )
    config = _content()
    config["site"] = ConfigRecord({"site-id": "vienna", "blob": b"\x00\x02"})
    renamed = _content()
    renamed["losses"] = renamed.pop("loss")

    variants = [_content(loss=0.25), weights, dtype, config, renamed]

    assert all(canonical_bytes(v) != base for v in variants)
    assert len({canonical_bytes(v) for v in variants}) == len(variants)


def test_canonical_bytes_hold_c_order_raw_values_for_fortran_arrays() -> None:
    values = np.arange(12, dtype=np.int32).reshape(3, 4)
    c_order = RecordDict({"a": ArrayRecord({"x": Array(values)})})
    fortran = RecordDict({"a": ArrayRecord({"x": Array(np.asfortranarray(values))})})

    assert canonical_bytes(fortran) == canonical_bytes(c_order)
    assert values.tobytes() in canonical_bytes(c_order)


def test_canonical_json_writes_nan_and_floats_by_repr() -> None:
    content = RecordDict({"m": MetricRecord({"b": 0.1, "a": float("nan"), "c": 1})})

    data = canonical_bytes(content)

    assert b'{"a":NaN,"b":0.1,"c":1}' in data


def test_content_digest_is_size_and_sha256_of_canonical_bytes() -> None:
    content = _content()
    data = canonical_bytes(content)

    size, sha256 = content_digest(content)

    assert size == len(data)
    assert sha256 == hashlib.sha256(data).hexdigest()
