"""Talk to a running SuperLink through the ``flwr`` CLI: keys, nodes, runs.

Every call runs with the given ``FLWR_HOME``, whose ``config.toml`` (see
:func:`fedbone.federation.deployment.runtime.write_connection_config`) names the
SuperLink and the study CA.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedbone.errors import Problem
from fedbone.federation.deployment.runtime import (
    CONNECTION_NAME,
    DeploymentError,
    flower_env,
)

__all__ = [
    "RunOutcome",
    "online_node_ids",
    "register_site_keys",
    "run_arguments",
    "submit_run",
    "wait_for_online_nodes",
]

_STARTED_RUN = re.compile(r"started run (\d+)")


def _flwr_json(
    args: Sequence[str], flwr_home: Path, timeout_s: float
) -> dict[str, Any]:
    command = ["flwr", *args, "--format", "json"]
    done = subprocess.run(
        command,
        env=flower_env(flwr_home),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    try:
        reply = json.loads(done.stdout[done.stdout.index("{") :])
    except ValueError:
        reply = {"success": False, "error-message": done.stdout + done.stderr}
    return dict(reply)


def register_site_keys(
    flwr_home: Path, public_keys: Mapping[str, Path], timeout_s: float = 60.0
) -> dict[str, str]:
    """Register each site's public key with the SuperLink; return node ids.

    A key registered before (the state database persists) is accepted as is
    and maps to ``"already-registered"``.

    Parameters
    ----------
    flwr_home
        ``FLWR_HOME`` folder whose ``config.toml`` names the SuperLink and the
        study CA.
    public_keys
        Site id -> path of the site's ``.pub`` key file.
    timeout_s
        Seconds allowed for each ``flwr supernode register`` call.

    Raises
    ------
    DeploymentError
        Listing every key that could not be registered, with Flower's reason.
    """
    node_ids: dict[str, str] = {}
    problems: list[Problem] = []
    for site, key in public_keys.items():
        if not key.is_file():
            problems.append(
                Problem(
                    "missing-key",
                    f"{key} does not exist; create the site's keys with "
                    f"`fedbone pki add-site --site {site}`",
                    site,
                )
            )
            continue
        reply = _flwr_json(
            ["supernode", "register", str(key.resolve()), "--name", site],
            flwr_home,
            timeout_s,
        )
        message = str(reply.get("error-message", ""))
        if reply.get("success"):
            node_ids[site] = str(reply["node-id"])
        elif "already in use" in message:
            node_ids[site] = "already-registered"
        else:
            problems.append(
                Problem(
                    "register-failed",
                    f"could not register {key}: {message.strip()}; check the "
                    "SuperLink is running and the key is the site's .pub file",
                    site,
                )
            )
    if problems:
        raise DeploymentError("site key registration", problems)
    return node_ids


def online_node_ids(flwr_home: Path, timeout_s: float = 60.0) -> list[str]:
    """Ids of the SuperNodes the SuperLink currently sees online."""
    reply = _flwr_json(["supernode", "list"], flwr_home, timeout_s)
    return [
        str(node["node-id"])
        for node in reply.get("nodes", [])
        if node.get("status") == "online"
    ]


def wait_for_online_nodes(
    flwr_home: Path, count: int, timeout_s: float = 120.0
) -> list[str]:
    """Wait until at least ``count`` SuperNodes are online; return their ids.

    Parameters
    ----------
    flwr_home
        ``FLWR_HOME`` folder whose ``config.toml`` names the SuperLink and the
        study CA.
    count
        Number of online SuperNodes to wait for.
    timeout_s
        Seconds to wait; the SuperLink is polled once a second.

    Raises
    ------
    DeploymentError
        If fewer are online when ``timeout_s`` passes.
    """
    deadline = time.monotonic() + timeout_s
    online = online_node_ids(flwr_home)
    while len(online) < count and time.monotonic() < deadline:
        time.sleep(1.0)
        online = online_node_ids(flwr_home)
    if len(online) < count:
        raise DeploymentError(
            "federation",
            [
                Problem(
                    "sites-offline",
                    f"{len(online)} of {count} SuperNodes online after "
                    f"{timeout_s:.0f} s; check each site's log for exit code "
                    "305 (key not registered or SuperLink unreachable)",
                )
            ],
        )
    return online


@dataclass(frozen=True)
class RunOutcome:
    """A submitted run: its id and Flower's final status."""

    run_id: str
    status: str

    @property
    def completed(self) -> bool:
        """Whether the ServerApp finished without error."""
        return self.status == "finished:completed"


def _quoted(path: Path) -> str:
    return '"' + str(path.resolve()).replace('"', '\\"') + '"'


def run_arguments(
    app_dir: Path,
    study_config: Path,
    *,
    stream: bool = True,
    resume_run_dir: Path | None = None,
) -> list[str]:
    """Return the ``flwr run`` command line submitting the study.

    ``resume_run_dir`` (a run folder on the centre) makes the ServerApp
    continue that interrupted run from its checkpoint.

    Parameters
    ----------
    app_dir
        Folder of the fedbone Flower app, packed into the FAB.
    study_config
        The study YAML, passed as an absolute path read on the centre.
    stream
        Add ``--stream`` so ``flwr run`` prints the run's log until it ends.
    resume_run_dir
        Run folder to resume; ``None`` starts a new run.
    """
    run_config = f"study-config={_quoted(study_config)}"
    if resume_run_dir is not None:
        run_config += f" resume-run-dir={_quoted(resume_run_dir)}"
    command = ["flwr", "run", str(app_dir.resolve()), CONNECTION_NAME]
    command += ["--run-config", run_config]
    if stream:
        command.append("--stream")
    return command


def submit_run(
    flwr_home: Path,
    app_dir: Path,
    study_config: Path,
    *,
    log_path: Path,
    stream: bool = True,
    timeout_s: float = 3600.0,
    on_line: Callable[[str], None] | None = None,
    resume_run_dir: Path | None = None,
) -> RunOutcome:
    """Submit the fedbone app with ``study-config`` and wait for it to end.

    ``flwr run`` builds a FAB from ``app_dir`` (sources and configs only) and
    ships it to the SuperLink; the study YAML path is read on the centre.
    Every output line goes to ``log_path`` and, if given, to ``on_line``.
    ``resume_run_dir``: continue that interrupted run (after a centre restart)
    instead of starting a new one.

    Parameters
    ----------
    flwr_home
        ``FLWR_HOME`` folder whose ``config.toml`` names the SuperLink and the
        study CA.
    app_dir
        Folder of the fedbone Flower app, packed into the FAB.
    study_config
        The study YAML, passed as an absolute path read on the centre.
    log_path
        File the ``flwr run`` output is appended to.
    stream
        Follow the run's log until it ends (``--stream``); otherwise
        ``flwr run`` returns once submitted and the status is polled.
    timeout_s
        Seconds allowed for ``flwr run``, then again for the run to reach a
        ``finished`` status; after the second wait the last status seen is
        returned.
    on_line
        Called with each output line (without its newline), e.g. to echo it.
    resume_run_dir
        Run folder of an interrupted run to continue; ``None`` starts a new
        run.

    Returns
    -------
    RunOutcome
        The run id and Flower's final status (``finished:completed`` on
        success).

    Raises
    ------
    DeploymentError
        If the run could not be submitted or did not end within ``timeout_s``.
    """
    command = run_arguments(
        app_dir, study_config, stream=stream, resume_run_dir=resume_run_dir
    )
    _run_logged(command, flwr_home, log_path, timeout_s, on_line)
    found = _STARTED_RUN.findall(log_path.read_text(errors="replace"))
    if not found:
        raise DeploymentError(
            "flwr run",
            [
                Problem(
                    "run-not-started",
                    "the run was not started; check that the SuperLink is "
                    "running at the address given and that the CA certificate "
                    f"is the study's. `flwr run` said:\n{_tail(log_path)}",
                )
            ],
        )
    run_id = found[-1]
    return RunOutcome(run_id, _wait_for_end(flwr_home, run_id, timeout_s))


def _tail(path: Path, lines: int = 8) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _run_logged(
    command: Sequence[str],
    flwr_home: Path,
    log_path: Path,
    timeout_s: float,
    on_line: Callable[[str], None] | None,
) -> None:
    process = subprocess.Popen(
        list(command),
        env=flower_env(flwr_home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    # A reader blocked on a silent stream cannot check the clock itself.
    watchdog = threading.Timer(timeout_s, process.kill)
    watchdog.start()
    try:
        assert process.stdout is not None  # stdout=PIPE
        with log_path.open("a") as log:
            for line in process.stdout:
                log.write(line)
                if on_line is not None:
                    on_line(line.rstrip("\n"))
        process.wait()
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
    if process.returncode < 0:
        raise DeploymentError(
            "flwr run",
            [Problem("run-timeout", f"no end after {timeout_s:.0f} s; see {log_path}")],
        )


def _wait_for_end(flwr_home: Path, run_id: str, timeout_s: float) -> str:
    # Without --stream, `flwr run` returns once the run is submitted.
    deadline = time.monotonic() + timeout_s
    while True:
        reply = _flwr_json(["list", "--run-id", run_id], flwr_home, 60.0)
        status = next(
            (
                str(r["status"])
                for r in reply.get("runs", [])
                if str(r["run-id"]) == run_id
            ),
            "unknown",
        )
        if status.startswith("finished") or time.monotonic() > deadline:
            return status
        time.sleep(2.0)
