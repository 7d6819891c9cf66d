"""A SuperLink and SuperNodes on loopback addresses, for deployment tests."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fedbone.federation.deployment import (
    FlowerProcess,
    SuperLinkSpec,
    SuperNodeSpec,
    flower_env,
    start_flower_process,
    superlink_arguments,
    supernode_arguments,
    wait_until_listening,
    write_connection_config,
)
from fedbone.security.pki import StudyPki

FLOWER_BINARIES = ("flower-superlink", "flower-supernode", "flower-superexec", "flwr")


def missing_binaries() -> list[str]:
    scripts = Path(sys.executable).parent
    return [name for name in FLOWER_BINARIES if not (scripts / name).exists()]


def free_address(host: str) -> str:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return f"{host}:{probe.getsockname()[1]}"


@dataclass
class Cluster:
    root: Path
    pki: StudyPki
    superlink_address: str
    centre_home: Path
    processes: list[FlowerProcess] = field(default_factory=list)

    def start_superlink(self) -> FlowerProcess:
        (self.root / "centre").mkdir(exist_ok=True)
        spec = SuperLinkSpec(
            address=self.superlink_address,
            certificate=self.pki.server_certificate,
            key=self.pki.server_key,
            ca_certificate=self.pki.ca_certificate,
            database=self.root / "centre" / "state.db",
        )
        process = self._start("superlink", superlink_arguments(spec), "centre")
        wait_until_listening(self.superlink_address, process, timeout_s=60.0)
        return process

    def start_site(
        self, site: str, host: str, site_config: Path, max_wait_s: float | None = None
    ) -> FlowerProcess:
        spec = SuperNodeSpec(
            superlink=self.superlink_address,
            ca_certificate=self.pki.ca_certificate,
            private_key=self.pki.site_private_key(site),
            site_config=site_config,
            runtime_address=free_address(host),
            max_wait_s=max_wait_s,
        )
        return self._start(f"site {site}", supernode_arguments(spec), f"site-{site}")

    def start_raw(self, name: str, argv: list[str]) -> FlowerProcess:
        return self._start(name, argv, name)

    def _start(self, name: str, argv: list[str], home: str) -> FlowerProcess:
        process = start_flower_process(
            name,
            argv,
            self.root / "logs" / f"{home}.log",
            flower_env(self.root / "homes" / home),
        )
        self.processes.append(process)
        return process


@contextmanager
def loopback_cluster(root: Path, pki: StudyPki) -> Iterator[Cluster]:
    """Yield a cluster whose every started process is stopped on exit."""
    address = free_address("127.0.0.1")
    centre_home = root / "homes" / "centre-cli"
    write_connection_config(centre_home, address, pki.ca_certificate)
    cluster = Cluster(root, pki, address, centre_home)
    try:
        yield cluster
    finally:
        # Sites first, so none is left retrying against a stopped SuperLink.
        for process in reversed(cluster.processes):
            process.stop(timeout_s=10.0)
