"""Flower processes (SuperLink, SuperNode, ``flwr run``): start, watch, stop.

Each runs in its own session with its output in a log file; stopping one stops
everything it started, including the SuperExec that detaches into a session
of its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from fedbone.errors import Problem
from fedbone.federation.deployment.runtime import DeploymentError, split_address

__all__ = [
    "FlowerProcess",
    "descendant_pids",
    "kill_tree",
    "start_flower_process",
    "wait_until_listening",
]

logger = logging.getLogger(__name__)


class FlowerProcess:
    """A Flower process in its own session, with its log in a file.

    Parameters
    ----------
    name
        What it is (``superlink``, ``site A``), for messages.
    process
        The started process.
    log_path
        Where its stdout and stderr go.
    """

    def __init__(self, name: str, process: subprocess.Popen[bytes], log_path: Path):
        self.name = name
        self.process = process
        self.log_path = log_path

    @property
    def running(self) -> bool:
        """Whether the process has not exited."""
        return self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        """Last lines of the process's log."""
        if not self.log_path.is_file():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def wait(self, timeout_s: float) -> int | None:
        """Exit code, or ``None`` if still running after ``timeout_s``."""
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the process and everything it started (SuperExec, apps)."""
        # SuperExec detaches into its own session, so a process-group kill
        # alone would leave it; collect descendants while the tree is intact.
        pids = [self.process.pid, *descendant_pids(self.process.pid)]
        for pid in pids:
            _signal(pid, signal.SIGTERM)
        if self.wait(timeout_s) is None:
            logger.warning(
                "%s did not stop within %.0f s; killing", self.name, timeout_s
            )
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        self.process.wait(timeout=timeout_s)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def descendant_pids(root: int) -> list[int]:
    """Process ids of everything ``root`` started, at any depth (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # ``pid (comm) state ppid ...``; comm may hold spaces, so split after ')'
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def kill_tree(process: FlowerProcess, timeout_s: float = 10.0) -> None:
    """SIGKILL ``process`` and everything it started, as a power cut would."""
    for pid in [process.process.pid, *descendant_pids(process.process.pid)]:
        _signal(pid, signal.SIGKILL)
    process.process.wait(timeout=timeout_s)


def start_flower_process(
    name: str, argv: Sequence[str], log_path: Path, env: Mapping[str, str]
) -> FlowerProcess:
    """Start ``argv`` in a new session, stdout and stderr into ``log_path``.

    Parameters
    ----------
    name
        What it is (``superlink``, ``site A``), for messages.
    argv
        Command line to run.
    log_path
        Log file, appended to; its parent folders are created.
    env
        The process's whole environment (e.g. from
        :func:`~fedbone.federation.deployment.runtime.flower_env`).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            start_new_session=True,
        )
    logger.info("started %s (pid %d): %s", name, process.pid, " ".join(argv))
    return FlowerProcess(name, process, log_path)


def wait_until_listening(
    address: str, process: FlowerProcess, timeout_s: float = 60.0
) -> None:
    """Wait until ``address`` accepts TCP connections.

    Parameters
    ----------
    address
        ``HOST:PORT`` to connect to (``[v6]:PORT`` too).
    process
        The process expected to listen there; watched for an early exit.
    timeout_s
        Seconds to keep trying.

    Raises
    ------
    DeploymentError
        If ``process`` exits first or ``timeout_s`` passes; quotes its log.
    """
    host, port = split_address(address)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not process.running:
            raise _failed(process, "exited before listening", address)
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.2)
    raise _failed(process, f"was not listening after {timeout_s:.0f} s", address)


def _failed(process: FlowerProcess, what: str, where: str) -> DeploymentError:
    return DeploymentError(
        process.name,
        [
            Problem(
                "process-failed",
                f"{process.name} {what}; its log {process.log_path} ends with:\n"
                f"{process.log_tail()}",
                where,
            )
        ],
    )
