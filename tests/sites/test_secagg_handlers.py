"""The ClientApp's secure aggregation handlers, one real site among scripted peers.

Site 42 is a real site on a tiny cache, answering through its handlers; its
two peers (7 and 99) and the centre are played here with the library. Every
reply of the real site must pass its egress guard, and the centre must end
with the sum of the three sites' weights and updates, never one of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from federation_messages import context, request
from flwr.app import ConfigRecord, Context, Message, RecordDict
from tiny_caches import build_toy_cache

from fedbone.federation.egress.guard import EgressGuard
from fedbone.federation.records import array_signature, arrays_to_record
from fedbone.federation.secagg_messages import (
    MaskSettings,
    inbox_record,
    keys_from,
    masked_from,
    peers_record,
    shares_from,
    unmask_from,
    unmask_request_record,
)
from fedbone.federation.secure_aggregation import (
    CentreRound,
    SecureAggregationError,
    SiteRound,
    apply_average,
    decode_sum,
    encode_input,
    masked_size,
    weighted_update,
)
from fedbone.models import Architecture, ClassifierSpec, Norm, build_classifier
from fedbone.models.parameters import state_to_arrays
from fedbone.privacy.errors import PrivacyError
from sites import secure_aggregation as handlers

ROUND = "r1-handlers"
SITE = 42
PEER_WEIGHTS = {7: 5, 99: 9}
SETTINGS = MaskSettings(clip=10.0, scale_bits=24, max_weight=100)
STUDY: dict[str, Any] = {
    "phase": "train",
    "task": "bm",
    "run-name": "study-1",
    "architecture": "small-cnn",
    "norm": "group",
    "in-channels": 1,
    "local-epochs": 1,
    "batch-size": 8,
    "lr": 0.01,
    "weight-decay": 0.0,
    "sampling": "balanced",
    "augment": False,
    "seed": 3,
    "secagg-round": ROUND,
}


def _model() -> dict[str, np.ndarray]:
    torch.manual_seed(0)
    spec = ClassifierSpec(architecture=Architecture.SMALL_CNN, norm=Norm.GROUP)
    return state_to_arrays(build_classifier(spec))


MODEL = _model()


def _site(folder: Path, cache_dir: Path, budget: float | None = None) -> Context:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.csv").write_text("scan_id\n")
    privacy = "{small_cell_threshold: 1}"
    if budget is not None:
        privacy = f"{{small_cell_threshold: 1, budget: {{epsilon: {budget}}}}}"
    path = folder / "site.yaml"
    path.write_text(
        "site: {id: vienna}\n"
        f"data: {{manifest: manifest.csv, cache_dir: {cache_dir}}}\n"
        f"privacy: {privacy}\n"
        "egress_log: logs/egress.jsonl\n"
        "device: cpu\n"
    )
    return context(**{"site-config": str(path)})


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_toy_cache(tmp_path_factory.mktemp("cache"), count=24).cache_dir


def _message(
    kind: str, records: dict[str, Any] | None = None, **config: Any
) -> Message:
    values = {**STUDY, **config}
    return request(
        kind, RecordDict({"config": ConfigRecord(values), **(records or {})})
    )


def _answer(handler: Any, message: Message, node: Context) -> RecordDict:
    """Run a handler; its reply must pass the site's egress guard unchanged."""
    content = handler(message, node).content
    EgressGuard().screen(message, content)
    return content


@dataclass
class _Federation:
    """The centre and the two scripted peers around the real site."""

    centre: CentreRound = field(
        default_factory=lambda: CentreRound(
            ROUND, masked_size(array_signature(arrays_to_record(MODEL))) + 1
        )
    )
    peers: dict[int, SiteRound] = field(default_factory=dict)

    def share_keys(self, node: Context) -> None:
        """Stages 1 and 2 for the site and its peers."""
        keys = _answer(handlers.secagg_keys, _message("query.secagg_keys"), node)
        self.centre.add_keys(SITE, keys_from(keys))
        for peer in PEER_WEIGHTS:
            self.peers[peer], peer_keys = SiteRound.start(ROUND, peer)
            self.centre.add_keys(peer, peer_keys)
        listed = self.centre.peer_keys()
        message = _message(
            "query.secagg_shares",
            {"secagg-peers": peers_record(listed)},
            **{"secagg-threshold": self.centre.threshold},
        )
        shares = _answer(handlers.secagg_shares, message, node)
        self.centre.add_shares(SITE, shares_from(shares))
        for peer in PEER_WEIGHTS:
            self.peers[peer], sealed = self.peers[peer].share(
                ROUND, listed, self.centre.threshold
            )
            self.centre.add_shares(peer, sealed)

    def train_message(self) -> Message:
        records = {
            "arrays": arrays_to_record(MODEL),
            "secagg-inbox": inbox_record(self.centre.inbox_for(SITE)),
        }
        return _message("train.secagg", records, **SETTINGS.to_config())

    def peers_send_inputs(self) -> None:
        for peer, weight in PEER_WEIGHTS.items():
            state = self.peers[peer].open_inbox(ROUND, self.centre.inbox_for(peer))
            trained = {
                k: v + 0.01 if v.dtype.kind == "f" else v for k, v in MODEL.items()
            }
            update = weighted_update(trained, MODEL, weight, SETTINGS.clip)
            encoded = encode_input(update, weight, SETTINGS.codec())
            self.peers[peer], masked = state.mask(ROUND, encoded)
            self.centre.add_masked(peer, masked)


@pytest.fixture
def federation(
    tmp_path: Path, cache_dir: Path
) -> Iterator[tuple[_Federation, Context]]:
    yield _Federation(), _site(tmp_path / "site", cache_dir)


def test_a_site_trains_and_unmasks_through_its_handlers(
    federation: tuple[_Federation, Context],
) -> None:
    fed, node = federation
    fed.share_keys(node)

    masked = _answer(handlers.secagg_train, fed.train_message(), node)
    fed.centre.add_masked(SITE, masked_from(masked))
    fed.peers_send_inputs()
    request_ = fed.centre.unmask_request()
    unmask = _message(
        "query.secagg_unmask", {"secagg-survivors": unmask_request_record(request_)}
    )
    fed.centre.add_unmask(
        SITE, unmask_from(_answer(handlers.secagg_unmask, unmask, node))
    )
    for peer in PEER_WEIGHTS:
        fed.centre.add_unmask(peer, fed.peers[peer].reveal(ROUND, request_))
    summed, weight = decode_sum(fed.centre.unmasked_sum(), SETTINGS.codec())
    average = apply_average(MODEL, summed, weight)

    assert weight > sum(PEER_WEIGHTS.values())  # the site's own scans count too
    assert "num-examples" not in masked.metric_records["metrics"]
    assert set(average) == set(MODEL)
    assert all(np.isfinite(v).all() for v in average.values())
    with pytest.raises(SecureAggregationError) as again:
        handlers.secagg_unmask(unmask, node)  # the round's secrets are gone
    assert again.value.codes == ["no-round"]


def test_a_site_refusing_to_train_drops_out_after_sharing_its_keys(
    tmp_path: Path, cache_dir: Path
) -> None:
    fed, node = _Federation(), _site(tmp_path / "private", cache_dir, budget=50.0)
    fed.share_keys(node)

    with pytest.raises(PrivacyError) as caught:
        handlers.secagg_train(fed.train_message(), node)

    assert caught.value.codes == ["dp-required"]
    assert fed.centre.sharers == sorted([SITE, *PEER_WEIGHTS])


def test_a_request_of_another_round_is_refused_before_training(
    federation: tuple[_Federation, Context],
) -> None:
    fed, node = federation
    fed.share_keys(node)
    message = fed.train_message()
    message.content.config_records["config"]["secagg-round"] = "r9-other"

    with pytest.raises(SecureAggregationError) as caught:
        handlers.secagg_train(message, node)

    assert caught.value.codes == ["wrong-round"]
