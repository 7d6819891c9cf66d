"""A site's side of one secure aggregation round: a four-stage state machine.

:class:`SiteRound` holds the round's secrets between stages (fresh key pairs
and self-mask seed every round, so nothing revealed in one round unmasks
another) and refuses any request out of order, from another round, or that
would let the centre learn more than the sum:

- a threshold below a strict majority of the sites (:func:`minimum_threshold`);
- a peer list without this site's own keys, with repeated nodes, or with
  no other site;
- fewer than ``t`` sites left at any stage;
- an unmask request naming a peer both as survivor and dropped, naming this
  site as dropped, or not covering exactly the sites it masked against;
- a second unmask request in the same round (its secrets are gone).

It serialises to JSON (:meth:`to_json`) so a ClientApp can keep it in its
Flower context between messages.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from fedbone.errors import Problem
from fedbone.federation.secure_aggregation.crypto import (
    CIPHER,
    MASK,
    agreed_key,
    decrypt_shares,
    encrypt_shares,
    mask_stream,
    new_key_pair,
    new_seed,
    public_key_of,
)
from fedbone.federation.secure_aggregation.errors import SecureAggregationError
from fedbone.federation.secure_aggregation.protocol import (
    Inbox,
    PeerKeys,
    PublicKeys,
    UnmaskRequest,
    UnmaskShares,
    check_round_id,
    check_threshold,
)
from fedbone.federation.secure_aggregation.shamir import split_secret

__all__ = ["SiteRound", "Stage"]


class Stage:
    """How far a site's round has gone."""

    KEYS_SENT = 1
    SHARES_SENT = 2
    INPUT_SENT = 3


def _refuse(code: str, message: str, where: str = "") -> SecureAggregationError:
    return SecureAggregationError(
        "secure aggregation request", [Problem(code, message, where)]
    )


@dataclass(frozen=True)
class SiteRound:
    """One site's state in one round (all secrets as hex in JSON).

    Parameters
    ----------
    round_id
        The round, named by the centre.
    node_id
        This site's node id.
    cipher_private, mask_private
        The round's X25519 private keys.
    stage
        The last stage this site answered (:class:`Stage`).
    """

    round_id: str
    node_id: int
    cipher_private: bytes
    mask_private: bytes
    stage: int = Stage.KEYS_SENT
    threshold: int = 0
    self_mask_seed: bytes = b""
    peer_ids: tuple[int, ...] = ()
    cipher_publics: tuple[bytes, ...] = ()
    mask_publics: tuple[bytes, ...] = ()
    own_shares: tuple[int, int] = (0, 0)
    held: dict[int, tuple[int, int]] = field(default_factory=dict)
    """Per sender (this site included): its share of the sender's self-mask
    seed and of the sender's mask private key."""

    @classmethod
    def start(cls, round_id: str, node_id: int) -> tuple[SiteRound, PublicKeys]:
        """Stage 1: make the round's key pairs; return the state and public keys.

        Parameters
        ----------
        round_id
            The round the centre named (a short lowercase token).
        node_id
            This site's node id.
        """
        cipher, mask = new_key_pair(), new_key_pair()
        state = cls(check_round_id(round_id), node_id, cipher.private, mask.private)
        return state, PublicKeys(cipher.public, mask.public)

    def _expect(self, round_id: str, stage: int) -> None:
        if round_id != self.round_id:
            raise _refuse(
                "wrong-round",
                f"this site is in round {self.round_id!r}, not {round_id!r}",
            )
        if self.stage != stage:
            raise _refuse(
                "out-of-order",
                f"this site answered stage {self.stage}; stage {stage + 1} "
                "cannot come now",
            )

    def share(
        self, round_id: str, peers: PeerKeys, threshold: int
    ) -> tuple[SiteRound, list[bytes]]:
        """Stage 2: split this round's secrets and encrypt a pair per peer.

        Parameters
        ----------
        round_id
            The round (must be this state's).
        peers
            Every site that sent keys (``U1``), this one included.
        threshold
            ``t``: how many shares rebuild a secret.

        Returns
        -------
        tuple
            The new state and one ciphertext per peer other than this site,
            in ``peers`` order.
        """
        self._expect(round_id, Stage.KEYS_SENT)
        ids = peers.node_ids
        if list(ids) != sorted(set(ids)):
            raise _refuse("bad-peers", "peers must be distinct and in ascending order")
        if self.node_id not in ids:
            raise _refuse("bad-peers", "the peer list lacks this site")
        if len(ids) < 2:
            # alone, its "sum" would be its own input
            raise _refuse("too-few-sites", "a secure round needs at least two sites")
        mine = peers.keys[ids.index(self.node_id)]
        own = PublicKeys(
            public_key_of(self.cipher_private), public_key_of(self.mask_private)
        )
        if mine != own:
            raise _refuse("bad-peers", "the peer list holds other keys for this site")
        check_threshold(threshold, len(ids))
        seed = new_seed()
        seed_shares = split_secret(seed, threshold, len(ids))
        key_shares = split_secret(self.mask_private, threshold, len(ids))
        rows = []
        own_shares = (0, 0)
        for k, (peer, keys) in enumerate(zip(ids, peers.keys, strict=True)):
            pair = (seed_shares[k], key_shares[k])
            if peer == self.node_id:
                own_shares = pair
                continue
            key = agreed_key(self.cipher_private, keys.cipher, CIPHER, round_id)
            rows.append(encrypt_shares(key, round_id, self.node_id, peer, pair))
        state = replace(
            self,
            stage=Stage.SHARES_SENT,
            threshold=threshold,
            self_mask_seed=seed,
            peer_ids=ids,
            cipher_publics=tuple(k.cipher for k in peers.keys),
            mask_publics=tuple(k.mask for k in peers.keys),
            own_shares=own_shares,
        )
        return state, rows

    def open_inbox(self, round_id: str, inbox: Inbox) -> SiteRound:
        """Stage 3, first half: decrypt the shares the peers sent this site.

        Done before training, so a bad inbox is refused before any work.

        Parameters
        ----------
        round_id
            The round (must be this state's).
        inbox
            The shares addressed to this site (``U2`` less this site).
        """
        self._expect(round_id, Stage.SHARES_SENT)
        senders = inbox.senders
        if len(set(senders)) != len(senders) or self.node_id in senders:
            raise _refuse("bad-inbox", "senders must be distinct peers")
        unknown = [s for s in senders if s not in self.peer_ids]
        if unknown:
            raise _refuse("bad-inbox", f"{len(unknown)} sender(s) sent no keys")
        if len(senders) + 1 < self.threshold:
            raise _refuse(
                "too-few-sites",
                f"{len(senders) + 1} sites shared their secrets; the threshold "
                f"is {self.threshold}",
            )
        held = {self.node_id: self.own_shares}
        for sender, ciphertext in zip(senders, inbox.ciphertexts, strict=True):
            public = self.cipher_publics[self.peer_ids.index(sender)]
            key = agreed_key(self.cipher_private, public, CIPHER, round_id)
            held[sender] = decrypt_shares(
                key, round_id, sender, self.node_id, ciphertext
            )
        return replace(self, held=held)

    def mask(self, round_id: str, encoded: np.ndarray) -> tuple[SiteRound, np.ndarray]:
        """Stage 3, second half: return the masked input.

        ``y = x + PRG(b) + sum_{j > i} PRG(s_ij) - sum_{j < i} PRG(s_ij)``
        modulo 2^64, ``j`` over the sites whose shares this site opened.

        Parameters
        ----------
        round_id
            The round (must be this state's).
        encoded
            The site's input as ``uint64`` (:func:`encode_input`).
        """
        self._expect(round_id, Stage.SHARES_SENT)
        if not self.held:
            raise _refuse("out-of-order", "open the inbox before masking")
        encoded = np.asarray(encoded, dtype=np.uint64)
        masked = encoded + mask_stream(self.self_mask_seed, encoded.size)
        for peer in self.held:
            if peer == self.node_id:
                continue
            stream = mask_stream(self.pairwise_seed(peer), encoded.size)
            masked = masked + stream if self.node_id < peer else masked - stream
        return replace(self, stage=Stage.INPUT_SENT), masked

    def pairwise_seed(self, peer: int) -> bytes:
        """Return the seed of this site's mask with ``peer`` (both sides agree)."""
        public = self.mask_publics[self.peer_ids.index(peer)]
        return agreed_key(self.mask_private, public, MASK, self.round_id)

    def reveal(self, round_id: str, request: UnmaskRequest) -> UnmaskShares:
        """Stage 4: the shares that remove the survivors' and dropped sites' masks.

        The round ends here: the caller must discard this state, so a second
        unmask request finds no round to answer.

        Parameters
        ----------
        round_id
            The round (must be this state's).
        request
            Survivors (``U3``) and dropped sites (``U2`` less ``U3``).
        """
        self._expect(round_id, Stage.INPUT_SENT)
        survivors, dropped = set(request.survivors), set(request.dropped)
        problems = []
        if survivors & dropped:
            problems.append(
                Problem(
                    "both-shares",
                    f"{len(survivors & dropped)} site(s) named both survivor and "
                    "dropped: revealing both of a site's secrets would unmask it",
                )
            )
        if self.node_id not in survivors:
            problems.append(
                Problem("not-a-survivor", "this site sent its input; it is a survivor")
            )
        repeated = len(survivors) != len(request.survivors) or len(dropped) != len(
            request.dropped
        )
        if repeated or survivors | dropped != set(self.held):
            problems.append(
                Problem(
                    "wrong-sites",
                    "survivors and dropped must be exactly the sites this site "
                    "masked against, each once",
                )
            )
        if len(survivors) < self.threshold:
            problems.append(
                Problem(
                    "too-few-sites",
                    f"{len(survivors)} survivors; the threshold is {self.threshold}",
                )
            )
        SecureAggregationError.raise_if_any("unmask request", problems)
        return UnmaskShares(
            tuple(self.held[node][0] for node in request.survivors),
            tuple(self.held[node][1] for node in request.dropped),
        )

    def to_json(self) -> str:
        """Serialise (secrets as hex) for the site's Flower context."""
        data: dict[str, Any] = asdict(self)
        for key in ("cipher_private", "mask_private", "self_mask_seed"):
            data[key] = data[key].hex()
        for key in ("cipher_publics", "mask_publics"):
            data[key] = [value.hex() for value in data[key]]
        data["held"] = [[node, a, b] for node, (a, b) in self.held.items()]
        data["own_shares"] = list(self.own_shares)
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> SiteRound:
        """Inverse of :meth:`to_json`."""
        data = json.loads(text)
        for key in ("cipher_private", "mask_private", "self_mask_seed"):
            data[key] = bytes.fromhex(data[key])
        for key in ("cipher_publics", "mask_publics"):
            data[key] = tuple(bytes.fromhex(value) for value in data[key])
        data["peer_ids"] = tuple(data["peer_ids"])
        data["own_shares"] = tuple(data["own_shares"])
        data["held"] = {node: (a, b) for node, a, b in data["held"]}
        return cls(**data)
