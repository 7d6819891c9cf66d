"""The egress guard on secure aggregation's replies: exactly the protocol's sizes.

Masked inputs look like noise, so the guard holds their shape fixed: keys of
32 bytes, one sealed share pair per listed peer, a masked vector of the
request model's float elements plus one, one share per survivor and dropped
site. Anything else is refused.
"""

from __future__ import annotations

import numpy as np
import pytest
from federation_messages import config, model_state, request
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fedbone.federation.egress.guard import EgressGuard, EgressRefused
from fedbone.federation.records import arrays_to_record
from fedbone.federation.secure_aggregation import CIPHERTEXT_BYTES, SHARE_BYTES

PEERS = 4
#: conv.weight (4x1x3x3) and conv.bias (4): the counter is not masked
MASKED = 36 + 4 + 1


def _screen(message: Message, content: RecordDict) -> RecordDict:
    screened, _ = EgressGuard().screen(message, content)
    return screened


def _codes(message: Message, content: RecordDict) -> list[str]:
    with pytest.raises(EgressRefused) as caught:
        EgressGuard().screen(message, content)
    return caught.value.codes


def _keys_request() -> Message:
    return request("query.secagg_keys", RecordDict({"config": config("train")}))


def _shares_request() -> Message:
    peers = arrays_to_record(
        {
            "node-ids": np.arange(PEERS, dtype=np.uint64),
            "cipher-public-keys": np.zeros((PEERS, 32), dtype=np.uint8),
            "mask-public-keys": np.zeros((PEERS, 32), dtype=np.uint8),
        }
    )
    return request(
        "query.secagg_shares",
        RecordDict({"config": config("train"), "secagg-peers": peers}),
    )


def _train_request() -> Message:
    content = RecordDict(
        {
            "arrays": arrays_to_record(model_state()),
            "config": config("train"),
            "secagg-inbox": arrays_to_record(
                {
                    "node-ids": np.arange(3, dtype=np.uint64),
                    "ciphertexts": np.zeros((3, CIPHERTEXT_BYTES), dtype=np.uint8),
                }
            ),
        }
    )
    return request("train.secagg", content)


def _unmask_request(survivors: int = 3, dropped: int = 1) -> Message:
    record = arrays_to_record(
        {
            "survivors": np.arange(survivors, dtype=np.uint64),
            "dropped": np.arange(dropped, dtype=np.uint64),
        }
    )
    return request(
        "query.secagg_unmask",
        RecordDict({"config": config("train"), "secagg-survivors": record}),
    )


def _masked(
    length: int = MASKED, dtype: type = np.uint64, **extra: object
) -> RecordDict:
    arrays = {"masked": np.zeros(length, dtype=dtype), **extra}
    metrics = MetricRecord({"train-loss": 0.5, "val-loss": 0.6, "seconds": 1.0})
    return RecordDict(
        {"secagg-masked": arrays_to_record(arrays), "metrics": metrics}  # type: ignore[arg-type]
    )


def _shares(rows: int = PEERS - 1, width: int = CIPHERTEXT_BYTES) -> RecordDict:
    sealed = np.zeros((rows, width), dtype=np.uint8)
    return RecordDict({"secagg-shares": arrays_to_record({"ciphertexts": sealed})})


def _unmask(survivors: int = 3, dropped: int = 1) -> RecordDict:
    return RecordDict(
        {
            "secagg-unmask": arrays_to_record(
                {
                    "self-mask-shares": np.zeros((survivors, SHARE_BYTES), np.uint8),
                    "mask-key-shares": np.zeros((dropped, SHARE_BYTES), np.uint8),
                }
            )
        }
    )


def test_every_stage_s_reply_of_the_right_size_passes() -> None:
    keys = RecordDict(
        {
            "secagg-keys": ConfigRecord(
                {"cipher-public-key": b"\x01" * 32, "mask-public-key": b"\x02" * 32}
            )
        }
    )

    assert "secagg-keys" in _screen(_keys_request(), keys)
    assert "secagg-shares" in _screen(_shares_request(), _shares())
    assert "secagg-masked" in _screen(_train_request(), _masked())
    assert "secagg-unmask" in _screen(_unmask_request(), _unmask())


@pytest.mark.parametrize(
    ("values", "code"),
    [
        ({"cipher-public-key": b"\x01" * 33, "mask-public-key": b"\x02" * 32},
         "not-a-public-key"),
        ({"cipher-public-key": "a short string", "mask-public-key": b"\x02" * 32},
         "not-a-public-key"),
        ({"cipher-public-key": b"\x01" * 32}, "missing-key"),
        ({"cipher-public-key": b"\x01" * 32, "mask-public-key": b"\x02" * 32,
          "note": b"x"}, "unexpected-key"),
    ],
)  # fmt: skip
def test_anything_but_two_public_keys_is_refused(
    values: dict[str, object], code: str
) -> None:
    content = RecordDict({"secagg-keys": ConfigRecord(values)})  # type: ignore[arg-type]

    assert code in _codes(_keys_request(), content)


@pytest.mark.parametrize(
    "shares",
    [_shares(rows=PEERS), _shares(width=CIPHERTEXT_BYTES + 1)],
    ids=["a row too many", "a longer ciphertext"],
)
def test_shares_not_one_sealed_pair_per_peer_are_refused(shares: RecordDict) -> None:
    assert _codes(_shares_request(), shares) == ["secagg-size"]


@pytest.mark.parametrize(
    ("masked", "codes"),
    [
        (_masked(length=MASKED + 1), ["secagg-size"]),
        (_masked(dtype=np.float64), ["secagg-size"]),
        (
            _masked(**{"conv.weight": model_state()["conv.weight"]}),
            ["extra-array"],
        ),
    ],
    ids=["one element too many", "floats in the clear", "a model array beside it"],
)
def test_a_masked_input_of_another_size_or_kind_is_refused(
    masked: RecordDict, codes: list[str]
) -> None:
    assert _codes(_train_request(), masked) == codes


def test_the_weight_never_leaves_in_the_clear() -> None:
    content = _masked()
    content["metrics"] = MetricRecord({"num-examples": 40, "train-loss": 0.5})

    assert _codes(_train_request(), content) == ["unexpected-key"]


def test_a_masked_reply_to_a_request_without_a_model_is_refused() -> None:
    bare = request("train.secagg", RecordDict({"config": config("train")}))

    assert _codes(bare, _masked()) == ["unexpected-arrays"]


def test_a_masked_payload_hiding_more_bytes_than_declared_is_refused() -> None:
    content = _masked()
    record = content.array_records["secagg-masked"]
    array = record["masked"]
    array.data = array.data + b"\x00" * 8  # one hidden element

    assert _codes(_train_request(), content) == ["array-payload-mismatch"]


def test_unmask_shares_not_one_per_named_site_are_refused() -> None:
    assert _codes(_unmask_request(), _unmask(survivors=4, dropped=0)) == [
        "secagg-size",
        "secagg-size",
    ]


def test_secure_aggregation_replies_carry_no_other_record() -> None:
    content = _unmask()
    content["extra"] = ArrayRecord()

    assert _codes(_unmask_request(), content) == ["unexpected-arrays"]
