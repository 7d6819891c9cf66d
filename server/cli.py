"""``fedbone simulate``: the server package's subcommand of ``fedbone``.

It runs the ServerApp and the ClientApp together, so it lives beside them and
reaches the ``fedbone`` command through the ``fedbone.commands`` entry point.
Its imports wait for the command to run, so ``fedbone --help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_simulate_parser"]


def add_simulate_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``fedbone simulate`` (registered under ``fedbone.commands``)."""
    p = sub.add_parser(
        "simulate",
        help="run a whole study on simulated phantom sites (Flower simulation)",
        description=(
            "Make the phantom sites of the study's 'simulation' block if absent, "
            "prepare every site's cache, and run the study's phases through "
            "Flower's simulation runtime. Results go to <runs_dir>/<name>-<time>/."
        ),
    )
    p.add_argument("study", type=Path, help="study YAML, e.g. configs/simulation.yaml")
    p.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="continue an interrupted run from its checkpoint",
    )
    p.set_defaults(func=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    from fedbone.config.study import load_study_config
    from server.simulation import simulate_study

    study = load_study_config(args.study)
    outcome = simulate_study(study, resume_dir=args.resume)
    sys.stdout.write(
        f"\nstudy {study.name!r} finished in {outcome.seconds:.0f} s; "
        f"results, report.html and models in {outcome.run_dir}\n"
    )
    return 0
