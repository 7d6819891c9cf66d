"""A GAN trainer's networks as named arrays: round trip, checks, digest."""

import numpy as np
import pytest

from fedbone.classifier.errors import TrainingError
from fedbone.generative.arrays import arrays_digest, load_trainer_arrays, trainer_arrays
from fedbone.generative.trainer import GanTrainer, GanTrainSpec
from fedbone.models.gan import GanSpec


def _trainer(seed: int) -> GanTrainer:
    spec = GanSpec(
        height=64, width=32, latent_dim=8, style_dim=8, base_channels=4, max_channels=8
    )
    return GanTrainer(spec, GanTrainSpec(batch_size=4, seed=seed, device="cpu"))


def test_arrays_cover_the_three_networks_and_load_into_another_trainer() -> None:
    source, target = _trainer(0), _trainer(1)

    arrays = trainer_arrays(source)
    load_trainer_arrays(target, arrays)

    assert {name.split(".")[0] for name in arrays} == {"g", "d", "ema"}
    assert arrays_digest(trainer_arrays(target)) == arrays_digest(arrays)
    labels = np.array([0, 1, 2, 3])
    np.testing.assert_array_equal(
        source.generate(labels, seed=3), target.generate(labels, seed=3)
    )


def test_keys_of_no_network_are_refused() -> None:
    arrays = trainer_arrays(_trainer(0))
    arrays["optimizer.state"] = np.zeros(2, dtype=np.float32)

    with pytest.raises(TrainingError) as caught:
        load_trainer_arrays(_trainer(1), arrays)

    assert caught.value.codes == ["unknown-network"]


def test_the_digest_changes_with_any_weight() -> None:
    arrays = trainer_arrays(_trainer(0))
    before = arrays_digest(arrays)
    name = next(iter(arrays))
    arrays[name] = arrays[name] + 1e-6

    assert arrays_digest(arrays) != before
