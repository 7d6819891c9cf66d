"""Issue #17, finding 12 (bundle and PKI parts): a zip-bomb FAB, open PKI folders.

A FAB member that inflates past the bound is refused from the zip's central
directory before Flower extracts anything; the study PKI's folders are
owner-only whatever the umask.
"""

from __future__ import annotations

import io
import os
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from fedbone.federation.deployment.app_pinning import (
    AppNotAllowedError,
    FabLimits,
    installed_package_dirs,
)
from fedbone.federation.deployment.pinned_clientapp import pinned_install_from_fab
from fedbone.security.pki import create_study_pki

BOMB_BYTES = 128 << 20


def _pyproject() -> bytes:
    config = {
        "project": {"name": "fedbone", "version": "0.1.0"},
        "tool": {"flwr": {"app": {"components": {"clientapp": "sites.app:app"}}}},
    }
    return tomli_w.dumps(config).encode()


def _zip_bomb_fab(member_bytes: int) -> bytes:
    """A FAB with a ``.yaml`` member of zeros, deflated in 1 MiB chunks."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("pyproject.toml", _pyproject())
        member = zipfile.ZipInfo("configs/simulation.yaml")
        member.compress_type = zipfile.ZIP_DEFLATED
        with archive.open(member, "w", force_zip64=True) as handle:
            chunk = bytes(1 << 20)
            for _ in range(member_bytes // len(chunk)):
                handle.write(chunk)
    return buffer.getvalue()


@pytest.fixture
def umask_000() -> Iterator[None]:
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.timeout(60)
def test_a_zip_bomb_member_is_refused_before_flower_extracts_it(
    tmp_path: Path,
) -> None:
    # Prepare: 128 MiB of zeros packed into a few hundred KiB, in a member the
    # code check never inflates (inert data); Flower would extract all of it.
    fab = _zip_bomb_fab(BOMB_BYTES)
    limits = FabLimits()
    extracted: list[Any] = []

    def flower_install(fab_file: bytes, **options: Any) -> Path:
        extracted.append(options)
        return tmp_path

    install = pinned_install_from_fab(flower_install, installed_package_dirs())

    # Execute
    with pytest.raises(AppNotAllowedError) as refused:
        install(fab, install_dir=tmp_path, skip_prompt=True)

    # Assert
    assert len(fab) < 1 << 20 < limits.max_member_bytes < BOMB_BYTES
    assert refused.value.codes == ["member-too-large", "fab-too-large"]
    assert refused.value.problems[0].where == "configs/simulation.yaml"
    assert f"unpacks to {BOMB_BYTES} bytes" in str(refused.value)
    assert extracted == []
    assert list(tmp_path.iterdir()) == []


def test_pki_folders_are_owner_only_under_umask_000(
    tmp_path: Path, umask_000: None
) -> None:
    # Prepare: the PKI goes two levels below an existing folder.
    root = tmp_path / "study" / "pki"

    # Execute
    pki = create_study_pki(
        root, study="bone", server_hosts=["superlink.example.org"], sites=["A", "B"]
    )

    # Assert
    folders = [tmp_path / "study", root, root / "sites", root / "sites" / "A"]
    folders.append(root / "sites" / "B")
    keys = [pki.ca_key, pki.server_key, pki.site_private_key("A")]
    assert {str(f.relative_to(tmp_path)): _mode(f) for f in folders} == {
        str(f.relative_to(tmp_path)): 0o700 for f in folders
    }
    assert [_mode(k) for k in keys] == [0o600] * 3
    assert not _mode(pki.ca_certificate) & 0o022
