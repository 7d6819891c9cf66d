"""The four-stage protocol with four sites in one process (Bonawitz et al. 2017)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pytest
from federation_messages import model_state
from flwr.serverapp.strategy import FedAvg
from server_messages import reply

from fedbone.federation.records import record_to_arrays
from fedbone.federation.secagg_messages import MaskSettings
from fedbone.federation.secure_aggregation import (
    CentreRound,
    Inbox,
    SecureAggregationError,
    SiteRound,
    UnmaskRequest,
    apply_average,
    decode_sum,
    encode_input,
    masked_size,
    weighted_update,
)
from fedbone.federation.secure_aggregation.crypto import mask_stream

ROUND = "r1-test"
NODES = (11, 22, 33, 44)
WEIGHTS = {11: 40, 22: 7, 33: 25, 44: 13}
SETTINGS = MaskSettings(clip=1.0, scale_bits=24, max_weight=40)
RECEIVED = model_state(0)
LENGTH = masked_size({k: (v.shape, str(v.dtype)) for k, v in RECEIVED.items()}) + 1


def _trained(node: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(node)
    return {
        key: (value + rng.normal(scale=0.05, size=value.shape)).astype(value.dtype)
        if value.dtype.kind == "f"
        else value + node
        for key, value in RECEIVED.items()
    }


def _share_keys(
    nodes: Iterable[int] = NODES, round_id: str = ROUND
) -> tuple[CentreRound, dict[int, SiteRound]]:
    """Stages 1 and 2 for ``nodes``."""
    centre = CentreRound(round_id, LENGTH)
    states = {}
    for node in nodes:
        states[node], keys = SiteRound.start(round_id, node)
        centre.add_keys(node, keys)
    peers = centre.peer_keys()
    for node in states:
        states[node], sealed = states[node].share(round_id, peers, centre.threshold)
        centre.add_shares(node, sealed)
    return centre, states


def _send_input(centre: CentreRound, states: dict[int, SiteRound], node: int) -> None:
    """Stage 3 at ``node``: open the inbox, weigh, encode and mask its update."""
    state = states[node].open_inbox(ROUND, centre.inbox_for(node))
    update = weighted_update(_trained(node), RECEIVED, WEIGHTS[node], SETTINGS.clip)
    encoded = encode_input(update, WEIGHTS[node], SETTINGS.codec())
    states[node], masked = state.mask(ROUND, encoded)
    centre.add_masked(node, masked)


def _unmask(centre: CentreRound, states: dict[int, SiteRound]) -> np.ndarray:
    request = centre.unmask_request()
    for node in request.survivors:
        centre.add_unmask(node, states[node].reveal(ROUND, request))
    return centre.unmasked_sum()


def test_one_site_dropping_after_sharing_keys_gives_fedavg_over_the_others() -> None:
    centre, states = _share_keys()
    survivors = [11, 22, 44]  # 33 shared its keys, then never sent its input

    for node in survivors:
        _send_input(centre, states, node)
    summed, weight = decode_sum(_unmask(centre, states), SETTINGS.codec())
    secure = apply_average(RECEIVED, summed, weight)
    plain, _ = FedAvg().aggregate_train(
        1, [reply(node, _trained(node), WEIGHTS[node]) for node in survivors]
    )

    assert centre.request == UnmaskRequest((11, 22, 44), (33,))
    assert weight == sum(WEIGHTS[n] for n in survivors)
    expected = record_to_arrays(plain)  # type: ignore[arg-type]
    for key in ("conv.weight", "conv.bias"):
        assert secure[key].dtype == RECEIVED[key].dtype
        np.testing.assert_allclose(secure[key], expected[key], rtol=0, atol=1e-6)
    # step counters stay out of the sum: the global value is kept
    assert secure["bn.num_batches_tracked"] == RECEIVED["bn.num_batches_tracked"]


def test_pairwise_masks_cancel_and_no_single_input_is_in_the_clear() -> None:
    centre, states = _share_keys()
    codec = SETTINGS.codec()
    inputs = {
        node: encode_input(
            weighted_update(_trained(node), RECEIVED, WEIGHTS[node], 1.0),
            WEIGHTS[node],
            codec,
        )
        for node in NODES
    }

    for node in NODES:
        _send_input(centre, states, node)
    self_masks = sum(
        (mask_stream(states[n].self_mask_seed, LENGTH) for n in NODES),
        np.zeros(LENGTH, dtype=np.uint64),
    )

    total = sum(centre.masked.values(), np.zeros(LENGTH, dtype=np.uint64))
    assert np.array_equal(total - self_masks, sum(inputs.values()))
    assert all(not np.array_equal(centre.masked[n], inputs[n]) for n in NODES)
    assert np.array_equal(_unmask(centre, states), sum(inputs.values()))


def test_too_many_dropouts_fail_the_round_before_anything_is_unmasked() -> None:
    centre, states = _share_keys()

    _send_input(centre, states, 11)
    _send_input(centre, states, 22)
    with pytest.raises(SecureAggregationError) as caught:
        centre.unmask_request()

    assert caught.value.codes == ["too-few-sites"]
    assert centre.threshold == 3


def test_a_site_never_reveals_both_secrets_of_one_peer() -> None:
    centre, states = _share_keys()
    for node in NODES:
        _send_input(centre, states, node)

    with pytest.raises(SecureAggregationError) as caught:
        # a lying centre: 33 "survived" (its seed) and "dropped" (its mask key)
        states[11].reveal(ROUND, UnmaskRequest((11, 22, 33, 44), (33,)))

    assert "both-shares" in caught.value.codes


def test_a_site_refuses_to_be_called_dropped_after_sending_its_input() -> None:
    centre, states = _share_keys()
    for node in NODES:
        _send_input(centre, states, node)

    with pytest.raises(SecureAggregationError) as caught:
        states[11].reveal(ROUND, UnmaskRequest((22, 33, 44), (11,)))

    assert "not-a-survivor" in caught.value.codes


def test_a_site_refuses_a_threshold_below_a_strict_majority() -> None:
    centre = CentreRound(ROUND, LENGTH)
    states = {}
    for node in NODES:
        states[node], keys = SiteRound.start(ROUND, node)
        centre.add_keys(node, keys)
    peers = centre.peer_keys()

    with pytest.raises(SecureAggregationError) as caught:
        states[11].share(ROUND, peers, threshold=2)

    assert caught.value.codes == ["threshold-too-low"]


def test_shares_sealed_for_one_site_or_round_open_nowhere_else() -> None:
    centre, states = _share_keys()
    other_centre, _ = _share_keys(round_id="r2-test")
    for_22 = centre.inbox_for(22)
    other_round = other_centre.inbox_for(11)

    with pytest.raises(SecureAggregationError) as rerouted:
        states[11].open_inbox(ROUND, Inbox(for_22.senders[1:], for_22.ciphertexts[1:]))
    with pytest.raises(SecureAggregationError) as replayed:
        states[11].open_inbox(
            ROUND, Inbox(other_round.senders, other_round.ciphertexts)
        )

    assert rerouted.value.codes == ["bad-ciphertext"]
    assert replayed.value.codes == ["bad-ciphertext"]


def test_every_round_has_fresh_keys_and_stages_run_in_order() -> None:
    first, _ = SiteRound.start(ROUND, 11)
    second, _ = SiteRound.start(ROUND, 11)

    with pytest.raises(SecureAggregationError) as caught:
        first.mask(ROUND, np.zeros(LENGTH, dtype=np.uint64))

    assert first.mask_private != second.mask_private
    assert first.cipher_private != second.cipher_private
    assert caught.value.codes == ["out-of-order"]


def test_a_site_s_round_survives_its_context_as_json() -> None:
    centre, states = _share_keys()
    state = states[11].open_inbox(ROUND, centre.inbox_for(11))

    assert SiteRound.from_json(state.to_json()) == state


def test_a_site_listed_alone_refuses_to_share() -> None:
    # alone, the "sum" the centre unmasks would be this site's own input
    centre = CentreRound(ROUND, LENGTH)
    state, keys = SiteRound.start(ROUND, 11)
    centre.add_keys(11, keys)

    with pytest.raises(SecureAggregationError) as caught:
        state.share(ROUND, centre.peer_keys(), threshold=1)

    assert caught.value.codes == ["too-few-sites"]
