"""``fedbone site init``: the site secret (0600) and its public signing key."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from adversary import write_site

from fedbone.cli.main import main
from fedbone.security.site_secret import load_public_key, load_site_secret


def test_init_creates_an_owner_only_secret_and_its_public_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    site = write_site(tmp_path / "site", tmp_path / "cache")

    # Execute
    code = main(["site", "init", "--config", str(site)])

    # Assert
    secret_path = tmp_path / "site" / "site-secret.key"
    assert code == 0
    assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600
    public = load_public_key(tmp_path / "site" / "site-signing.pem")
    assert public.public_bytes_raw() == (
        load_site_secret(secret_path).public_key().public_bytes_raw()
    )
    assert "created" in capsys.readouterr().out


def test_init_again_keeps_the_secret(tmp_path: Path) -> None:
    site = write_site(tmp_path / "site", tmp_path / "cache")
    main(["site", "init", "--config", str(site)])
    before = (tmp_path / "site" / "site-secret.key").read_bytes()

    main(["site", "init", "--config", str(site)])

    assert (tmp_path / "site" / "site-secret.key").read_bytes() == before
