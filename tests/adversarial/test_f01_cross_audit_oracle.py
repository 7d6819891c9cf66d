"""Finding 1 (critical): cross-audit was a distance oracle over a site's scans.

``query.cross_audit`` audited whatever images the centre sent and replied with
closest-pair and nearest-MSE figures: nudging one pixel per request recovered
a training scan. Now a site audits only a batch that a peer it lists in
``policy.cross_audit_peers`` signed (images, class ids, run and producer
covered by the signature), and the reply is the verdict bits only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from adversary import egress_entries, message, send, write_site
from tiny_caches import build_toy_cache

from fedbone.data.cache import SiteCache
from fedbone.federation.egress.guard import SiteTaskError
from fedbone.federation.records import arrays_to_record
from fedbone.generative.release_signature import sign_release
from fedbone.security.site_secret import (
    SiteSecret,
    create_site_secret,
    write_public_key,
)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_toy_cache(tmp_path_factory.mktemp("toy"), count=30).cache_dir


@pytest.fixture
def peer(tmp_path: Path) -> tuple[SiteSecret, Path]:
    """Site A's secret, and its public key as the auditing site holds it."""
    secret = create_site_secret(tmp_path / "peer" / "site-secret.key")
    return secret, write_public_key(secret, tmp_path / "keys" / "A.pem")


def _training_scan(cache_dir: Path) -> np.ndarray:
    cache = SiteCache.open(cache_dir)
    return np.asarray(cache.images[int(cache.indices("train")[0])], np.float32)[None]


def _audit_request(
    images: np.ndarray, signature: str = "", run: str = "study-1"
) -> object:
    class_ids = np.zeros(len(images), dtype=np.int64)
    synthetic = arrays_to_record(
        {"images": images.astype(np.float16), "class-ids": class_ids}
    )
    return message(
        "query.cross_audit",
        "synthesize",
        {"synthetic": synthetic},
        **{"released-by": "A", "release-signature": signature, "run-name": run},
    )


def test_unsigned_images_chosen_by_the_centre_are_never_audited(
    tmp_path: Path, cache_dir: Path, peer: tuple[SiteSecret, Path]
) -> None:
    # Prepare: the centre sends (a nudged copy of) one of the site's scans
    site = write_site(
        tmp_path / "site", cache_dir, policy={"cross_audit_peers": {"A": str(peer[1])}}
    )
    probe = _training_scan(cache_dir)
    probe[0, 3, 3] += 0.01

    # Execute
    with pytest.raises(SiteTaskError, match="unverified-images"):
        send(_audit_request(probe), site)

    # Assert: nothing but the refusal left; it is logged
    [entry] = egress_entries(site)
    assert entry["verdict"] == "error" and "unverified-images" in entry["reason"]


def test_a_site_without_that_peer_refuses_even_signed_images(
    tmp_path: Path, cache_dir: Path, peer: tuple[SiteSecret, Path]
) -> None:
    site = write_site(tmp_path / "site", cache_dir)
    images = np.random.default_rng(0).random((2, 32, 16)).astype(np.float16)
    signature = sign_release(peer[0], "A", "study-1", images, np.zeros(2))

    with pytest.raises(SiteTaskError, match="unknown-peer"):
        send(_audit_request(images, signature), site)


def test_a_signed_release_gets_verdict_bits_and_nothing_else(
    tmp_path: Path, cache_dir: Path, peer: tuple[SiteSecret, Path]
) -> None:
    # Prepare: A's genuine release, signed for this run
    site = write_site(
        tmp_path / "site", cache_dir, policy={"cross_audit_peers": {"A": str(peer[1])}}
    )
    images = np.random.default_rng(1).random((3, 32, 16)).astype(np.float16)
    signature = sign_release(peer[0], "A", "study-1", images, np.zeros(3))

    # Execute
    reply = send(_audit_request(images, signature), site)

    # Assert: one bit per image, no distances, no summary
    assert set(reply.content) == {"verdicts"}
    passed = reply.content.array_records["verdicts"]["passed"].numpy()
    assert passed.shape == (3,) and set(np.unique(passed)) <= {0, 1}


@pytest.mark.parametrize("tamper", ["one-pixel", "other-run", "subset"])
def test_a_signed_release_altered_in_any_way_is_refused(
    tmp_path: Path, cache_dir: Path, peer: tuple[SiteSecret, Path], tamper: str
) -> None:
    # Prepare: a genuine signature, reused on something else
    site = write_site(
        tmp_path / "site", cache_dir, policy={"cross_audit_peers": {"A": str(peer[1])}}
    )
    images = np.random.default_rng(2).random((3, 32, 16)).astype(np.float16)
    signature = sign_release(peer[0], "A", "study-1", images, np.zeros(3))
    run = "study-1"
    if tamper == "one-pixel":
        images = images.copy()
        images[0, 5, 5] += np.float16(0.01)
    elif tamper == "other-run":
        run = "study-2"
    else:
        images = images[:2]

    # Execute / Assert
    with pytest.raises(SiteTaskError, match="unverified-images"):
        send(_audit_request(images, signature, run=run), site)
