"""Flower's deployment runtime for fedbone: how SuperLink and SuperNodes run.

The command lines, environment and connection settings; starting and stopping
the processes is :mod:`fedbone.federation.deployment.processes`, talking to a
running SuperLink (keys, nodes, runs) :mod:`fedbone.federation.deployment.control`.

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

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from fedbone.errors import Problem, ProblemsError

__all__ = [
    "CONNECTION_NAME",
    "DeploymentError",
    "SuperLinkSpec",
    "SuperNodeSpec",
    "flower_env",
    "split_address",
    "superlink_arguments",
    "supernode_arguments",
    "write_connection_config",
]

#: Name of the SuperLink connection fedbone writes into ``config.toml``.
CONNECTION_NAME = "fedbone"


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
    """Write ``$FLWR_HOME/config.toml`` naming the SuperLink (TLS, study CA).

    Parameters
    ----------
    flwr_home
        ``FLWR_HOME`` folder, created if needed; an existing ``config.toml``
        is overwritten.
    superlink
        The centre's SuperLink address, ``HOST:PORT``.
    ca_certificate
        The study CA certificate the SuperLink's TLS certificate must chain to.

    Returns
    -------
    Path
        The written ``config.toml``.
    """
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
