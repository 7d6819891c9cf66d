"""SecureFedAvg over a scripted grid whose sites run the real site protocol.

Each node answers with :mod:`fedbone.federation.secagg_site` and its own Flower
context; its "training" adds a node-specific step to the received model. The
strategy must end with FedAvg over the sites that sent their inputs, whoever
dropped (and at whatever stage), or fail the round when too few are left.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import cast

import numpy as np
from federation_messages import context
from flwr.app import Context, Error, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from phase_grid import ScriptedGrid
from server_messages import reply

from fedbone.classifier.rounds import RoundResult
from fedbone.config.study import TrainingSettings
from fedbone.federation.records import arrays_to_record, record_to_arrays
from fedbone.federation.requests import model_arrays
from fedbone.federation.secagg_messages import (
    inbox_from,
    masked_record,
    round_id_from,
    site_round_from,
    site_round_to,
)
from fedbone.federation.secagg_site import (
    answer_keys,
    answer_masked_round,
    answer_shares,
    answer_unmask,
)
from fedbone.federation.secure_aggregation import FixedPoint, encode_input
from server.strategies import SecureFedAvg, build_strategy

NODES = (1, 2, 3, 4)
WEIGHTS = {1: 30, 2: 10, 3: 20, 4: 40}
START = {
    "conv.weight": np.zeros((2, 1, 3, 3), dtype=np.float32),
    "bn.running_mean": np.zeros((2,), dtype=np.float32),
    "bn.num_batches_tracked": np.array(0, dtype=np.int64),
}
MASKED = 18 + 2 + 1  # conv.weight, bn.running_mean and the weight
REFUSED = Error(code=0, reason="the site could not complete 'train.secagg'")


def _trained(node: int, received: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {
        key: value + np.float32(0.1 * node) if value.dtype.kind == "f" else value + 5
        for key, value in received.items()
    }


def _poisoned_input(message: Message, node_context: Context) -> RecordDict:
    """A site whose own code skips the clip: every element 1000 x its weight."""
    round_id = round_id_from(message)
    state = site_round_from(node_context)
    assert state is not None
    state = state.open_inbox(round_id, inbox_from(message))
    node = message.metadata.dst_node_id
    huge = np.full(MASKED - 1, 1000.0 * WEIGHTS[node])
    encoded = encode_input(huge, WEIGHTS[node], FixedPoint(24, 1e6))
    state, masked = state.mask(round_id, encoded)
    site_round_to(node_context, state)
    return RecordDict({"secagg-masked": masked_record(masked)})


def _federation(
    drop: Mapping[str, Collection[int]] | None = None,
    poison: Collection[int] = (),
) -> ScriptedGrid:
    """Four sites; ``drop`` maps a kind to the nodes that fail it."""
    contexts = {node: context() for node in NODES}
    failing = {kind: set(nodes) for kind, nodes in (drop or {}).items()}

    def site(answer: object, kind: str) -> object:
        def respond(message: Message) -> RecordDict | Error:
            node = message.metadata.dst_node_id
            if node in failing.get(kind, ()):
                return REFUSED
            return answer(message, contexts[node])  # type: ignore[operator]

        return respond

    def train(message: Message, node_context: Context) -> RecordDict:
        node = message.metadata.dst_node_id
        if node in poison:
            return _poisoned_input(message, node_context)

        def local(received: Mapping[str, np.ndarray]) -> RoundResult:
            return RoundResult(
                _trained(node, received), {"num-examples": WEIGHTS[node]}, None
            )

        return answer_masked_round(message, node_context, model_arrays(message), local)

    def evaluate(message: Message) -> RecordDict:
        return RecordDict(
            {"metrics": MetricRecord({"num-examples": 1, "val-loss": 0.5})}
        )

    return ScriptedGrid(
        {
            "query.secagg_keys": site(answer_keys, "query.secagg_keys"),
            "query.secagg_shares": site(answer_shares, "query.secagg_shares"),
            "train.secagg": site(train, "train.secagg"),
            "query.secagg_unmask": site(answer_unmask, "query.secagg_unmask"),
            "evaluate": evaluate,
        },
        NODES,
    )


def _strategy(max_examples: Mapping[int, int] | None = None) -> SecureFedAvg:
    settings = TrainingSettings(
        secure_aggregation=True, secure_aggregation_clip=1.0, min_train_sites=2
    )
    strategy = build_strategy(
        settings, len(NODES), max_examples=max_examples or {n: 50 for n in NODES}
    )
    assert isinstance(strategy, SecureFedAvg)
    return strategy


def _fedavg(nodes: Collection[int], received: Mapping[str, np.ndarray]) -> dict:
    arrays, _ = FedAvg().aggregate_train(
        1, [reply(n, _trained(n, received), WEIGHTS[n]) for n in nodes]
    )
    return record_to_arrays(arrays)  # type: ignore[arg-type]


def _start(strategy: SecureFedAvg, grid: ScriptedGrid, rounds: int = 1) -> dict:
    result = strategy.start(
        grid=cast(Grid, grid),
        initial_arrays=arrays_to_record(START),
        num_rounds=rounds,
    )
    return record_to_arrays(result.arrays)


def _close(secure: Mapping[str, np.ndarray], plain: Mapping[str, np.ndarray]) -> None:
    for key in ("conv.weight", "bn.running_mean"):
        np.testing.assert_allclose(secure[key], plain[key], rtol=0, atol=1e-6)


def test_a_site_failing_its_masked_round_leaves_fedavg_over_the_others() -> None:
    grid = _federation(drop={"train.secagg": [3]})
    strategy = _strategy()

    secure = _start(strategy, grid)

    _close(secure, _fedavg([1, 2, 4], START))
    assert secure["bn.num_batches_tracked"] == 0  # counters keep the global value
    [report] = strategy.reports
    assert report.dropped == [3] and report.failure is None
    assert report.stages["unmask"] == [1, 2, 4]
    assert grid.kinds()[::4][:4] == [
        "query.secagg_keys",
        "query.secagg_shares",
        "train.secagg",
        "query.secagg_unmask",
    ]


def test_a_site_silent_from_the_start_is_simply_not_in_the_round() -> None:
    grid = _federation(drop={"query.secagg_keys": [2]})
    strategy = _strategy()

    secure = _start(strategy, grid)

    _close(secure, _fedavg([1, 3, 4], START))
    assert 2 not in grid.sent_to("train.secagg")
    assert strategy.reports[0].dropped == []


def test_every_round_has_its_own_id_and_training_goes_on_from_the_last() -> None:
    grid = _federation(drop={"train.secagg": [3]})
    strategy = _strategy()

    secure = _start(strategy, grid, rounds=2)

    _close(secure, _fedavg([1, 2, 4], _fedavg([1, 2, 4], START)))
    ids = {
        m.content.config_records["config"]["secagg-round"]
        for m in grid.sent
        if m.metadata.message_type.startswith(("query.secagg", "train.secagg"))
    }
    assert len(ids) == 2


def test_too_few_sites_left_fail_the_round_and_keep_the_model() -> None:
    grid = _federation(drop={"train.secagg": [3, 4]})
    strategy = _strategy()

    secure = _start(strategy, grid)

    assert secure == {}  # no round produced a model
    [report] = strategy.reports
    assert report.failure is not None and "too-few-sites" in report.failure
    assert "query.secagg_unmask" not in grid.kinds()


def test_an_unmasked_weight_beyond_the_census_bounds_fails_the_round() -> None:
    # every site encodes within the round's largest bound (50), but together
    # they claim more examples than their census bounds add up to
    strategy = _strategy(max_examples={1: 30, 2: 5, 3: 5, 4: 50})

    secure = _start(strategy, _federation())

    assert secure == {}
    assert "malformed-sum" in str(strategy.reports[0].failure)


def test_a_site_skipping_the_clip_fails_the_whole_round() -> None:
    strategy = _strategy()

    secure = _start(strategy, _federation(poison=[4]))

    assert secure == {}  # no one can tell which site it was: nothing is kept
    assert "malformed-sum" in str(strategy.reports[0].failure)


def test_a_single_site_model_trains_without_secure_aggregation() -> None:
    settings = TrainingSettings(secure_aggregation=True)

    assert type(build_strategy(settings, 1)) is FedAvg
