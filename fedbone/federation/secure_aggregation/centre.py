"""The centre's side of one secure aggregation round: routing and unmasking.

:class:`CentreRound` collects each stage's replies, routes the encrypted
shares (which it cannot read), and, from the survivors' shares, rebuilds what
removes the masks: the survivors' self-mask seeds and the dropped sites'
mask private keys (never both for one site). What it ends with is the sum of
the survivors' inputs, modulo 2^64; no single input is ever in the clear.

Every stage needs at least ``threshold`` sites; below that the round fails
with :class:`SecureAggregationError` (``too-few-sites``) and nothing is
unmasked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fedbone.errors import Problem
from fedbone.federation.secure_aggregation.crypto import (
    CIPHERTEXT_BYTES,
    KEY_BYTES,
    MASK,
    agreed_key,
    mask_stream,
)
from fedbone.federation.secure_aggregation.errors import SecureAggregationError
from fedbone.federation.secure_aggregation.protocol import (
    Inbox,
    PeerKeys,
    PublicKeys,
    UnmaskRequest,
    UnmaskShares,
    check_round_id,
    minimum_threshold,
)
from fedbone.federation.secure_aggregation.shamir import reconstruct_secret

__all__ = ["CentreRound"]


def _too_few(stage: str, have: int, threshold: int) -> SecureAggregationError:
    return SecureAggregationError(
        "secure aggregation round",
        [
            Problem(
                "too-few-sites",
                f"{have} site(s) completed {stage}, fewer than the threshold "
                f"{threshold}; the round cannot be unmasked and is dropped",
            )
        ],
    )


def _bad_reply(node: int, message: str) -> SecureAggregationError:
    return SecureAggregationError(
        "secure aggregation reply", [Problem("bad-reply", message, f"node {node}")]
    )


@dataclass
class CentreRound:
    """The centre's state of one round.

    Parameters
    ----------
    round_id
        The round's id (a short lowercase token, sent with every stage).
    length
        Elements of every masked input (the update plus the weight).
    min_sites
        The fewest sites the study accepts; the threshold is at least this
        and at least a strict majority of the sites that sent keys.
    """

    round_id: str
    length: int
    min_sites: int = 1
    keys: dict[int, PublicKeys] = field(default_factory=dict)
    peers: PeerKeys | None = None
    threshold: int = 0
    inboxes: dict[int, dict[int, bytes]] = field(default_factory=dict)
    masked: dict[int, np.ndarray] = field(default_factory=dict)
    request: UnmaskRequest | None = None
    revealed: dict[int, UnmaskShares] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_round_id(self.round_id)

    def add_keys(self, node: int, keys: PublicKeys) -> None:
        """Stage 1: keep a site's public keys.

        Raises
        ------
        SecureAggregationError
            ``bad-reply`` for keys of the wrong size.
        """
        if len(keys.cipher) != KEY_BYTES or len(keys.mask) != KEY_BYTES:
            raise _bad_reply(node, f"public keys are {KEY_BYTES} bytes")
        self.keys[node] = keys

    def peer_keys(self) -> PeerKeys:
        """Close stage 1: every site's keys (``U1``), and fix the threshold."""
        ids = tuple(sorted(self.keys))
        self.threshold = max(minimum_threshold(len(ids)), self.min_sites)
        if len(ids) < self.threshold:
            raise _too_few("stage 1 (keys)", len(ids), self.threshold)
        self.peers = PeerKeys(ids, tuple(self.keys[i] for i in ids))
        self.inboxes = {node: {} for node in ids}
        return self.peers

    def add_shares(self, node: int, ciphertexts: Sequence[bytes]) -> None:
        """Stage 2: route a site's encrypted shares, one per other site of ``U1``.

        Raises
        ------
        SecureAggregationError
            ``bad-reply`` for a site not in ``U1`` or the wrong number or
            size of ciphertexts.
        """
        peers = self._peers()
        if node not in peers.node_ids:
            raise _bad_reply(node, "sent shares without keys")
        receivers = [peer for peer in peers.node_ids if peer != node]
        if len(ciphertexts) != len(receivers) or any(
            len(c) != CIPHERTEXT_BYTES for c in ciphertexts
        ):
            raise _bad_reply(
                node,
                f"expected {len(receivers)} ciphertexts of {CIPHERTEXT_BYTES} bytes",
            )
        for receiver, ciphertext in zip(receivers, ciphertexts, strict=True):
            self.inboxes[receiver][node] = ciphertext

    @property
    def sharers(self) -> list[int]:
        """The sites whose shares arrived (``U2``), ascending."""
        if self.peers is None:
            return []
        sent = {s for inbox in self.inboxes.values() for s in inbox}
        return [node for node in self.peers.node_ids if node in sent]

    def inbox_for(self, node: int) -> Inbox:
        """Stage 3 request: the shares the other sites of ``U2`` sent ``node``."""
        sharers = self.sharers
        if len(sharers) < self.threshold:
            raise _too_few("stage 2 (shares)", len(sharers), self.threshold)
        senders = tuple(s for s in sharers if s != node)
        return Inbox(senders, tuple(self.inboxes[node][s] for s in senders))

    def add_masked(self, node: int, vector: np.ndarray) -> None:
        """Stage 3: keep a site's masked input.

        Raises
        ------
        SecureAggregationError
            ``bad-reply`` for a site not in ``U2`` or an input that is not
            ``length`` ``uint64`` values.
        """
        if node not in self.sharers:
            raise _bad_reply(node, "sent a masked input without sharing its secrets")
        vector = np.asarray(vector)
        if vector.dtype != np.uint64 or vector.shape != (self.length,):
            raise _bad_reply(
                node,
                f"a masked input is ({self.length},) uint64, got "
                f"{vector.shape} {vector.dtype}",
            )
        self.masked[node] = vector

    def unmask_request(self) -> UnmaskRequest:
        """Close stage 3: survivors (``U3``) and dropped (``U2`` less ``U3``)."""
        survivors = tuple(sorted(self.masked))
        if len(survivors) < self.threshold:
            raise _too_few("stage 3 (masked input)", len(survivors), self.threshold)
        dropped = tuple(n for n in self.sharers if n not in self.masked)
        self.request = UnmaskRequest(survivors, dropped)
        return self.request

    def add_unmask(self, node: int, shares: UnmaskShares) -> None:
        """Stage 4: keep a survivor's shares.

        Raises
        ------
        SecureAggregationError
            ``bad-reply`` from a site that is not a survivor, or with the
            wrong number of shares.
        """
        request = self._request()
        if node not in request.survivors:
            raise _bad_reply(node, "only survivors reveal shares")
        if len(shares.self_mask_shares) != len(request.survivors) or len(
            shares.mask_key_shares
        ) != len(request.dropped):
            raise _bad_reply(node, "one share per survivor and per dropped site")
        self.revealed[node] = shares

    def unmasked_sum(self) -> np.ndarray:
        """Close stage 4: return the sum of the survivors' inputs (``uint64``).

        Raises
        ------
        SecureAggregationError
            ``too-few-sites`` with fewer than ``threshold`` unmask replies;
            ``bad-share`` if the shares do not rebuild a secret.
        """
        request, peers = self._request(), self._peers()
        if len(self.revealed) < self.threshold:
            raise _too_few("stage 4 (unmask)", len(self.revealed), self.threshold)
        total = np.zeros(self.length, dtype=np.uint64)
        for node in request.survivors:
            total += self.masked[node]
        for k in range(len(request.survivors)):
            seed = self._rebuild(k, self_mask=True)
            total -= mask_stream(seed, self.length)
        for k, dropped in enumerate(request.dropped):
            private = self._rebuild(k, self_mask=False)
            for node in request.survivors:
                public = peers.keys[peers.node_ids.index(node)].mask
                seed = agreed_key(private, public, MASK, self.round_id)
                stream = mask_stream(seed, self.length)
                # the survivor added its mask with the dropped site when its
                # id is the smaller one, and subtracted it otherwise
                if node < dropped:
                    total -= stream
                else:
                    total += stream
        return total

    def _rebuild(self, k: int, *, self_mask: bool) -> bytes:
        """Rebuild the ``k``-th survivor's seed or dropped site's mask key."""
        peers = self._peers()
        shares = {
            peers.position(holder): (
                revealed.self_mask_shares if self_mask else revealed.mask_key_shares
            )[k]
            for holder, revealed in self.revealed.items()
        }
        return reconstruct_secret(shares, self.threshold)

    def _peers(self) -> PeerKeys:
        if self.peers is None:
            raise SecureAggregationError(
                "secure aggregation round",
                [Problem("out-of-order", "stage 1 is not closed (peer_keys)")],
            )
        return self.peers

    def _request(self) -> UnmaskRequest:
        if self.request is None:
            raise SecureAggregationError(
                "secure aggregation round",
                [Problem("out-of-order", "stage 3 is not closed (unmask_request)")],
            )
        return self.request
