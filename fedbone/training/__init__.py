"""Local training: classifier loops, sampling, augmentation, parameter arrays."""

from __future__ import annotations

from fedbone.training.augment import Augmenter, AugmentSpec
from fedbone.training.errors import TrainingError
from fedbone.training.local import (
    TrainResult,
    TrainSpec,
    predict,
    read_batch,
    resolve_device,
    seed_everything,
    train_local,
)
from fedbone.training.parameters import (
    load_arrays,
    norm_layer_keys,
    split_local,
    state_to_arrays,
)
from fedbone.training.sampling import (
    Sampling,
    balanced_epoch,
    epoch_indices,
    oversample_minority,
)

__all__ = [
    "AugmentSpec",
    "Augmenter",
    "Sampling",
    "TrainResult",
    "TrainSpec",
    "TrainingError",
    "balanced_epoch",
    "epoch_indices",
    "load_arrays",
    "norm_layer_keys",
    "oversample_minority",
    "predict",
    "read_batch",
    "resolve_device",
    "seed_everything",
    "split_local",
    "state_to_arrays",
    "train_local",
]
