"""Study settings and models in and out of Flower records (site side).

The server puts the study's model and training settings into each message's
``config`` ConfigRecord (kebab-case keys) and the models into ``model-<name>``
ArrayRecords; these functions turn them back into fedbone's typed objects.
A site's FedBN normalisation layers live in its Flower ``context.state``, which
never leaves the site.
"""

from __future__ import annotations

import numpy as np
from flwr.app import ConfigRecord, Context, RecordDict

from fedbone.evaluation import ScoreHistograms
from fedbone.federation.kinds import MODEL_RECORD_PREFIX
from fedbone.federation.records import arrays_to_record, record_to_arrays
from fedbone.models import ClassifierSpec
from fedbone.training import AugmentSpec, Sampling, TrainSpec

__all__ = [
    "POOLED_RECORD_PREFIX",
    "classifier_spec_from",
    "local_state_from",
    "local_state_to",
    "models_from",
    "pairs_from",
    "pooled_histograms_from",
    "train_spec_from",
]

POOLED_RECORD_PREFIX = "pooled-"
_LOCAL_STATE = "fedbn-local-state"


def classifier_spec_from(config: ConfigRecord) -> ClassifierSpec:
    """The classifier the study trains (no pretrained file: weights come in)."""
    return ClassifierSpec(
        architecture=str(config["architecture"]),
        norm=str(config["norm"]),
        in_channels=int(config["in-channels"]),
    )


def train_spec_from(config: ConfigRecord) -> TrainSpec:
    """Local training settings for one round."""
    patience = int(config.get("early-stopping-patience", 0))
    return TrainSpec(
        epochs=int(config["local-epochs"]),
        batch_size=int(config["batch-size"]),
        lr=float(config["lr"]),
        weight_decay=float(config["weight-decay"]),
        sampling=Sampling(str(config["sampling"])),
        augment=AugmentSpec(enabled=bool(config["augment"])),
        early_stopping_patience=patience or None,
        proximal_mu=float(config.get("proximal-mu", 0.0)),
        seed=int(config["seed"]) + int(config.get("server-round", 0)),
    )


def models_from(content: RecordDict) -> dict[str, dict[str, np.ndarray]]:
    """Every ``model-<name>`` ArrayRecord of a message, by name."""
    return {
        name.removeprefix(MODEL_RECORD_PREFIX): record_to_arrays(record)
        for name, record in content.array_records.items()
        if name.startswith(MODEL_RECORD_PREFIX)
    }


def pairs_from(config: ConfigRecord) -> list[tuple[str, str]]:
    """Model pairs to compare, sent as ``"a|b"`` strings."""
    pairs = config.get("pairs", [])
    return [tuple(str(p).split("|", 1)) for p in pairs]  # type: ignore[misc]


def pooled_histograms_from(content: RecordDict) -> dict[str, ScoreHistograms]:
    """The server's pooled per-class histograms, by model name."""
    return {
        name.removeprefix(POOLED_RECORD_PREFIX): ScoreHistograms.from_dict(dict(record))
        for name, record in content.metric_records.items()
        if name.startswith(POOLED_RECORD_PREFIX)
    }


def local_state_from(context: Context) -> dict[str, np.ndarray] | None:
    """The site's own normalisation layers kept from earlier FedBN rounds."""
    if _LOCAL_STATE not in context.state.array_records:
        return None
    return record_to_arrays(context.state.array_records[_LOCAL_STATE])


def local_state_to(context: Context, arrays: dict[str, np.ndarray] | None) -> None:
    """Keep (or, with ``None``, leave unchanged) the site's FedBN layers."""
    if arrays is not None:
        context.state[_LOCAL_STATE] = arrays_to_record(arrays)
