"""Run a study on simulated sites with Flower's simulation runtime.

``fedbone simulate configs/simulation.yaml`` lands here: phantom cohorts are
written if absent, every site's cache is prepared (reused when unchanged), and
the study runs through ``flwr.simulation.run_simulation`` with one virtual
SuperNode per site. Node ``i`` is site ``i`` of ``simulation.sites``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

from fedbone.config import load_site_config, write_site_config
from fedbone.data.cache_summary import format_summary_table, summarise_site_cache
from fedbone.data.phantom_sites import ensure_phantom_federation
from fedbone.data.prepare import prepare_site_cache
from fedbone.errors import ConfigError, Problem
from fedbone.profiles import profile_spec
from fedbone.study_config import StudyConfig
from server.app import new_run_dir, simulation_server_app
from server.study import StudyError, StudyRun

__all__ = ["SimulationOutcome", "prepare_simulated_sites", "simulate_study"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimulationOutcome:
    """A finished simulated study."""

    run: StudyRun
    run_dir: Path
    seconds: float


def prepare_simulated_sites(study: StudyConfig) -> list[Path]:
    """Make (if absent) and prepare the phantom sites; return their configs."""
    sim = study.simulation
    if sim is None:
        raise ConfigError(
            study.source or "study config",
            [
                Problem(
                    "missing-key", "simulation needs a 'simulation' block", "simulation"
                )
            ],
        )
    configs = ensure_phantom_federation(
        sim.sites_dir,
        sites=list(sim.sites),
        spec=profile_spec(sim.profile),
        scale=sim.scale,
        min_scans=sim.min_scans,
        seed=sim.seed,
        workers=sim.workers,
        outcome_sites=sim.outcome_sites,
    )
    summaries = []
    for path in configs:
        site = load_site_config(path)
        if site.privacy.epsilon_budget != sim.site_epsilon:
            # The study's simulated hospitals take the budget it names.
            privacy = replace(site.privacy, epsilon_budget=sim.site_epsilon)
            write_site_config(replace(site, privacy=privacy, source=None), path)
            site = load_site_config(path)
        report = prepare_site_cache(
            site.data.manifest,
            site.data.cache_dir,
            site.preprocessing,
            default_view=site.data.default_view,
            workers=sim.workers,
        )
        logger.info(
            "site %s: %s cache of %d scans (%d quarantined)",
            site.site_id,
            "reused" if report.reused else "prepared",
            report.n_cached,
            report.n_quarantined,
        )
        summaries.append(summarise_site_cache(site.site_id, site.data.cache_dir))
    logger.info("federation:\n%s", format_summary_table(summaries))
    return configs


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
