"""Where a site's progress lines go: the site process's standard error.

A ClientApp runs in a process fedbone does not start (a SuperNode's app
process, or a Ray worker of Flower's simulation, which forwards the worker's
output to the simulation's console). Python logging there drops INFO lines
(the default level is WARNING), so a GAN that trains for minutes says nothing.
:func:`show_site_progress` lowers the level of the loggers of long site jobs
(GAN training and synthesis) to INFO; their lines then reach whatever handler
the process has (importing Flower installs one on the root logger), or a
stderr handler added on the root logger of a bare process. Other fedbone
loggers keep their level.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

__all__ = ["PROGRESS_LOGGERS", "show_site_progress"]

#: Loggers whose INFO lines tell a site's operator that a long job moves.
PROGRESS_LOGGERS = (
    "fedbone.generative.progress",
    "fedbone.generative.synthesis",
    "fedbone.generative.synthesis_batches",
    "fedbone.generative.run",
)


def show_site_progress(stream: TextIO | None = None) -> None:
    """Let the progress loggers' INFO lines through; give a bare process a handler.

    Parameters
    ----------
    stream
        Where a bare process (no handler on the root logger) prints; standard
        error when None. A process with handlers keeps them, so no line is
        printed twice.
    """
    for name in PROGRESS_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s site %(levelname)s %(name)s: %(message)s")
    )
    root.addHandler(handler)
