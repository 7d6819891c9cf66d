"""A SuperLink and SuperNodes on loopback addresses, for deployment tests.

Also the fault injection the fault tests and ``bench/deployment_faults.py``
share: stop a site while it holds a round's training request, crash the
centre (SuperLink, SuperExec and ServerApp at once) and bring either back.
"""

from __future__ import annotations

import argparse
import csv
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from fedbone.cli.deployment import run_server
from fedbone.federation.deployment.control import (
    run_arguments,
    wait_for_online_nodes,
)
from fedbone.federation.deployment.processes import (
    FlowerProcess,
    kill_tree,
    start_flower_process,
    wait_until_listening,
)
from fedbone.federation.deployment.runtime import (
    SuperLinkSpec,
    SuperNodeSpec,
    flower_env,
    superlink_arguments,
    supernode_arguments,
    write_connection_config,
)
from fedbone.security.pki import StudyPki

FLOWER_BINARIES = ("flower-superlink", "flower-supernode", "flower-superexec", "flwr")
#: What a SuperNode logs when it takes a request (``train``, ``evaluate``, ...).
RECEIVING = "Receiving: {kind} message"
PROJECT_DIR = Path(__file__).resolve().parents[2]


def approve_with_cli(study: Path, site_configs: Sequence[Path]) -> None:
    """Each hospital approves ``study`` as its officer would (the CLI)."""
    fedbone = str(Path(sys.executable).parent / "fedbone")
    for config in site_configs:
        subprocess.run(
            [
                *(fedbone, "site", "approve", str(study)),
                *("--config", str(config), "--by", "deployment-test"),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )


def missing_binaries() -> list[str]:
    scripts = Path(sys.executable).parent
    return [name for name in FLOWER_BINARIES if not (scripts / name).exists()]


def free_address(host: str) -> str:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return f"{host}:{probe.getsockname()[1]}"


def count_in_log(path: Path, needle: str) -> int:
    if not path.is_file():
        return 0
    return path.read_text(errors="replace").count(needle)


def wait_for_count(path: Path, needle: str, count: int, timeout_s: float) -> None:
    """Wait until ``needle`` occurs ``count`` times in the file at ``path``."""
    deadline = time.monotonic() + timeout_s
    while count_in_log(path, needle) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{needle!r} not seen {count} times in {path}")
        time.sleep(0.1)


@dataclass
class Cluster:
    root: Path
    pki: StudyPki
    superlink_address: str
    centre_home: Path
    insecure: bool = False
    #: Start sites with ``fedbone site start`` (its supervisor retries a
    #: refused activation) instead of ``flower-supernode`` directly.
    sites_via_cli: bool = False
    processes: list[FlowerProcess] = field(default_factory=list)
    superlink: FlowerProcess | None = None
    sites: dict[str, FlowerProcess] = field(default_factory=dict)
    _site_args: dict[str, tuple[str, Path]] = field(default_factory=dict)

    def start_superlink(self) -> FlowerProcess:
        (self.root / "centre").mkdir(exist_ok=True)
        spec = SuperLinkSpec(
            address=self.superlink_address,
            certificate=self.pki.server_certificate,
            key=self.pki.server_key,
            ca_certificate=self.pki.ca_certificate,
            database=self.root / "centre" / "state.db",
        )
        argv = superlink_arguments(spec)
        if self.insecure:
            argv = _plaintext_superlink(argv)
        process = self._start("superlink", argv, "centre")
        wait_until_listening(self.superlink_address, process, timeout_s=60.0)
        self.superlink = process
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
        argv = supernode_arguments(spec)
        if self.insecure:
            argv = _plaintext_supernode(argv)
        elif self.sites_via_cli:
            argv = _site_start_command(spec)
        process = self._start(f"site {site}", argv, f"site-{site}")
        self.sites[site] = process
        self._site_args[site] = (host, site_config)
        return process

    def site_log(self, site: str) -> Path:
        return self.root / "logs" / f"site-{site}.log"

    def stop_site_in_round(
        self,
        site: str,
        round_number: int,
        received_before: int,
        timeout_s: float,
        *,
        crash: bool = False,
    ) -> None:
        """Stop ``site`` once it has taken training request ``round_number``.

        ``received_before``: training requests it had taken before the run.
        By default the SuperNode gets SIGTERM (it tells the SuperLink it
        leaves) and its ClientApp, busy with the round, is killed with it;
        ``crash`` SIGKILLs the whole site at once, as a power cut would, so
        the SuperLink learns nothing until the heartbeat lapses.
        """
        wait_for_count(
            self.site_log(site),
            RECEIVING.format(kind="train"),
            received_before + round_number,
            timeout_s,
        )
        if crash:
            kill_tree(self.sites[site])
        else:
            self.sites[site].stop(timeout_s=10.0)

    def restart_site(self, site: str) -> FlowerProcess:
        """Start ``site`` again: same key, same site config, same host."""
        host, site_config = self._site_args[site]
        return self.start_site(site, host, site_config)

    def start_federation(
        self, site_hosts: Mapping[str, str], site_configs: Sequence[Path]
    ) -> None:
        """SuperLink, sites registered with ``fedbone server register``, sites.

        ``site_configs`` are in the order of the sorted site ids; returns once
        every site is online.
        """
        self.start_superlink()
        sites = sorted(site_hosts)
        if not self.insecure:
            register = argparse.Namespace(
                server_command="register",
                pki=self.pki.root,
                superlink=self.superlink_address,
                site=sites,
            )
            assert run_server(register) == 0
        for site, config in zip(sites, site_configs, strict=True):
            self.start_site(site, site_hosts[site], config)
        wait_for_online_nodes(self.centre_home, len(sites), timeout_s=120.0)

    def restart_exited_sites(self) -> list[str]:
        exited = [site for site, process in self.sites.items() if not process.running]
        for site in exited:
            self.restart_site(site)
        return exited

    def start_run(
        self, study: Path, resume_run_dir: Path | None = None
    ) -> FlowerProcess:
        """``flwr run --stream`` as a process of the cluster (killed on exit)."""
        argv = run_arguments(PROJECT_DIR, study, resume_run_dir=resume_run_dir)
        process = start_flower_process(
            "flwr run", argv, self.root / "logs" / "flwr-run.log", self.cli_env()
        )
        self.processes.append(process)
        return process

    def cli_env(self) -> dict[str, str]:
        return flower_env(self.centre_home)

    def start_raw(self, name: str, argv: list[str]) -> FlowerProcess:
        return self._start(name, argv, name)

    def _start(self, name: str, argv: list[str], home: str) -> FlowerProcess:
        env = flower_env(self.root / "homes" / home)
        # The fault injection watches the logs: they must not sit in a buffer.
        env["PYTHONUNBUFFERED"] = "1"
        process = start_flower_process(
            name, argv, self.root / "logs" / f"{home}.log", env
        )
        self.processes.append(process)
        return process


def _site_start_command(spec: SuperNodeSpec) -> list[str]:
    fedbone = str(Path(sys.executable).parent / "fedbone")
    return [
        fedbone,
        "site",
        "start",
        "--config",
        str(spec.site_config),
        "--superlink",
        spec.superlink,
        "--pki-ca",
        str(spec.ca_certificate),
        "--key",
        str(spec.private_key),
        "--runtime-address",
        spec.runtime_address,
    ]


def _without(argv: list[str], flags_with_value: tuple[str, ...]) -> list[str]:
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in flags_with_value:
            skip = True
        else:
            kept.append(arg)
    return kept


def _plaintext_superlink(argv: list[str]) -> list[str]:
    # Benchmark only: no TLS means no SuperNode authentication either.
    kept = _without(argv, ("--ssl-certfile", "--ssl-keyfile", "--ssl-ca-certfile"))
    kept.remove("--enable-supernode-auth")
    return [kept[0], "--insecure", *kept[1:]]


def _plaintext_supernode(argv: list[str]) -> list[str]:
    kept = _without(argv, ("--root-certificates", "--auth-supernode-private-key"))
    return [kept[0], "--insecure", *kept[1:]]


@contextmanager
def loopback_cluster(
    root: Path, pki: StudyPki, *, insecure: bool = False, sites_via_cli: bool = False
) -> Iterator[Cluster]:
    """Yield a cluster whose every started process is stopped on exit.

    ``insecure`` (benchmarks only) runs SuperLink and SuperNodes without TLS
    and without SuperNode authentication.
    """
    address = free_address("127.0.0.1")
    centre_home = root / "homes" / "centre-cli"
    write_connection_config(centre_home, address, pki.ca_certificate)
    if insecure:
        (centre_home / "config.toml").write_text(
            '[superlink]\ndefault = "fedbone"\n\n'
            f'[superlink.fedbone]\naddress = "{address}"\ninsecure = true\n'
        )
    cluster = Cluster(
        root, pki, address, centre_home, insecure=insecure, sites_via_cli=sites_via_cli
    )
    try:
        yield cluster
    finally:
        # Sites first, so none is left retrying against a stopped SuperLink.
        for process in reversed(cluster.processes):
            if process.running:
                process.stop(timeout_s=10.0)


def make_training_site(site_dir: Path) -> None:
    """Turn a phantom validate-only site (all ``test``) into a training site.

    The phantom profiles train at A and B only; fault tests need three
    training sites, so C's scans are split like A's (one positive and the
    first negatives to ``train``, two negatives to ``val``, the rest ``test``).
    """
    config_path = site_dir / "site.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["site"]["role"] = "train"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    manifest = site_dir / "manifest.csv"
    with manifest.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields = list(reader.fieldnames or [])
        rows = list(reader)
    negatives = [row for row in rows if row["label_bm"] == "0"]
    positives = [row for row in rows if row["label_bm"] != "0"]
    for row in rows:
        row["split"] = "test"
    for row in positives[:1] + negatives[: len(negatives) - 7]:
        row["split"] = "train"
    for row in negatives[len(negatives) - 7 : len(negatives) - 5]:
        row["split"] = "val"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
