"""The study's phases; a phase is a function of the :class:`StudyRun`.

To add a phase: write ``server/phases/<name>.py`` with ``run_<name>(run)``,
register it here, and add its name to ``fedbone.config.study.PHASES``.
"""

from __future__ import annotations

from collections.abc import Callable

from server.phases.census import run_census
from server.phases.enhance import run_enhance
from server.phases.gan import run_gan
from server.phases.outcomes import run_outcomes
from server.phases.report import run_report
from server.phases.synthesize import run_synthesize
from server.phases.train import run_train
from server.phases.validate import run_validate
from server.study_run import StudyRun

__all__ = ["PHASE_FUNCTIONS"]

PHASE_FUNCTIONS: dict[str, Callable[[StudyRun], None]] = {
    "census": run_census,
    "gan": run_gan,
    "synthesize": run_synthesize,
    "train": run_train,
    "enhance": run_enhance,
    "validate": run_validate,
    "outcomes": run_outcomes,
    "report": run_report,
}
