import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, RecordDict

from fedbone.federation.study_messages import (
    StudyMessageError,
    classifier_spec_from,
    config_int,
    local_state_from,
    local_state_to,
    pairs_from,
    train_spec_from,
)

STUDY = {
    "architecture": "small-cnn",
    "norm": "group",
    "in-channels": 1,
    "local-epochs": 2,
    "batch-size": 8,
    "lr": 0.01,
    "weight-decay": 0.0,
    "sampling": "balanced",
    "augment": False,
    "seed": 3,
    "server-round": 4,
    "proximal-mu": 0.5,
    "pairs": ["federated|local-A", "federated|pooled"],
}


def test_settings_sent_by_the_server_become_typed_specs() -> None:
    config = ConfigRecord(STUDY)

    model = classifier_spec_from(config)
    training = train_spec_from(config)

    assert (model.architecture.value, model.norm.value) == ("small-cnn", "group")
    assert (training.epochs, training.batch_size, training.proximal_mu) == (2, 8, 0.5)
    assert training.seed == 7  # study seed + round: a new draw every round
    assert pairs_from(config) == [("federated", "local-A"), ("federated", "pooled")]


def test_a_missing_or_mistyped_setting_is_a_clear_error() -> None:
    config = ConfigRecord({"batch-size": "eight"})

    with pytest.raises(StudyMessageError) as mistyped:
        config_int(config, "batch-size")
    with pytest.raises(StudyMessageError) as missing:
        config_int(config, "local-epochs")

    assert mistyped.value.codes == ["wrong-type"]
    assert missing.value.codes == ["missing-setting"]


def test_fedbn_layers_are_kept_in_the_sites_own_state() -> None:
    context = Context(
        run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={}
    )
    layers = {"bn.running_mean": np.arange(3, dtype=np.float32)}

    before = local_state_from(context)
    local_state_to(context, layers)
    after = local_state_from(context)

    assert before is None
    assert after is not None
    np.testing.assert_array_equal(after["bn.running_mean"], layers["bn.running_mean"])
