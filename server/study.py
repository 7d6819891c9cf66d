"""Run a study: the configured phases, in order, over Flower's Grid.

Each phase is a function of :class:`~server.study_run.StudyRun` registered in
:mod:`server.phases`; adding a phase is one module and one registry line.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from flwr.serverapp import Grid

from fedbone.config.study import StudyConfig
from server.checkpoint import load_checkpoint, restore, save_checkpoint
from server.phases import PHASE_FUNCTIONS
from server.study_run import StudyRun

__all__ = ["run_study"]

logger = logging.getLogger(__name__)


def run_study(
    grid: Grid,
    study: StudyConfig,
    run_dir: Path,
    *,
    sim_site_configs: list[str] | None = None,
    resume: bool = False,
) -> StudyRun:
    """Run every configured phase of ``study`` and return the run's state.

    Parameters
    ----------
    grid
        Flower's grid (simulation or deployment).
    study
        The validated study config.
    run_dir
        Folder for everything the run writes.
    sim_site_configs
        Simulation only: site YAML paths in partition order.
    resume
        Continue the run in ``run_dir`` from its checkpoint (the centre was
        restarted): completed phases and training rounds are not repeated.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    run = StudyRun(study, grid, run_dir, sim_site_configs)
    state = load_checkpoint(run_dir) if resume else None
    if resume and state is None:
        logger.warning("%s has no checkpoint; starting the study afresh", run_dir)
    if state is not None:
        restore(run, state)
    else:
        run.write_json("config.resolved.json", study.to_json())
    for phase in study.phases:
        # The census always runs: reconnected sites may have new node ids.
        if phase in run.phases_done and phase != "census":
            logger.info("phase %s: done before the restart; skipped", phase)
            continue
        started = time.perf_counter()
        logger.info("phase %s: starting", phase)
        PHASE_FUNCTIONS[phase](run)
        run.timings[phase] = time.perf_counter() - started
        logger.info("phase %s: done in %.1f s", phase, run.timings[phase])
        if phase not in run.phases_done:
            run.phases_done.append(phase)
        save_checkpoint(run)
    return run
