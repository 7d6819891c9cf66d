"""Progress lines for long site jobs (GAN training), at most one per interval.

A site's GAN trains for minutes on a CPU and hours on a GPU; a data engineer
watching the site log should see that it moves and when it will end.
:class:`TrainingProgress` is fed after every step and logs one line every
``interval_s`` seconds: step of total, mean losses since the last line, the
augmentation probability, images per second and the time left. Flower-free.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["TrainingProgress"]

logger = logging.getLogger(__name__)


class TrainingProgress:
    """Throttled progress reporter for a step-based training loop.

    Parameters
    ----------
    total_steps
        Steps the whole run is planned for (for the ETA).
    interval_s
        Seconds between lines.
    clock
        Monotonic clock in seconds (a fake in tests).
    emit
        Receives each line (``logger.info`` by default).
    """

    def __init__(
        self,
        total_steps: int,
        *,
        interval_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        emit: Callable[[str], None] | None = None,
    ) -> None:
        self.total_steps = total_steps
        self.interval_s = interval_s
        self._clock = clock
        self._emit = emit if emit is not None else logger.info
        self._last_time = clock()
        self._last_images = 0
        self._d: list[float] = []
        self._g: list[float] = []

    def step(
        self, step: int, images_seen: int, losses: tuple[float, float], ada_p: float
    ) -> str | None:
        """Record one step; return (and emit) a line when the interval is over.

        Parameters
        ----------
        step
            Steps done so far in the run.
        images_seen
            Real images seen so far in the run.
        losses
            This step's discriminator and generator losses.
        ada_p
            The current augmentation probability.
        """
        self._d.append(losses[0])
        self._g.append(losses[1])
        now = self._clock()
        elapsed = now - self._last_time
        if elapsed < self.interval_s:
            return None
        rate = (images_seen - self._last_images) / max(elapsed, 1e-9)
        steps_per_s = len(self._d) / max(elapsed, 1e-9)
        left = max(self.total_steps - step, 0) / max(steps_per_s, 1e-9)
        line = (
            f"GAN step {step}/{self.total_steps}: D loss {_mean(self._d):.3f}, "
            f"G loss {_mean(self._g):.3f}, ADA p {ada_p:.3f}, "
            f"{rate:.1f} images/s, about {_duration(left)} left"
        )
        self._emit(line)
        self._last_time, self._last_images = now, images_seen
        self._d, self._g = [], []
        return line


def _mean(values: list[float]) -> float:
    finite = [v for v in values if v == v]
    return sum(finite) / len(finite) if finite else float("nan")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"
