"""Where a site's progress lines go: the site process's standard error.

A ClientApp runs in a process fedbone does not start (a SuperNode's app
process, or a Ray worker of Flower's simulation, which forwards the worker's
output to the simulation's console). Nothing configures Python logging there,
so INFO lines would be dropped. :func:`show_site_progress` attaches one stderr
handler to the loggers of long site jobs (GAN training and synthesis), once per
process, and leaves the rest of fedbone's logging to whoever configured it.
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
_MARK = "_fedbone_site_progress"


def show_site_progress(stream: TextIO | None = None) -> None:
    """Log the progress loggers' INFO lines to ``stream`` (stderr), once.

    Does nothing when the root logger already has handlers (a ``fedbone``
    command configured logging in this process), so no line is printed twice.

    Parameters
    ----------
    stream
        Where the lines go; standard error when None.
    """
    if logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s site %(levelname)s %(name)s: %(message)s")
    )
    for name in PROGRESS_LOGGERS:
        progress = logging.getLogger(name)
        if any(getattr(h, _MARK, False) for h in progress.handlers):
            continue
        setattr(handler, _MARK, True)
        progress.addHandler(handler)
        progress.setLevel(logging.INFO)
        progress.propagate = False
