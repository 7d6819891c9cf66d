"""Checkpoints of a study run, so a restarted centre resumes where it stopped.

After every completed phase, and after every completed training round, the
server writes what the run holds (trained models, the round in progress of
each model, results, rounds, timings) to ``<run>/checkpoint/state.pkl``,
atomically. ``run_study(..., resume=True)`` restores it: completed phases are
skipped (the census always runs again: node ids change when sites reconnect)
and a model whose training was interrupted continues from its last completed
round. The round that was in flight is sent again with the same content; the
sites answer it from their stored replies (:mod:`fedbone.federation.replay`),
so no site trains twice or spends privacy twice on it.

The file is the centre's own state in its own run folder (it is pickled, so
only ever load checkpoints the centre wrote itself).
"""

from __future__ import annotations

import logging
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CHECKPOINT_FILE", "CheckpointState", "load_checkpoint", "save_checkpoint"]

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = Path("checkpoint") / "state.pkl"

#: StudyRun fields a checkpoint keeps (the grid and sites are the live run's).
_RUN_FIELDS = (
    "models",
    "enhancers",
    "generators",
    "pool",
    "federated_generator",
    "rounds",
    "results",
    "gan_results",
    "synthesis_results",
    "validation_results",
    "timings",
)


@dataclass
class CheckpointState:
    """What a run had finished when the checkpoint was written.

    Parameters
    ----------
    phases_done
        Phases completed, in order.
    progress
        Per model being trained: ``(completed rounds, global arrays)``.
    run_fields
        The :class:`~server.study_run.StudyRun` fields in ``_RUN_FIELDS``.
    """

    phases_done: list[str] = field(default_factory=list)
    progress: dict[str, tuple[int, dict[str, np.ndarray]]] = field(default_factory=dict)
    run_fields: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(run: Any) -> Path:
    """Write ``run``'s checkpoint state (atomically); return its path."""
    state = CheckpointState(
        phases_done=list(run.phases_done),
        progress=dict(run.progress),
        run_fields={name: getattr(run, name) for name in _RUN_FIELDS},
    )
    path = run.run_dir / CHECKPOINT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(".partial")
    with staging.open("wb") as handle:
        pickle.dump(state, handle, protocol=pickle.HIGHEST_PROTOCOL)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(staging, path)
    return path


def load_checkpoint(run_dir: Path) -> CheckpointState | None:
    """Return the run's checkpoint, or ``None`` when it never wrote one."""
    path = run_dir / CHECKPOINT_FILE
    if not path.is_file():
        return None
    with path.open("rb") as handle:
        state = pickle.load(handle)
    if not isinstance(state, CheckpointState):
        return None
    logger.info(
        "checkpoint of %s: phases done %s; rounds done %s",
        run_dir.name,
        ", ".join(state.phases_done) or "none",
        {name: rounds for name, (rounds, _) in state.progress.items()} or "none",
    )
    return state


def restore(run: Any, state: CheckpointState) -> None:
    """Put a checkpoint's state back into a fresh ``run``."""
    for name, value in state.run_fields.items():
        setattr(run, name, value)
    run.phases_done = list(state.phases_done)
    run.progress = dict(state.progress)
