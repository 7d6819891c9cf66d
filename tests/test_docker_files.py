"""The container files install exactly as the Makefile does and stay locked down."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
DOCKERFILES = ["site.Dockerfile", "site-cuda.Dockerfile", "centre.Dockerfile"]
TORCH_WHEEL = {
    "site.Dockerfile": '"torch==${TORCH_VERSION}+cpu"',
    "site-cuda.Dockerfile": '"torch==${TORCH_VERSION}"',
    "centre.Dockerfile": '"torch==${TORCH_VERSION}+cpu"',
}


def _makefile_torch_version() -> str:
    found = re.search(
        r"^TORCH_VERSION \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M
    )
    assert found is not None, "Makefile no longer pins TORCH_VERSION"
    return found.group(1)


def _pip_installs(dockerfile: str) -> list[str]:
    """The `pip install` commands, in order, continuation lines joined."""
    text = (DOCKER / dockerfile).read_text().replace("\\\n", " ")
    return [
        " ".join(part.split())
        for line in text.splitlines()
        if line.startswith("RUN")
        for part in line[3:].split("&&")
        if "pip install" in part
    ]


def _compose() -> dict[str, Any]:
    loaded = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_pins_the_makefiles_torch_then_installs_the_project(
    dockerfile: str,
) -> None:
    text = (DOCKER / dockerfile).read_text()

    installs = _pip_installs(dockerfile)

    assert f"ARG TORCH_VERSION={_makefile_torch_version()}\n" in text
    assert installs[0] == "python -m pip install --upgrade pip"
    assert installs[1].startswith(f"python -m pip install {TORCH_WHEEL[dockerfile]}")
    assert installs[2:] == ["python -m pip install ."]


def test_cpu_and_cuda_site_images_differ_only_in_the_torch_wheel() -> None:
    cpu, cuda = _pip_installs("site.Dockerfile"), _pip_installs("site-cuda.Dockerfile")

    different = [(a, b) for a, b in zip(cpu, cuda, strict=True) if a != b]

    assert len(different) == 1 and "torch==" in different[0][0]


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_image_runs_as_a_non_root_user(dockerfile: str) -> None:
    users = re.findall(r"^USER (\S+)$", (DOCKER / dockerfile).read_text(), re.M)

    assert users and users[-1] not in ("root", "0")


def test_compose_runs_one_centre_and_three_sites_without_internet() -> None:
    compose = _compose()

    services = compose["services"]

    assert sorted(services) == ["centre", "site-a", "site-b", "site-c"]
    assert compose["networks"]["federation"]["internal"] is True
    for name, service in services.items():
        assert service["networks"] == ["federation"], name
        assert not str(service["user"]).startswith(("0:", "root")), name
        assert "ports" not in service, name


def test_compose_mounts_archives_keys_and_config_read_only() -> None:
    services = _compose()["services"]

    for name in ("site-a", "site-b", "site-c"):
        mounts = {v.split(":")[1]: v for v in services[name]["volumes"]}
        for target in ("/data", "/config/site.yaml", "/pki/ca.crt", "/pki/site.key"):
            assert mounts[target].endswith(":ro"), (name, target)
        assert not mounts["/cache"].endswith(":ro")
        assert not mounts["/work"].endswith(":ro")
        assert "--pki-ca" in services[name]["command"]
    centre = {v.split(":")[1]: v for v in services["centre"]["volumes"]}
    assert centre["/pki"].endswith(":ro")


def test_each_site_gets_its_own_key_archive_and_volumes() -> None:
    services = _compose()["services"]

    sources = [
        sorted(v.split(":")[0] for v in services[name]["volumes"])
        for name in ("site-a", "site-b", "site-c")
    ]

    shared = set(sources[0]) & set(sources[1]) & set(sources[2])
    assert shared == {"./pki/ca.crt"}
