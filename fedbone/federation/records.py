"""Codecs between Flower records and plain Python/numpy, and content digests.

:func:`canonical_bytes` is the byte string the egress log's size and sha256
describe: one deterministic serialisation of a whole :class:`RecordDict` that
does not depend on how Flower frames it on the wire, so a site and the server
can each recompute the digest of what was exchanged.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

__all__ = [
    "array_signature",
    "arrays_to_record",
    "canonical_bytes",
    "content_digest",
    "payload_signature",
    "record_to_arrays",
]

_NUMPY_STYPE = "numpy.ndarray"
_FORMAT_TAG = b"fedbone-content/1"

ArraySignature = tuple[tuple[int, ...], str]


def arrays_to_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Pack named numpy arrays into an ArrayRecord, keeping their order.

    Parameters
    ----------
    arrays
        Name to array, e.g. a model's state dict converted to numpy.
    """
    return ArrayRecord({key: Array(np.asarray(value)) for key, value in arrays.items()})


def record_to_arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    """Unpack an ArrayRecord into named numpy arrays, in record order."""
    return {key: array.numpy() for key, array in record.items()}


def array_signature(record: ArrayRecord) -> dict[str, ArraySignature]:
    """Each array's declared ``(shape, dtype)``, keyed by name, in record order."""
    return {
        key: (tuple(int(n) for n in array.shape), str(array.dtype))
        for key, array in record.items()
    }


@dataclass(frozen=True)
class _NpyPayload:
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    fortran_order: bool
    offset: int


def _read_payload(array: Array) -> _NpyPayload:
    """Parse the ``.npy`` header of an Array's bytes and check the byte count."""
    if array.stype != _NUMPY_STYPE:
        raise ValueError(f"serialisation {array.stype!r} is not {_NUMPY_STYPE!r}")
    stream = io.BytesIO(array.data)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except (ValueError, OSError, SyntaxError) as exc:
        raise ValueError(f"not a valid .npy payload ({exc})") from exc
    if dtype.hasobject:
        raise ValueError("object arrays are not allowed")
    offset = stream.tell()
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(array.data) - offset != expected:
        raise ValueError(
            f"payload holds {len(array.data) - offset} bytes but shape {shape} "
            f"of {dtype} needs {expected}"
        )
    return _NpyPayload(tuple(int(n) for n in shape), dtype, fortran_order, offset)


def payload_signature(array: Array) -> ArraySignature:
    """Return the ``(shape, dtype)`` an Array's bytes really encode.

    An Array's ``shape`` and ``dtype`` fields are only declarations; the egress
    guard compares them to what the serialised bytes hold, so a payload cannot
    hide more data than it declares.

    Raises
    ------
    ValueError
        If the bytes are not a plain numpy ``.npy`` payload of exactly the size
        their header states.
    """
    payload = _read_payload(array)
    return payload.shape, str(payload.dtype)


def _frame(data: bytes | memoryview) -> Iterator[bytes | memoryview]:
    yield struct.pack(">Q", len(data))
    yield data


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"bytes": value.hex()}
    if isinstance(value, list):
        return [_json_value(item) for item in value]
    return value


def _sorted_json(record: MetricRecord | ConfigRecord) -> bytes:
    # json writes floats with float.__repr__ and nan/inf as NaN/Infinity
    mapping = {key: _json_value(value) for key, value in record.items()}
    text = json.dumps(mapping, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return text.encode("utf-8")


def _array_chunks(key: str, array: Array) -> Iterator[bytes | memoryview]:
    yield from _frame(key.encode("utf-8"))
    try:
        payload = _read_payload(array)
    except ValueError:
        # Refused payloads are still logged: digest them as declared + raw bytes.
        yield from _frame(f"unparsed {array.stype} {array.dtype}".encode())
        yield from _frame(repr(tuple(array.shape)).encode())
        yield from _frame(array.data)
        return
    yield from _frame(payload.dtype.str.encode())
    yield from _frame(repr(payload.shape).encode())
    if payload.fortran_order:
        values = np.load(io.BytesIO(array.data), allow_pickle=False)
        yield from _frame(np.ascontiguousarray(values).tobytes())
    else:
        yield from _frame(memoryview(array.data)[payload.offset :])


def _canonical_chunks(content: RecordDict) -> Iterator[bytes | memoryview]:
    yield from _frame(_FORMAT_TAG)
    for name in sorted(content):
        record = content[name]
        yield from _frame(f"{type(record).__name__}:{name}".encode())
        if isinstance(record, ArrayRecord):
            yield struct.pack(">Q", len(record))
            for key in sorted(record):
                yield from _array_chunks(key, record[key])
        else:
            yield from _frame(_sorted_json(record))


def canonical_bytes(content: RecordDict) -> bytes:
    """Deterministic serialisation of a whole RecordDict.

    Records in name order, each tagged with its type; arrays by sorted key as
    key, dtype (with byte order), shape and raw C-order bytes; metric and
    config records as sorted, compact JSON (floats by ``repr``, nan as
    ``NaN``, bytes as hex). Every field is length-prefixed, so no two
    different contents share a serialisation.

    Parameters
    ----------
    content
        The records of a message.
    """
    return b"".join(_canonical_chunks(content))


def content_digest(content: RecordDict) -> tuple[int, str]:
    """``(len(canonical_bytes(content)), sha256 hex)``, computed in one stream."""
    digest = hashlib.sha256()
    size = 0
    for chunk in _canonical_chunks(content):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()
