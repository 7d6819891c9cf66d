"""Reply rules for secure aggregation: keys, sealed shares, masked inputs.

A masked input looks like noise, so the guard cannot tell a masked update
from anything else of the same size; what it can and does hold fixed is the
shape of everything a secure round lets out, derived from the request:

- public keys: two raw X25519 keys of 32 bytes;
- sealed shares: one ciphertext of fixed size per peer the request listed;
- the masked input: exactly the request model's floating-point elements plus
  one (the weight), uint64;
- unmask shares: one share of fixed size per survivor and per dropped site
  the request named.

A payload whose bytes differ from its declared shape and dtype is refused, as
for model arrays.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord

from fedbone.errors import Problem
from fedbone.federation.kinds import (
    SECAGG_PEERS_RECORD,
    SECAGG_SURVIVORS_RECORD,
    ValueRule,
)
from fedbone.federation.records import ArraySignature, payload_signature
from fedbone.federation.secure_aggregation import (
    CIPHERTEXT_BYTES,
    KEY_BYTES,
    SHARE_BYTES,
    masked_size,
)

__all__ = ["public_key_problems", "secagg_array_problems"]

#: The request's model (``train.secagg``), as the train kinds name it.
_MODEL_RECORD = "arrays"

RequestArrays = Mapping[str, Mapping[str, ArraySignature]]


def public_key_problems(name: str, record: ConfigRecord) -> list[Problem]:
    """Every way ``record`` is not two raw 32-byte public keys.

    Parameters
    ----------
    name
        The record's name, for messages.
    record
        The reply's ``secagg-keys`` record (its keys are checked elsewhere).
    """
    problems = [
        Problem(
            "not-a-public-key",
            f"expected {KEY_BYTES} raw bytes (an X25519 public key)",
            f"{name}/{key}",
        )
        for key, value in record.items()
        if not (isinstance(value, bytes) and len(value) == KEY_BYTES)
    ]
    return problems + [
        Problem("missing-key", "both public keys are needed", f"{name}/{key}")
        for key in ("cipher-public-key", "mask-public-key")
        if key not in record
    ]


def _length(request: RequestArrays, record: str, key: str) -> int | None:
    signature = request.get(record, {}).get(key)
    if signature is None or len(signature[0]) != 1:
        return None
    return signature[0][0]


def _expected(
    rule: ValueRule, request: RequestArrays
) -> dict[str, ArraySignature] | str:
    """Return the arrays a reply under ``rule`` must hold, or why none may go."""
    if rule is ValueRule.SECAGG_SHARES:
        peers = _length(request, SECAGG_PEERS_RECORD, "node-ids")
        if peers is None:
            return f"the request lists no peers ({SECAGG_PEERS_RECORD!r})"
        return {"ciphertexts": ((peers - 1, CIPHERTEXT_BYTES), "uint8")}
    if rule is ValueRule.MASKED_INPUT:
        model = request.get(_MODEL_RECORD)
        if model is None:
            return "the request carried no model to mask an update of"
        return {"masked": ((masked_size(model) + 1,), "uint64")}
    survivors = _length(request, SECAGG_SURVIVORS_RECORD, "survivors")
    dropped = _length(request, SECAGG_SURVIVORS_RECORD, "dropped")
    if survivors is None or dropped is None:
        return f"the request names no survivors ({SECAGG_SURVIVORS_RECORD!r})"
    return {
        "self-mask-shares": ((survivors, SHARE_BYTES), "uint8"),
        "mask-key-shares": ((dropped, SHARE_BYTES), "uint8"),
    }


def secagg_array_problems(
    name: str, record: ArrayRecord, rule: ValueRule, request: RequestArrays
) -> list[Problem]:
    """Every way ``record`` differs from what ``rule`` lets out for ``request``.

    Parameters
    ----------
    name
        The record's name, for messages.
    record
        The reply's array record.
    rule
        :attr:`ValueRule.SECAGG_SHARES`, :attr:`ValueRule.MASKED_INPUT` or
        :attr:`ValueRule.UNMASK_SHARES`.
    request
        Signatures of the request's array records, by record name.
    """
    expected = _expected(rule, request)
    if isinstance(expected, str):
        return [Problem("unexpected-arrays", expected, name)]
    problems: list[Problem] = []
    for key in record:
        where = f"{name}/{key}"
        if key not in expected:
            problems.append(
                Problem(
                    "extra-array",
                    f"a {name!r} record holds only {', '.join(expected)}",
                    where,
                )
            )
            continue
        problems += _array_problems(where, record[key], expected[key])
    return problems + [
        Problem("missing-array", "the reply lacks it", f"{name}/{key}")
        for key in expected
        if key not in record
    ]


def _array_problems(where: str, array: Any, expected: ArraySignature) -> list[Problem]:
    try:
        actual = payload_signature(array)
    except ValueError as exc:
        return [Problem("array-payload-mismatch", str(exc), where)]
    declared = (tuple(int(n) for n in array.shape), str(array.dtype))
    if actual != declared:
        return [
            Problem(
                "array-payload-mismatch",
                f"declares {declared} but its bytes hold {actual}",
                where,
            )
        ]
    if actual != expected:
        return [
            Problem(
                "secagg-size",
                f"shape {actual[0]} {actual[1]}, but this request allows exactly "
                f"{expected[0]} {expected[1]}",
                where,
            )
        ]
    return []
