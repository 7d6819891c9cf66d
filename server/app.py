"""fedbone's Flower ServerApp.

Deployment: ``flwr run`` with ``--run-config 'study-config="/path/study.yaml"'``
runs :data:`app`; adding ``resume-run-dir="/path/run"`` continues that
interrupted run from its checkpoint. Simulation: ``fedbone simulate`` builds one with
:func:`simulation_server_app`, which also tells sites where their phantom site
configs are.
"""

from __future__ import annotations

import time
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedbone.config.study import StudyConfig, load_study_config
from server.study import run_study
from server.study_run import StudyRun

__all__ = ["app", "new_run_dir", "simulation_server_app"]


def new_run_dir(study: StudyConfig) -> Path:
    """``<runs_dir>/<study name>-<UTC timestamp>``, unique per run."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    path = study.runs_dir / f"{study.name}-{stamp}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = study.runs_dir / f"{study.name}-{stamp}-{suffix}"
    return path


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the study named by the run config's ``study-config``."""
    study = load_study_config(str(context.run_config["study-config"]))
    resume = str(context.run_config.get("resume-run-dir", "") or "")
    if resume:
        run_study(grid, study, Path(resume), resume=True)
    else:
        run_study(grid, study, new_run_dir(study))


def simulation_server_app(
    study: StudyConfig,
    run_dir: Path,
    site_configs: list[Path],
    outcome: list[StudyRun],
    *,
    resume: bool = False,
) -> ServerApp:
    """Return a ServerApp running ``study`` over simulated sites.

    Parameters
    ----------
    study, run_dir
        What to run and where to write it.
    site_configs
        Site YAML files in partition order (node ``i`` is site ``i``).
    outcome
        Receives the finished :class:`StudyRun` (the app runs in a thread).
    resume
        Continue the run in ``run_dir`` from its checkpoint.
    """
    sim_app = ServerApp()

    @sim_app.main()
    def sim_main(grid: Grid, context: Context) -> None:
        outcome.append(
            run_study(
                grid,
                study,
                run_dir,
                sim_site_configs=[str(p) for p in site_configs],
                resume=resume,
            )
        )

    return sim_app
