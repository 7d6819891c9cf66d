"""What the four stages exchange, and the rules both sides check.

Stage 1 (keys): each site sends two public keys.
Stage 2 (shares): each site gets every site's keys (``U1``) and sends, for
each peer, its shares of its self-mask seed and of its mask private key,
encrypted for that peer.
Stage 3 (masked input): each site that sent shares (``U2``) gets the shares
addressed to it, trains, and sends its masked input.
Stage 4 (unmask): each site whose input arrived (``U3``) is told who
survived and who dropped (``U2`` less ``U3``) and sends its shares of the
survivors' self-mask seeds and of the dropped sites' mask keys.

Node ids order the sites; a site's Shamir ``x`` is its 1-based position in
the sorted ``U1``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fedbone.errors import Problem
from fedbone.federation.secure_aggregation.errors import SecureAggregationError

__all__ = [
    "Inbox",
    "PeerKeys",
    "PublicKeys",
    "UnmaskRequest",
    "UnmaskShares",
    "check_round_id",
    "check_threshold",
    "minimum_threshold",
]

_ROUND_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")


@dataclass(frozen=True)
class PublicKeys:
    """A site's two public keys of a round (raw X25519, 32 bytes each)."""

    cipher: bytes
    mask: bytes


@dataclass(frozen=True)
class PeerKeys:
    """Every site of stage 1 (``U1``): node ids, ascending, and their keys."""

    node_ids: tuple[int, ...]
    keys: tuple[PublicKeys, ...]

    def position(self, node_id: int) -> int:
        """Return the Shamir ``x`` of ``node_id`` (its 1-based position)."""
        return self.node_ids.index(node_id) + 1


@dataclass(frozen=True)
class Inbox:
    """The encrypted shares addressed to one site, by sender (``U2`` less it)."""

    senders: tuple[int, ...]
    ciphertexts: tuple[bytes, ...]


@dataclass(frozen=True)
class UnmaskRequest:
    """Who sent a masked input (``U3``) and who shared keys but did not."""

    survivors: tuple[int, ...]
    dropped: tuple[int, ...]


@dataclass(frozen=True)
class UnmaskShares:
    """One site's shares, in the order of an :class:`UnmaskRequest`."""

    self_mask_shares: tuple[int, ...]
    mask_key_shares: tuple[int, ...]


def check_round_id(round_id: str) -> str:
    """Return ``round_id`` if it is a short lowercase token; refuse it else."""
    if not _ROUND_ID.fullmatch(round_id):
        raise SecureAggregationError(
            "secagg-round",
            [
                Problem(
                    "bad-round-id",
                    "a round id is 1-100 lowercase letters, digits, '.', '_' or '-'",
                )
            ],
        )
    return round_id


def minimum_threshold(n_sites: int) -> int:
    """Return the least threshold a site accepts among ``n_sites``.

    A strict majority.

    A site gives the centre, per peer, shares of its self-mask seed *or* of
    its mask key, never both. To learn both secrets of one site the centre
    needs ``t`` shares of each from different sites, ``2t`` in all, which
    ``n`` sites cannot give when ``2t > n``.
    """
    return n_sites // 2 + 1


def check_threshold(threshold: int, n_sites: int) -> None:
    """Refuse a threshold outside ``minimum_threshold(n) .. n``.

    Raises
    ------
    SecureAggregationError
        ``threshold-too-low`` or ``bad-threshold``.
    """
    if threshold < minimum_threshold(n_sites):
        raise SecureAggregationError(
            "secagg-threshold",
            [
                Problem(
                    "threshold-too-low",
                    f"threshold {threshold} among {n_sites} sites; at least "
                    f"{minimum_threshold(n_sites)} (a strict majority) keep a "
                    "centre from collecting both secrets of one site",
                )
            ],
        )
    if threshold > n_sites:
        raise SecureAggregationError(
            "secagg-threshold",
            [
                Problem(
                    "bad-threshold",
                    f"threshold {threshold} exceeds the {n_sites} sites",
                )
            ],
        )
