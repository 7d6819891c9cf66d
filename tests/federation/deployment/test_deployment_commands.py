"""Deployment command lines and CLI checks, without starting Flower.

The loopback integration tests (tests/integration) run these command lines
for real; here every choice a security officer relies on is pinned down, and
the CLI's refusals are checked where Flower's binaries are not needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fedbone.cli.main import main
from fedbone.federation.deployment import control as flower_control
from fedbone.federation.deployment.control import RunOutcome, register_site_keys
from fedbone.federation.deployment.control import (
    run_arguments as flwr_run_arguments,
)
from fedbone.federation.deployment.runtime import (
    DeploymentError,
    SuperLinkSpec,
    SuperNodeSpec,
    split_address,
    superlink_arguments,
    supernode_arguments,
)
from fedbone.security.pki import create_study_pki


def _superlink_spec(tmp_path: Path) -> SuperLinkSpec:
    return SuperLinkSpec(
        address="0.0.0.0:9092",
        certificate=tmp_path / "server.crt",
        key=tmp_path / "server.key",
        ca_certificate=tmp_path / "ca.crt",
        database=tmp_path / "state.db",
    )


def _value_after(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_the_superlink_runs_with_tls_auth_state_and_no_installs(
    tmp_path: Path,
) -> None:
    spec = _superlink_spec(tmp_path)

    argv = superlink_arguments(spec)

    assert argv[0] == "flower-superlink"
    assert "--insecure" not in argv
    assert "--enable-supernode-auth" in argv
    assert "--disable-runtime-dependency-installation" in argv
    assert _value_after(argv, "--ssl-certfile") == str(tmp_path / "server.crt")
    assert _value_after(argv, "--ssl-keyfile") == str(tmp_path / "server.key")
    assert _value_after(argv, "--ssl-ca-certfile") == str(tmp_path / "ca.crt")
    assert _value_after(argv, "--database") == str(tmp_path / "state.db")
    assert (_value_after(argv, "--host"), _value_after(argv, "--port")) == (
        "0.0.0.0",
        "9092",
    )


def test_the_supernode_authenticates_and_quotes_its_site_config(
    tmp_path: Path,
) -> None:
    config = tmp_path / 'a "quoted" folder' / "site.yaml"
    spec = SuperNodeSpec(
        superlink="centre.example.org:9092",
        ca_certificate=tmp_path / "ca.crt",
        private_key=tmp_path / "A.key",
        site_config=config,
        runtime_address="127.0.0.1:9500",
    )

    argv = supernode_arguments(spec)

    assert argv[0] == "flower-supernode"
    assert "--insecure" not in argv
    assert "--allow-runtime-dependency-installation" not in argv
    assert _value_after(argv, "--root-certificates") == str(tmp_path / "ca.crt")
    assert _value_after(argv, "--auth-supernode-private-key") == str(tmp_path / "A.key")
    assert _value_after(argv, "--node-config") == (
        'site-config="' + str(config).replace('"', '\\"') + '"'
    )
    assert "--max-wait-time" not in argv  # a site keeps trying to reconnect


def test_a_supernode_can_be_told_to_give_up(tmp_path: Path) -> None:
    spec = SuperNodeSpec(
        superlink="127.0.0.1:9092",
        ca_certificate=tmp_path / "ca.crt",
        private_key=tmp_path / "A.key",
        site_config=tmp_path / "site.yaml",
        max_wait_s=10.0,
    )

    argv = supernode_arguments(spec)

    assert _value_after(argv, "--max-wait-time") == "10.0"


@pytest.mark.parametrize(
    ("address", "expected"),
    [("10.0.0.5:9092", ("10.0.0.5", 9092)), ("[::1]:9092", ("::1", 9092))],
)
def test_addresses_split_into_host_and_port(
    address: str, expected: tuple[str, int]
) -> None:
    assert split_address(address) == expected


@pytest.mark.parametrize("address", ["centre.example.org", ":9092", "host:port"])
def test_an_address_without_a_port_is_refused(address: str) -> None:
    with pytest.raises(DeploymentError) as caught:
        split_address(address)

    assert caught.value.codes == ["bad-address"]
    assert "HOST:PORT" in str(caught.value)


def test_a_resumed_run_names_the_run_folder_in_the_run_config(
    tmp_path: Path,
) -> None:
    study = tmp_path / "study.yaml"
    run_dir = tmp_path / "runs" / "bm-1"

    fresh = flwr_run_arguments(tmp_path, study)
    resumed = flwr_run_arguments(tmp_path, study, resume_run_dir=run_dir)

    assert _value_after(fresh, "--run-config") == f'study-config="{study}"'
    assert _value_after(resumed, "--run-config") == (
        f'study-config="{study}" resume-run-dir="{run_dir}"'
    )
    assert fresh[-1] == "--stream"


def test_registering_missing_keys_lists_every_site(tmp_path: Path) -> None:
    keys = {"A": tmp_path / "A.pub", "B": tmp_path / "B.pub"}

    with pytest.raises(DeploymentError) as caught:
        register_site_keys(tmp_path / "home", keys)

    assert caught.value.codes == ["missing-key", "missing-key"]
    assert "fedbone pki add-site --site B" in str(caught.value)


def _site_yaml(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.csv").write_text("scan_id\n")
    path = folder / "site.yaml"
    path.write_text("site: {id: A}\ndata: {manifest: manifest.csv}\n")
    return path


def test_site_start_without_ca_and_key_lists_both_and_starts_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = _site_yaml(tmp_path / "site")

    code = main(
        [
            "site",
            "start",
            "--config",
            str(config),
            "--superlink",
            "127.0.0.1:9092",
            "--pki-ca",
            str(tmp_path / "ca.crt"),
            "--key",
            str(tmp_path / "A.key"),
        ]
    )

    assert code == 2
    assert caplog.text.count("missing-file") == 2
    assert "--pki-ca" in caplog.text and "--key" in caplog.text


def test_server_run_resume_passes_the_run_folder_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki = create_study_pki(
        tmp_path / "pki", study="s", server_hosts=["127.0.0.1"], sites=["A"], days=1
    )
    submitted: dict[str, Any] = {}

    def fake_submit(*args: Any, **kwargs: Any) -> RunOutcome:
        submitted.update(kwargs, args=args)
        return RunOutcome("7", "finished:completed")

    monkeypatch.setattr(flower_control, "submit_run", fake_submit)
    run_dir = tmp_path / "runs" / "bm-1"

    code = main(
        [
            "server",
            "run",
            str(tmp_path / "study.yaml"),
            "--pki",
            str(pki.root),
            "--superlink",
            "127.0.0.1:9092",
            "--resume",
            str(run_dir),
        ]
    )

    assert code == 0
    assert submitted["resume_run_dir"] == run_dir
    assert submitted["args"][2] == tmp_path / "study.yaml"
