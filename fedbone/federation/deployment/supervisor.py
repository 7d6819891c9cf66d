"""Keep a hospital's SuperNode running through a refused activation.

After a site dies without saying goodbye (power cut, container killed), the
SuperLink counts its SuperNode online until two heartbeats are missed (Flower
1.42: up to 60 s after the last one). A SuperNode started again inside that
window is refused (``ApiError 2004``, Flower exit code 305; the process exit
status is 1 as for any error), exactly as one whose key was never registered.
``fedbone site start`` therefore runs the SuperNode as a child, passes its
output on, starts it again while activation is refused, and gives up with a
clear error only after ``retry_s``.

The supervisor forwards SIGTERM and SIGINT to the SuperNode (``docker stop``
and Ctrl-C end the site gracefully) and, as the child subreaper of what it
starts, stops whatever a failed attempt left behind (Flower's SuperExec).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import FrameType

from fedbone.errors import Problem
from fedbone.federation.deployment.processes import descendant_pids
from fedbone.federation.deployment.runtime import DeploymentError

__all__ = [
    "ACTIVATION_REFUSED",
    "DEFAULT_ACTIVATION_RETRY_S",
    "run_supernode",
]

logger = logging.getLogger(__name__)

#: What ``flower-supernode`` prints when the SuperLink refuses to activate it
#: (its process exit status is 1 for every error, so only the output tells).
ACTIVATION_REFUSED = b"Exit Code: 305"
#: Long enough for the SuperLink to let go of a crashed site (2 x 30 s + margin).
DEFAULT_ACTIVATION_RETRY_S = 180.0
_PR_SET_CHILD_SUBREAPER = 36
_FORWARD_GRACE_S = 3.0


def run_supernode(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    site: str,
    retry_s: float = DEFAULT_ACTIVATION_RETRY_S,
    pause_s: float = 10.0,
) -> int:
    """Run the SuperNode ``argv`` until it ends; retry refused activations.

    Parameters
    ----------
    argv, env
        The ``flower-supernode`` command line and its environment.
    site
        The site id, for messages.
    retry_s
        Keep starting the SuperNode again while it is refused for
        this long after the first start.
    pause_s
        Wait this long between attempts.

    Returns
    -------
    int
        The SuperNode's exit code (0 after a graceful stop).

    Raises
    ------
    DeploymentError
        If activation was still refused after ``retry_s``.
    """
    _adopt_orphans()
    stopping = threading.Event()
    running: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        if stopping.is_set():
            return
        stopping.set()
        # Flower's SuperNode leaves gracefully (tells the SuperLink) on its
        # first SIGTERM and dies at once on a second. When the signal went to
        # every process (systemd, a process-tree stop) it has one already, so
        # pass it on only if the SuperNode is still there after a grace time.
        timer = threading.Timer(_FORWARD_GRACE_S, _signal_alive, (running, signum))
        timer.daemon = True
        timer.start()

    restore = _install_handlers(forward)
    deadline = time.monotonic() + retry_s
    attempt = 0
    try:
        while True:
            attempt += 1
            before = set(descendant_pids(os.getpid()))
            process = subprocess.Popen(
                list(argv),
                env=dict(env),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Ctrl-C in a terminal reaches the supervisor only, which
                # passes it on once.
                start_new_session=True,
            )
            running[:] = [process]
            relay = _OutputRelay(process)
            code = process.wait()
            # What it started may still hold the pipe; the relay ends with them.
            _stop_leftovers(before)
            refused = relay.finish()
            if stopping.is_set() or code == 0 or not refused:
                return code
            if time.monotonic() + pause_s > deadline:
                raise _refused(site, attempt, retry_s)
            logger.warning(
                "site %s: the SuperLink refused to activate this SuperNode "
                "(attempt %d). After a crash it holds the old connection for "
                "up to 60 s; trying again in %.0f s (giving up %.0f s after "
                "the first attempt).",
                site,
                attempt,
                pause_s,
                retry_s,
            )
            if stopping.wait(pause_s):
                return code
    finally:
        restore()


def _signal_alive(running: list[subprocess.Popen[bytes]], signum: int) -> None:
    for process in running:
        if process.poll() is None:
            process.send_signal(signum)


class _OutputRelay:
    """Copy a child's output to ours, noting whether it says it was refused."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None  # stdout=PIPE
        self._stream = process.stdout
        self.refused = False
        self._thread = threading.Thread(target=self._copy, daemon=True)
        self._thread.start()

    def _copy(self) -> None:
        out = sys.stdout.buffer
        for line in self._stream:
            self.refused = self.refused or ACTIVATION_REFUSED in line
            out.write(line)
            out.flush()

    def finish(self, timeout_s: float = 10.0) -> bool:
        """Wait for the output to end; return whether activation was refused."""
        self._thread.join(timeout_s)
        return self.refused


def _refused(site: str, attempts: int, retry_s: float) -> DeploymentError:
    return DeploymentError(
        f"site {site}",
        [
            Problem(
                "activation-refused",
                f"the SuperLink refused this site {attempts} times over "
                f"{retry_s:.0f} s. Either its public key is not registered (ask "
                f"the centre to run `fedbone server register --site {site}`) or "
                "the site's key is not the one the centre registered (check "
                "`--key`); see the SuperNode's output above",
            )
        ],
    )


def _install_handlers(
    handler: Callable[[int, FrameType | None], None],
) -> Callable[[], None]:
    """Install ``handler`` for SIGTERM and SIGINT; return how to undo it."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {
        sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)
    }

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def _adopt_orphans() -> None:
    """Become the child subreaper, so what the SuperNode leaves comes to us."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        logger.debug("could not become child subreaper (errno %d)", ctypes.get_errno())


def _stop_leftovers(before: set[int], timeout_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL, what an attempt started and left running."""
    leftovers = [pid for pid in descendant_pids(os.getpid()) if pid not in before]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in leftovers:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + timeout_s
        leftovers = [pid for pid in leftovers if not _reaped(pid, deadline)]
        if not leftovers:
            return


def _reaped(pid: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            # Not our child (not adopted): gone once /proc forgets it.
            if not os.path.exists(f"/proc/{pid}"):
                return True
        else:
            if done == pid:
                return True
        time.sleep(0.1)
    return False
