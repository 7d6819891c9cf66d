"""The ``flwr-clientapp`` a fedbone site runs: Flower's, behind the app pin.

:func:`write_clientapp_shim` writes an executable ``flwr-clientapp`` that
``fedbone site start`` puts first on the SuperNode's ``PATH`` (Flower's
SuperExec starts ClientApps by that name). It runs Flower's own
``flwr-clientapp`` with :func:`fedbone.federation.deployment.app_pinning.check_fab` in
front of the FAB install (:func:`run_pinned_clientapp`). A refused FAB raises
inside Flower's task, so Flower sends its ordinary error reply and no study
code runs; the refusal, being a reply that leaves the site, is written to the
site's egress log like every other reply.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fedbone.errors import Problem
from fedbone.federation.deployment.app_pinning import (
    AppNotAllowedError,
    check_fab,
    installed_package_dirs,
)
from fedbone.federation.deployment.runtime import DeploymentError

__all__ = [
    "pinned_install_from_fab",
    "run_pinned_clientapp",
    "write_clientapp_shim",
]

logger = logging.getLogger(__name__)

#: Called with the refusal when a FAB is refused (e.g. to log it as egress).
RefusalHook = Callable[[AppNotAllowedError], None]


def pinned_install_from_fab(
    original: Callable[..., Path],
    installed: Mapping[str, Path],
    on_refusal: RefusalHook | None = None,
) -> Callable[..., Path]:
    """Wrap Flower's ``install_from_fab`` so it installs only pinned FABs.

    Parameters
    ----------
    original
        ``flwr.cli.install.install_from_fab`` (or what stands in for it).
    installed
        Pinned package folders, found before any FAB is on ``sys.path``.

    Returns
    -------
    Callable[..., Path]
        Same signature as ``original``; raises :class:`AppNotAllowedError`
        (after logging it) without calling ``original`` for a refused FAB.
    """

    def install_pinned(
        fab_file: Path | bytes,
        install_dir: Path | None = None,
        skip_prompt: bool = False,
    ) -> Path:
        content = fab_file if isinstance(fab_file, bytes) else fab_file.read_bytes()
        try:
            check_fab(content, installed)
        except AppNotAllowedError as refusal:
            logger.error("Refused to run the study's ClientApp: %s", refusal)
            if on_refusal is not None:
                on_refusal(refusal)
            raise
        logger.info(
            "FAB sha256 %s holds only the code installed here; installing it",
            hashlib.sha256(content).hexdigest()[:12],
        )
        return original(fab_file, install_dir=install_dir, skip_prompt=skip_prompt)

    return install_pinned


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


def run_pinned_clientapp() -> int:
    """Run Flower's ``flwr-clientapp`` with the FAB check in front of the install.

    Replaces ``install_from_fab`` in ``flwr.supernode.runtime.run_clientapp``
    (the name ``run_clientapp`` calls) for the duration of the run.

    Returns
    -------
    int
        The exit status Flower's ``flwr-clientapp`` ends with.
    """
    runtime: Any = importlib.import_module("flwr.supernode.runtime.run_clientapp")
    command: Any = importlib.import_module("flwr.supernode.cli.flwr_clientapp")
    # Looked up now, before Flower puts any FAB folder first on sys.path.
    installed = installed_package_dirs()
    original_install = runtime.install_from_fab
    original_pull = runtime.pull_task_input
    task: list[tuple[Any, Any]] = []

    def pull_and_keep(client: Any) -> Any:
        pulled = original_pull(client)
        task[:] = [(pulled[0], pulled[1])]  # message, context
        return pulled

    def log_refusal(refusal: AppNotAllowedError) -> None:
        if task:
            _log_refusal_as_egress(*task[0], refusal)

    runtime.pull_task_input = pull_and_keep
    runtime.install_from_fab = pinned_install_from_fab(
        original_install, installed, log_refusal
    )
    try:
        command.flwr_clientapp()
    except SystemExit as flower_exit:
        # Flower ends every task through sys.exit (its flwr_exit).
        return _exit_status(flower_exit.code)
    finally:
        runtime.install_from_fab = original_install
        runtime.pull_task_input = original_pull
    return 0


def _log_refusal_as_egress(
    message: Any, context: Any, refusal: AppNotAllowedError
) -> None:
    """Write the refusal to the site's egress log: Flower sends it as a reply."""
    from fedbone.federation.egress.guard import log_error_reply
    from fedbone.federation.site_context import guard_and_log_for

    try:
        _, log = guard_and_log_for(message, context)
        log_error_reply(log, message, f"app refused: {refusal}")
    except Exception:  # the refusal stands even when the log cannot be written
        logger.exception("could not write the refusal to the site's egress log")


def write_clientapp_shim(bin_dir: Path) -> Path:
    """Write the ``flwr-clientapp`` executable that runs the pinned ClientApp.

    Parameters
    ----------
    bin_dir
        Folder to put first on the SuperNode's ``PATH``; created if needed.

    Returns
    -------
    Path
        The executable (mode 0o755), rewritten only when its text changes.

    Raises
    ------
    DeploymentError
        If this Python's path cannot be used on a ``#!`` line.
    """
    if any(ch.isspace() for ch in sys.executable):
        raise DeploymentError(
            sys.executable,
            [
                Problem(
                    "unusable-python-path",
                    "the Python running fedbone lives at a path with spaces, which "
                    "a #! line cannot hold; install fedbone in a virtual "
                    "environment whose path has no spaces",
                )
            ],
        )
    text = (
        f"#!{sys.executable}\n"
        '"""flwr-clientapp for a fedbone site: run only code installed here."""\n'
        "import sys\n\n"
        "from fedbone.federation.deployment.pinned_clientapp import (\n"
        "    run_pinned_clientapp,\n)\n\n"
        "sys.exit(run_pinned_clientapp())\n"
    )
    bin_dir.mkdir(parents=True, exist_ok=True)
    shim = bin_dir / "flwr-clientapp"
    if not shim.is_file() or shim.read_text(encoding="utf-8") != text:
        # Written beside and renamed: a SuperExec starting a ClientApp right now
        # sees the old or the new script, never half of one.
        partial = bin_dir / f".flwr-clientapp.{os.getpid()}.tmp"
        partial.write_text(text, encoding="utf-8")
        partial.chmod(0o755)
        partial.replace(shim)
    shim.chmod(0o755)
    return shim
