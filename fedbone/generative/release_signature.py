"""Provenance of released synthetic images: signed by the site that made them.

A cross-audit compares images with the auditing site's training scans; if the
centre could send *any* image for audit, the answer would be a distance
oracle over the auditor's scans. So the producing site signs each batch it
releases (Ed25519, with the key derived from its site secret), and an
auditing site audits only a batch whose signature verifies under the public
key it holds for that site in its own config (``policy.cross_audit_peers``).
The signature covers the producing site's id, the run's name, the images as
they travel (float16) and their class ids, so neither another image, another
run's images nor a subset can be passed off as a signed batch.
"""

from __future__ import annotations

import hashlib

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedbone.security.site_secret import SiteSecret, verify_signature

__all__ = ["release_digest", "sign_release", "verify_release"]

_LABEL = b"fedbone/released-synthetic-images/v1\0"


def release_digest(
    site_id: str, run_name: str, images: np.ndarray, class_ids: np.ndarray
) -> bytes:
    """Return the bytes a release signature covers (a SHA-256 digest).

    Parameters
    ----------
    site_id
        The producing site.
    run_name
        The run the images were released in.
    images
        The released images, ``(N, H, W)``; hashed as float16, as they travel.
    class_ids
        Their class ids, ``(N,)``; hashed as int64.
    """
    pixels = np.ascontiguousarray(images, dtype=np.float16)
    labels = np.ascontiguousarray(class_ids, dtype=np.int64)
    digest = hashlib.sha256(_LABEL)
    for part in (site_id.encode(), run_name.encode(), repr(pixels.shape).encode()):
        digest.update(len(part).to_bytes(4, "big") + part)
    digest.update(pixels.tobytes())
    digest.update(labels.tobytes())
    return digest.digest()


def sign_release(
    secret: SiteSecret,
    site_id: str,
    run_name: str,
    images: np.ndarray,
    class_ids: np.ndarray,
) -> str:
    """Sign a released batch; return the signature as 128 hex characters.

    Parameters
    ----------
    secret
        The producing site's secret (its signing key is derived from it).
    site_id, run_name, images, class_ids
        As :func:`release_digest`.
    """
    return secret.sign(release_digest(site_id, run_name, images, class_ids))


def verify_release(
    key: Ed25519PublicKey,
    signature: str,
    site_id: str,
    run_name: str,
    images: np.ndarray,
    class_ids: np.ndarray,
) -> bool:
    """Whether ``signature`` is the producing site's signature of this batch.

    Parameters
    ----------
    key
        The producing site's public key, from the auditing site's config.
    signature
        The signature that came with the batch.
    site_id, run_name, images, class_ids
        As :func:`release_digest`.
    """
    digest = release_digest(site_id, run_name, images, class_ids)
    return verify_signature(key, signature, digest)
