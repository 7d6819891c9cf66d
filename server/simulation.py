"""Run a study on simulated sites with Flower's simulation runtime.

``fedbone simulate configs/simulation.yaml`` lands here: phantom cohorts are
written if absent, every site's cache is prepared (reused when unchanged), and
the study runs through ``flwr.simulation.run_simulation`` with one virtual
SuperNode per site. Node ``i`` is site ``i`` of ``simulation.sites``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from fedbone.config.study import StudyConfig
from fedbone.simulation.sites import prepare_simulated_sites
from server.app import new_run_dir, simulation_server_app
from server.study_run import StudyError, StudyRun

__all__ = ["SimulationOutcome", "simulate_study"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimulationOutcome:
    """A finished simulated study."""

    run: StudyRun
    run_dir: Path
    seconds: float


def simulate_study(
    study: StudyConfig, *, resume_dir: Path | None = None
) -> SimulationOutcome:
    """Prepare the simulated sites and run ``study`` through Flower.

    With ``resume_dir``, continue that interrupted run from its checkpoint.

    Raises
    ------
    StudyError
        If the study did not finish (the ServerApp's error is logged by Flower).
    """
    from flwr.simulation import run_simulation

    from sites.app import app as client_app

    started = time.perf_counter()
    configs = prepare_simulated_sites(study)
    run_dir = resume_dir if resume_dir is not None else new_run_dir(study)
    outcome: list[StudyRun] = []
    assert study.simulation is not None  # checked by prepare_simulated_sites
    run_simulation(
        server_app=simulation_server_app(
            study, run_dir, configs, outcome, resume=resume_dir is not None
        ),
        client_app=client_app,
        num_supernodes=len(configs),
        backend_config={
            "client_resources": {
                "num_cpus": study.simulation.cpus_per_site,
                "num_gpus": 0.0,
            },
            "init_args": {"logging_level": "ERROR", "log_to_driver": True},
        },
    )
    if not outcome:
        raise StudyError(f"the study did not finish; see the log above and {run_dir}")
    return SimulationOutcome(outcome[0], run_dir, time.perf_counter() - started)
