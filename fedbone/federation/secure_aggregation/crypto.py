"""Key agreement, the share channel and mask streams (``cryptography``).

- Each site makes two X25519 key pairs per round: a *cipher* pair, whose
  agreed keys encrypt the shares it sends its peers through the centre, and
  a *mask* pair, whose agreed keys seed the pairwise masks. Two pairs, as in
  Bonawitz et al. (2017): when the centre rebuilds a dropped site's mask key,
  it still cannot read the shares that site exchanged (among them the
  shares of its self-mask seed).
- Agreed secrets pass through HKDF-SHA256, bound to the round and purpose.
- Shares travel AES-256-GCM encrypted; the associated data binds the round,
  sender and receiver, so the centre can neither read nor re-route them.
- A mask is the ChaCha20 keystream of a 32-byte seed, read as ``uint64``; each
  seed masks one vector of one round.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedbone.errors import Problem
from fedbone.federation.secure_aggregation.errors import SecureAggregationError
from fedbone.federation.secure_aggregation.shamir import SHARE_BYTES

__all__ = [
    "CIPHER",
    "CIPHERTEXT_BYTES",
    "KEY_BYTES",
    "MASK",
    "KeyPair",
    "agreed_key",
    "decrypt_shares",
    "encrypt_shares",
    "mask_stream",
    "new_key_pair",
    "new_seed",
    "public_key_of",
]

KEY_BYTES = 32
_NONCE_BYTES = 12
_TAG_BYTES = 16
_IDS = struct.Struct(">QQ")
_PLAINTEXT_BYTES = _IDS.size + 2 * SHARE_BYTES
CIPHERTEXT_BYTES = _NONCE_BYTES + _PLAINTEXT_BYTES + _TAG_BYTES
"""Bytes of one encrypted pair of shares (nonce, ciphertext, tag)."""

#: HKDF purposes: one agreed secret never keys two things.
CIPHER = "cipher"
MASK = "mask"


@dataclass(frozen=True)
class KeyPair:
    """An X25519 key pair as raw 32-byte strings."""

    private: bytes
    public: bytes


def new_key_pair() -> KeyPair:
    """Return a fresh X25519 key pair."""
    key = X25519PrivateKey.generate()
    return KeyPair(key.private_bytes_raw(), key.public_key().public_bytes_raw())


def public_key_of(private: bytes) -> bytes:
    """Return the raw public key of a raw X25519 private key."""
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def new_seed() -> bytes:
    """Return 32 random bytes (a self-mask seed)."""
    return os.urandom(KEY_BYTES)


def agreed_key(
    private: bytes, peer_public: bytes, purpose: str, round_id: str
) -> bytes:
    """Return the 32-byte key two sites agree on for ``purpose`` in a round.

    Parameters
    ----------
    private
        This side's raw X25519 private key.
    peer_public
        The other side's raw X25519 public key.
    purpose
        ``cipher`` (the share channel) or ``mask`` (the pairwise mask seed).
    round_id
        The round, so no key serves two rounds.

    Raises
    ------
    SecureAggregationError
        ``bad-public-key`` for a key that is not 32 bytes or gives no shared
        secret (a low-order point).
    """
    try:
        secret = X25519PrivateKey.from_private_bytes(private).exchange(
            X25519PublicKey.from_public_bytes(peer_public)
        )
    except ValueError as exc:
        raise SecureAggregationError(
            "key agreement",
            [Problem("bad-public-key", f"no key agreement with this key ({exc})")],
        ) from None
    return HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_BYTES,
        salt=None,
        info=f"fedbone-secagg/{purpose}/{round_id}".encode(),
    ).derive(secret)


def _associated_data(round_id: str, sender: int, receiver: int) -> bytes:
    return round_id.encode() + _IDS.pack(sender, receiver)


def encrypt_shares(
    key: bytes,
    round_id: str,
    sender: int,
    receiver: int,
    shares: tuple[int, int],
) -> bytes:
    """Encrypt a sender's two shares for one receiver.

    Parameters
    ----------
    key
        The pair's agreed ``cipher`` key.
    round_id
        The round (bound into the associated data).
    sender, receiver
        The node ids (bound into both plaintext and associated data).
    shares
        The receiver's share of the sender's self-mask seed and of its mask
        private key.
    """
    plaintext = _IDS.pack(sender, receiver) + b"".join(
        share.to_bytes(SHARE_BYTES, "big") for share in shares
    )
    nonce = os.urandom(_NONCE_BYTES)
    aad = _associated_data(round_id, sender, receiver)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def decrypt_shares(
    key: bytes, round_id: str, sender: int, receiver: int, ciphertext: bytes
) -> tuple[int, int]:
    """Return the two shares :func:`encrypt_shares` sealed.

    Parameters
    ----------
    key
        The pair's agreed ``cipher`` key.
    round_id
        The round it was sealed for.
    sender, receiver
        The node ids it was sealed between.
    ciphertext
        :data:`CIPHERTEXT_BYTES` bytes.

    Raises
    ------
    SecureAggregationError
        ``bad-ciphertext`` if it was altered, re-routed or is from another
        round.
    """
    if len(ciphertext) != CIPHERTEXT_BYTES:
        raise SecureAggregationError(
            "shares",
            [
                Problem(
                    "bad-ciphertext",
                    f"{len(ciphertext)} bytes, expected {CIPHERTEXT_BYTES}",
                )
            ],
        )
    nonce, sealed = ciphertext[:_NONCE_BYTES], ciphertext[_NONCE_BYTES:]
    aad = _associated_data(round_id, sender, receiver)
    try:
        plaintext = AESGCM(key).decrypt(nonce, sealed, aad)
    except InvalidTag:
        raise SecureAggregationError(
            "shares",
            [
                Problem(
                    "bad-ciphertext",
                    f"the shares from node {sender} do not decrypt: altered, "
                    "re-routed or from another round",
                )
            ],
        ) from None
    if _IDS.unpack(plaintext[: _IDS.size]) != (sender, receiver):
        raise SecureAggregationError(
            "shares",
            [Problem("bad-ciphertext", "the shares name other nodes")],
        )
    body = plaintext[_IDS.size :]
    return (
        int.from_bytes(body[:SHARE_BYTES], "big"),
        int.from_bytes(body[SHARE_BYTES:], "big"),
    )


def mask_stream(seed: bytes, length: int) -> np.ndarray:
    """Return ``length`` pseudo-random ``uint64`` values from a 32-byte seed.

    Parameters
    ----------
    seed
        The mask's seed (a self-mask seed, or an agreed ``mask`` key).
    length
        How many values.
    """
    # A fixed nonce is safe: every seed keys exactly one mask.
    encryptor = Cipher(algorithms.ChaCha20(seed, bytes(16)), mode=None).encryptor()
    stream = encryptor.update(bytes(8 * length))
    return np.frombuffer(stream, dtype="<u8").astype(np.uint64, copy=False)
