"""The GAN's progress lines: throttled, with losses, speed and time left."""

from __future__ import annotations

import numpy as np

from fedbone.generative.progress import TrainingProgress
from fedbone.generative.trainer import GanTrainer, GanTrainSpec
from fedbone.models.gan import GanSpec


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_interval_with_mean_losses_speed_and_eta() -> None:
    clock, lines = _Clock(), []
    progress = TrainingProgress(100, interval_s=30.0, clock=clock, emit=lines.append)

    for step in range(1, 11):
        clock.now = 3.0 * step
        progress.step(step, 16 * step, (1.0 + step % 2, 2.0), 0.25)

    assert lines == [
        "GAN step 10/100: D loss 1.500, G loss 2.000, ADA p 0.250, "
        "5.3 images/s, about 4 min 30 s left"
    ]


def test_no_line_before_the_interval() -> None:
    clock, lines = _Clock(), []
    progress = TrainingProgress(10, interval_s=30.0, clock=clock, emit=lines.append)

    clock.now = 29.0
    line = progress.step(1, 16, (0.5, 0.5), 0.0)

    assert line is None and lines == []


def test_the_trainer_reports_its_steps() -> None:
    spec = GanSpec(
        height=32,
        width=16,
        latent_dim=8,
        style_dim=8,
        base_channels=4,
        max_channels=8,
        upsamplings=2,
    )
    trainer = GanTrainer(spec, GanTrainSpec(steps=3, batch_size=4, device="cpu"))
    clock, lines = _Clock(), []
    trainer.progress = TrainingProgress(
        3, interval_s=0.0, clock=clock, emit=lines.append
    )
    images = np.random.default_rng(0).random((8, 32, 16), dtype=np.float32)

    trainer.train(images, np.array([0, 1, 2, 3] * 2), steps=3)

    assert [line.split(":")[0] for line in lines] == [
        "GAN step 1/3",
        "GAN step 2/3",
        "GAN step 3/3",
    ]
