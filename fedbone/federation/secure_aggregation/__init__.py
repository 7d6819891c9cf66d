"""Secure aggregation: the centre learns only the sum of the sites' updates.

Pairwise masking with Shamir-shared seeds after Bonawitz et al. (2017),
"Practical Secure Aggregation for Privacy-Preserving Machine Learning",
tolerant of sites that drop out after sharing their keys. Flower-free: the
messages that carry these stages are in :mod:`fedbone.federation.secagg_messages`.

- :mod:`.fixed_point`: real vectors into Z_{2^64} and back, with the overflow
  bound;
- :mod:`.shamir`: t-of-n sharing of 32-byte secrets;
- :mod:`.crypto`: X25519 + HKDF key agreement, AES-GCM share channel,
  ChaCha20 mask streams;
- :mod:`.vector`: the example-weighted update a site masks, and the average
  the centre makes of the sum;
- :mod:`.site` and :mod:`.centre`: the two sides of one round.

``docs/secure-aggregation.md`` describes the protocol and what it costs.
"""

from fedbone.federation.secure_aggregation.centre import CentreRound
from fedbone.federation.secure_aggregation.crypto import CIPHERTEXT_BYTES, KEY_BYTES
from fedbone.federation.secure_aggregation.errors import (
    FixedPointOverflowError,
    SecureAggregationError,
)
from fedbone.federation.secure_aggregation.fixed_point import FixedPoint
from fedbone.federation.secure_aggregation.protocol import (
    Inbox,
    PeerKeys,
    PublicKeys,
    UnmaskRequest,
    UnmaskShares,
    minimum_threshold,
)
from fedbone.federation.secure_aggregation.shamir import SHARE_BYTES
from fedbone.federation.secure_aggregation.site import SiteRound
from fedbone.federation.secure_aggregation.vector import (
    apply_average,
    decode_sum,
    encode_input,
    masked_size,
    weighted_update,
)

__all__ = [
    "CIPHERTEXT_BYTES",
    "KEY_BYTES",
    "SHARE_BYTES",
    "CentreRound",
    "FixedPoint",
    "FixedPointOverflowError",
    "Inbox",
    "PeerKeys",
    "PublicKeys",
    "SecureAggregationError",
    "SiteRound",
    "UnmaskRequest",
    "UnmaskShares",
    "apply_average",
    "decode_sum",
    "encode_input",
    "masked_size",
    "minimum_threshold",
    "weighted_update",
]
