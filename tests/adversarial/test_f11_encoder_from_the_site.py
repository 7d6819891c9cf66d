"""Finding 11: the study named a TorchScript file that the site loaded.

Loading TorchScript runs code chosen by whoever wrote the file; a path in the
study's ``gan-settings`` let the centre choose it, outside the app pin. The
site now ignores any path the centre sends and loads only a file listed in
its own ``policy.encoders`` whose sha256 is the one the study names.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
from adversary import egress_entries, message, send, write_cohort_cache, write_site
from tiny_study import tiny_gan_settings

from fedbone.config.site import load_site_config
from fedbone.federation.egress.guard import SiteTaskError
from fedbone.federation.study_messages import GAN_SETTINGS, settings_json
from fedbone.site.policy import PolicyRefused, resolve_encoder


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cohort_cache(tmp_path_factory.mktemp("cohort"), n_patients=12)


def _encoder_file(folder: Path, content: bytes) -> tuple[Path, str]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "encoder.pt"
    path.write_bytes(content)
    return path, hashlib.sha256(content).hexdigest()


def test_a_gan_request_naming_the_centres_file_is_refused(
    tmp_path: Path, cache_dir: Path
) -> None:
    # Prepare: the centre's file and its true digest; the site lists nothing
    evil, digest = _encoder_file(tmp_path / "centre", b"centre code")
    site = write_site(tmp_path / "site", cache_dir)
    gan = dataclasses.replace(
        tiny_gan_settings(steps=2),
        encoder="torchscript",
        encoder_path=str(evil),
        encoder_sha256=digest,
    )
    attack = message("query.gan_train", "gan", **{GAN_SETTINGS: settings_json(gan)})

    # Execute
    with pytest.raises(SiteTaskError, match="encoder-not-approved"):
        send(attack, site)

    # Assert: refused before any training; logged
    assert "encoder-not-approved" in egress_entries(site)[-1]["reason"]
    assert not (tmp_path / "site" / "work" / "gan").exists()


def test_the_sites_own_listed_file_is_used_whatever_path_was_sent(
    tmp_path: Path, cache_dir: Path
) -> None:
    # Prepare: the site lists its copy; the centre sends another path
    mine, digest = _encoder_file(tmp_path / "site-files", b"the site's inception")
    site = write_site(tmp_path / "site", cache_dir, policy={"encoders": [str(mine)]})
    gan = dataclasses.replace(
        tiny_gan_settings(steps=2),
        encoder="torchscript",
        encoder_path="/tmp/elsewhere.pt",
        encoder_sha256=digest,
    )

    # Execute
    resolved = resolve_encoder(load_site_config(site), gan)

    # Assert
    assert resolved.encoder_path == str(mine)


def test_a_listed_file_with_another_digest_is_not_used(
    tmp_path: Path, cache_dir: Path
) -> None:
    mine, _ = _encoder_file(tmp_path / "site-files", b"the site's inception")
    site = write_site(tmp_path / "site", cache_dir, policy={"encoders": [str(mine)]})
    gan = dataclasses.replace(
        tiny_gan_settings(steps=2), encoder="torchscript", encoder_sha256="0" * 64
    )

    with pytest.raises(PolicyRefused, match="encoder-not-approved"):
        resolve_encoder(load_site_config(site), gan)
