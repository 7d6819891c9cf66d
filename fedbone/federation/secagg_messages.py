"""Secure aggregation's four stages as Flower records, both ways.

Requests carry the study's usual ``config`` record plus:

- ``secagg-round`` (every stage): the round id; ``secagg-threshold`` (stage 2);
- ``query.secagg_shares``: ``secagg-peers``, an ArrayRecord of ``node-ids``
  (uint64), ``cipher-public-keys`` and ``mask-public-keys`` (uint8, 32 per row);
- ``train.secagg``: the global model (``arrays``), ``secagg-inbox`` (``node-ids``
  and ``ciphertexts``) and ``secagg-clip``, ``secagg-scale-bits``,
  ``secagg-max-weight``;
- ``query.secagg_unmask``: ``secagg-survivors`` (``survivors``, ``dropped``).

Replies are declared in :data:`fedbone.federation.kinds.REPLY_SPECS` and
checked by :mod:`fedbone.federation.egress.secagg_rules`. The site's round
state lives in its Flower ``context.state`` between stages, never on disk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict

from fedbone.federation.kinds import (
    CONFIG_RECORD,
    SECAGG_INBOX_RECORD,
    SECAGG_KEYS_RECORD,
    SECAGG_MASKED_RECORD,
    SECAGG_PEERS_RECORD,
    SECAGG_SHARES_RECORD,
    SECAGG_SURVIVORS_RECORD,
    SECAGG_UNMASK_RECORD,
)
from fedbone.federation.records import arrays_to_record, record_to_arrays
from fedbone.federation.secure_aggregation import (
    CIPHERTEXT_BYTES,
    KEY_BYTES,
    SHARE_BYTES,
    FixedPoint,
    Inbox,
    PeerKeys,
    PublicKeys,
    SiteRound,
    UnmaskRequest,
    UnmaskShares,
)
from fedbone.federation.study_messages import config_float, config_int, config_str

__all__ = [
    "MaskSettings",
    "inbox_from",
    "inbox_record",
    "keys_from",
    "keys_record",
    "mask_settings_from",
    "masked_from",
    "masked_record",
    "peers_from",
    "peers_record",
    "round_id_from",
    "shares_from",
    "shares_record",
    "site_round_from",
    "site_round_to",
    "unmask_from",
    "unmask_record",
    "unmask_request_from",
    "unmask_request_record",
]

_STATE = "secagg-state"


@dataclass(frozen=True)
class MaskSettings:
    """How a site encodes its update in a round (``train.secagg``).

    Parameters
    ----------
    clip
        Largest magnitude of one update element.
    scale_bits
        Fractional bits of the fixed-point encoding.
    max_weight
        Largest ``num-examples`` any site of the round may have.
    """

    clip: float
    scale_bits: int
    max_weight: int

    def codec(self) -> FixedPoint:
        """Return the round's fixed-point encoding (bound ``max_weight * clip``)."""
        return FixedPoint(self.scale_bits, self.max_weight * self.clip)

    def to_config(self) -> dict[str, int | float]:
        """Return the ``config`` entries that carry these settings."""
        return {
            "secagg-clip": self.clip,
            "secagg-scale-bits": self.scale_bits,
            "secagg-max-weight": self.max_weight,
        }


def _config(message: Message) -> ConfigRecord:
    return message.content.config_records[CONFIG_RECORD]


def round_id_from(message: Message) -> str:
    """Return the ``secagg-round`` a request belongs to."""
    return config_str(_config(message), "secagg-round")


def mask_settings_from(message: Message) -> MaskSettings:
    """Return the encoding settings of a ``train.secagg`` request."""
    config = _config(message)
    return MaskSettings(
        clip=config_float(config, "secagg-clip"),
        scale_bits=config_int(config, "secagg-scale-bits"),
        max_weight=config_int(config, "secagg-max-weight"),
    )


def _ids(values: tuple[int, ...] | list[int]) -> np.ndarray:
    return np.asarray(values, dtype=np.uint64).reshape(-1)


def _rows(values: list[bytes] | tuple[bytes, ...], width: int) -> np.ndarray:
    if not values:
        return np.zeros((0, width), dtype=np.uint8)
    return np.frombuffer(b"".join(values), dtype=np.uint8).reshape(len(values), width)


def _bytes_rows(array: np.ndarray, width: int) -> tuple[bytes, ...]:
    array = np.asarray(array, dtype=np.uint8).reshape(-1, width)
    return tuple(row.tobytes() for row in array)


def _int_ids(array: np.ndarray) -> tuple[int, ...]:
    return tuple(int(v) for v in np.asarray(array, dtype=np.uint64).reshape(-1))


def keys_record(keys: PublicKeys) -> ConfigRecord:
    """Pack a site's stage 1 reply: its two public keys."""
    return ConfigRecord(
        {"cipher-public-key": keys.cipher, "mask-public-key": keys.mask}
    )


def keys_from(content: RecordDict) -> PublicKeys:
    """Return the public keys of a stage 1 reply."""
    record = content.config_records[SECAGG_KEYS_RECORD]
    return PublicKeys(
        bytes(record["cipher-public-key"]),  # type: ignore[arg-type]
        bytes(record["mask-public-key"]),  # type: ignore[arg-type]
    )


def peers_record(peers: PeerKeys) -> ArrayRecord:
    """Pack the stage 2 request: every site that sent keys, and the keys."""
    return arrays_to_record(
        {
            "node-ids": _ids(peers.node_ids),
            "cipher-public-keys": _rows([k.cipher for k in peers.keys], KEY_BYTES),
            "mask-public-keys": _rows([k.mask for k in peers.keys], KEY_BYTES),
        }
    )


def peers_from(message: Message) -> PeerKeys:
    """Return the peer list of a stage 2 request."""
    arrays = record_to_arrays(message.content.array_records[SECAGG_PEERS_RECORD])
    ciphers = _bytes_rows(arrays["cipher-public-keys"], KEY_BYTES)
    masks = _bytes_rows(arrays["mask-public-keys"], KEY_BYTES)
    return PeerKeys(
        _int_ids(arrays["node-ids"]),
        tuple(PublicKeys(c, m) for c, m in zip(ciphers, masks, strict=True)),
    )


def shares_record(ciphertexts: list[bytes]) -> ArrayRecord:
    """Pack a site's stage 2 reply: one sealed pair of shares per peer."""
    return arrays_to_record({"ciphertexts": _rows(ciphertexts, CIPHERTEXT_BYTES)})


def shares_from(content: RecordDict) -> tuple[bytes, ...]:
    """Return the ciphertexts of a stage 2 reply, in peer order."""
    arrays = record_to_arrays(content.array_records[SECAGG_SHARES_RECORD])
    return _bytes_rows(arrays["ciphertexts"], CIPHERTEXT_BYTES)


def inbox_record(inbox: Inbox) -> ArrayRecord:
    """Pack a stage 3 request: the shares the other sites sealed for one site."""
    return arrays_to_record(
        {
            "node-ids": _ids(inbox.senders),
            "ciphertexts": _rows(inbox.ciphertexts, CIPHERTEXT_BYTES),
        }
    )


def inbox_from(message: Message) -> Inbox:
    """Return the inbox of a stage 3 request."""
    arrays = record_to_arrays(message.content.array_records[SECAGG_INBOX_RECORD])
    return Inbox(
        _int_ids(arrays["node-ids"]),
        _bytes_rows(arrays["ciphertexts"], CIPHERTEXT_BYTES),
    )


def masked_record(masked: np.ndarray) -> ArrayRecord:
    """Pack a site's stage 3 reply: its masked input."""
    return arrays_to_record({"masked": np.asarray(masked, dtype=np.uint64)})


def masked_from(content: RecordDict) -> np.ndarray:
    """Return the masked input of a stage 3 reply."""
    return record_to_arrays(content.array_records[SECAGG_MASKED_RECORD])["masked"]


def unmask_request_record(request: UnmaskRequest) -> ArrayRecord:
    """Pack the stage 4 request: survivors and dropped sites."""
    return arrays_to_record(
        {"survivors": _ids(request.survivors), "dropped": _ids(request.dropped)}
    )


def unmask_request_from(message: Message) -> UnmaskRequest:
    """Return the survivors and dropped sites of a stage 4 request."""
    arrays = record_to_arrays(message.content.array_records[SECAGG_SURVIVORS_RECORD])
    return UnmaskRequest(_int_ids(arrays["survivors"]), _int_ids(arrays["dropped"]))


def unmask_record(shares: UnmaskShares) -> ArrayRecord:
    """Pack a site's stage 4 reply: its shares, in the request's order."""
    return arrays_to_record(
        {
            "self-mask-shares": _rows(
                [v.to_bytes(SHARE_BYTES, "big") for v in shares.self_mask_shares],
                SHARE_BYTES,
            ),
            "mask-key-shares": _rows(
                [v.to_bytes(SHARE_BYTES, "big") for v in shares.mask_key_shares],
                SHARE_BYTES,
            ),
        }
    )


def unmask_from(content: RecordDict) -> UnmaskShares:
    """Return the shares of a stage 4 reply."""
    arrays = record_to_arrays(content.array_records[SECAGG_UNMASK_RECORD])
    return UnmaskShares(
        tuple(
            int.from_bytes(row, "big")
            for row in _bytes_rows(arrays["self-mask-shares"], SHARE_BYTES)
        ),
        tuple(
            int.from_bytes(row, "big")
            for row in _bytes_rows(arrays["mask-key-shares"], SHARE_BYTES)
        ),
    )


def site_round_from(context: Context) -> SiteRound | None:
    """Return the site's round in progress, from its Flower context, or None."""
    record = context.state.config_records.get(_STATE)
    if record is None or not record.get("round"):
        return None
    return SiteRound.from_json(str(record["round"]))


def site_round_to(context: Context, state: SiteRound | None) -> None:
    """Keep the site's round state; ``None`` discards it (the round is over)."""
    context.state[_STATE] = ConfigRecord(
        {"round": state.to_json() if state is not None else ""}
    )
