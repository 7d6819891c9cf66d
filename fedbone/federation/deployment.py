"""Run fedbone over Flower's deployment runtime: SuperLink, SuperNodes, runs.

What Flower 1.42 needs, and why the arguments below look the way they do:

- ``flower-superlink`` serves the Fleet API (SuperNodes), the Control API
  (``flwr`` CLI) and the runtime API on **one** HTTPS address (``--host``/
  ``--port``). With the default ``--isolation subprocess`` it starts
  ``flower-superexec``, found on ``PATH``, which connects back to that address
  with the CA certificate; the server certificate must therefore also name the
  address the SuperLink binds to.
- ``--enable-supernode-auth``: only SuperNodes whose OpenSSH public key was
  registered with ``flwr supernode register`` may activate; others are
  refused (``ApiError 2004``; the SuperNode exits with code 305).
- ``--disable-runtime-dependency-installation``: the SuperLink never runs
  ``uv sync`` on a submitted app; the SuperNode installs nothing unless started
  with ``--allow-runtime-dependency-installation``, which fedbone never passes.
  Sites and centre run the fedbone installed in their own environment.
- ``flwr`` reads its SuperLink connection from ``$FLWR_HOME/config.toml``;
  every call here runs with its own ``FLWR_HOME`` so nothing touches ``~``.
- Each SuperNode serves a local runtime API (``--host``/``--port``) for its
  ClientApp processes; several SuperNodes on one machine need distinct ones.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedbone.errors import Problem, ProblemsError

__all__ = [
    "CONNECTION_NAME",
    "DeploymentError",
    "FlowerProcess",
    "RunOutcome",
    "SuperLinkSpec",
    "SuperNodeSpec",
    "flower_env",
    "online_node_ids",
    "register_site_keys",
    "run_arguments",
    "split_address",
    "start_flower_process",
    "submit_run",
    "superlink_arguments",
    "supernode_arguments",
    "wait_for_online_nodes",
    "wait_until_listening",
    "write_connection_config",
]

logger = logging.getLogger(__name__)

#: Name of the SuperLink connection fedbone writes into ``config.toml``.
CONNECTION_NAME = "fedbone"
_STARTED_RUN = re.compile(r"started run (\d+)")


class DeploymentError(ProblemsError):
    """A SuperLink, SuperNode or run that could not be started or finished."""

    kind = "deployment"


def split_address(address: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT`` too) into host and port.

    Raises
    ------
    DeploymentError
        If the port is missing or not a number.
    """
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise DeploymentError(
            address,
            [Problem("bad-address", "expected HOST:PORT, e.g. 10.0.0.5:9093")],
        )
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class SuperLinkSpec:
    """How the centre's SuperLink runs.

    Parameters
    ----------
    address
        ``HOST:PORT`` it binds (Fleet, Control and runtime APIs).
    certificate, key, ca_certificate
        Server TLS certificate and key, and the study CA.
    database
        SQLite file of the persistent state (runs, nodes, registered keys).
    """

    address: str
    certificate: Path
    key: Path
    ca_certificate: Path
    database: Path


@dataclass(frozen=True)
class SuperNodeSpec:
    """How one hospital's SuperNode runs.

    Parameters
    ----------
    superlink
        ``HOST:PORT`` of the centre's SuperLink.
    ca_certificate
        Study CA that signed the SuperLink's certificate.
    private_key
        The site's OpenSSH EC private key (SuperNode authentication).
    site_config
        The site YAML, passed as ``--node-config site-config=...``.
    runtime_address
        ``HOST:PORT`` of the SuperNode's local runtime API for its ClientApps.
    max_wait_s
        Give up connecting after this long (``None``: retry for ever).
    """

    superlink: str
    ca_certificate: Path
    private_key: Path
    site_config: Path
    runtime_address: str = "127.0.0.1:9094"
    max_wait_s: float | None = None


def superlink_arguments(spec: SuperLinkSpec) -> list[str]:
    """Return the ``flower-superlink`` command line for ``spec``."""
    host, port = split_address(spec.address)
    return [
        "flower-superlink",
        "--ssl-certfile",
        str(spec.certificate.resolve()),
        "--ssl-keyfile",
        str(spec.key.resolve()),
        "--ssl-ca-certfile",
        str(spec.ca_certificate.resolve()),
        "--enable-supernode-auth",
        "--disable-runtime-dependency-installation",
        "--database",
        str(spec.database.resolve()),
        "--host",
        host,
        "--port",
        str(port),
    ]


def supernode_arguments(spec: SuperNodeSpec) -> list[str]:
    """Return the ``flower-supernode`` command line for ``spec``."""
    host, port = split_address(spec.runtime_address)
    site_config = str(spec.site_config.resolve()).replace('"', '\\"')
    argv = [
        "flower-supernode",
        "--superlink",
        spec.superlink,
        "--root-certificates",
        str(spec.ca_certificate.resolve()),
        "--auth-supernode-private-key",
        str(spec.private_key.resolve()),
        "--node-config",
        f'site-config="{site_config}"',
        "--host",
        host,
        "--port",
        str(port),
    ]
    if spec.max_wait_s is not None:
        argv += ["--max-wait-time", str(spec.max_wait_s)]
    return argv


def flower_env(flwr_home: Path) -> dict[str, str]:
    """Environment for Flower commands: this Python's scripts first, own home.

    The SuperLink and SuperNode start ``flower-superexec`` by name, so the
    environment's ``bin`` folder must be on ``PATH`` even when fedbone runs
    from a virtual environment that is not activated.
    """
    env = dict(os.environ)
    scripts = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([scripts, env.get("PATH", "")])
    env["FLWR_HOME"] = str(flwr_home)
    return env


def write_connection_config(
    flwr_home: Path, superlink: str, ca_certificate: Path
) -> Path:
    """Write ``$FLWR_HOME/config.toml`` naming the SuperLink (TLS, study CA)."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    path = flwr_home / "config.toml"
    path.write_text(
        "[superlink]\n"
        f'default = "{CONNECTION_NAME}"\n\n'
        f"[superlink.{CONNECTION_NAME}]\n"
        f'address = "{superlink}"\n'
        f'root-certificates = "{ca_certificate.resolve()}"\n'
    )
    return path


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
        pids = [self.process.pid, *_descendants(self.process.pid)]
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


def _descendants(root: int) -> list[int]:
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


def start_flower_process(
    name: str, argv: Sequence[str], log_path: Path, env: Mapping[str, str]
) -> FlowerProcess:
    """Start ``argv`` in a new session, stdout and stderr into ``log_path``."""
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
