"""A site's own secret: 32 random bytes in a 0600 file, never sent anywhere.

Two things are derived from it, each under its own label so that one use can
never stand in for another:

- **MAC keys** (HMAC-SHA256) for the site's tamper-evident files: the privacy
  ledger and the egress log carry a keyed MAC over their hash chain and head,
  so someone who can write those files but cannot read the secret cannot
  rewrite them unnoticed.
- **An Ed25519 signing key** for the site's released synthetic images: the
  site signs the digest of every batch it releases, and another site (which
  holds this site's public key in its own config, exchanged at set-up) audits
  only batches whose signature it verifies.

The secret is created at site set-up (:func:`create_site_secret`, called by
``fedbone site init`` and by the simulation's phantom sites) and loaded with
:func:`load_site_secret`, which refuses a file others may read or write.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from fedbone.errors import Problem
from fedbone.security.errors import PkiError

__all__ = [
    "PUBLIC_KEY_FILE",
    "SECRET_BYTES",
    "SiteSecret",
    "create_site_secret",
    "load_public_key",
    "load_site_secret",
    "open_site_secret",
    "verify_signature",
    "write_public_key",
]

SECRET_BYTES = 32
PUBLIC_KEY_FILE = "site-signing.pem"
"""Where ``fedbone site init`` writes the public key, beside the secret."""
_SIGNING_LABEL = b"fedbone/site-secret/ed25519-signing/v1"


def _problem(code: str, message: str, where: Path) -> PkiError:
    return PkiError(str(where), [Problem(code, message, str(where))])


@dataclass(frozen=True)
class SiteSecret:
    """The loaded secret and what is derived from it.

    Parameters
    ----------
    path
        The file it was read from.
    key
        The 32 secret bytes.
    """

    path: Path
    key: bytes

    def mac_key(self, purpose: str) -> bytes:
        """Return the HMAC key for one purpose (e.g. ``"privacy-ledger"``)."""
        label = f"fedbone/site-secret/mac/{purpose}/v1".encode()
        return hmac.new(self.key, label, hashlib.sha256).digest()

    def mac(self, purpose: str, data: bytes) -> str:
        """Return the hex HMAC-SHA256 of ``data`` under the purpose's key."""
        return hmac.new(self.mac_key(purpose), data, hashlib.sha256).hexdigest()

    def verify_mac(self, purpose: str, data: bytes, expected: str) -> bool:
        """Whether ``expected`` is the MAC of ``data`` (compared in constant time).

        Parameters
        ----------
        purpose
            Which key (``"privacy-ledger"``, ``"egress-log"``...).
        data
            The bytes the MAC covers.
        expected
            The hex MAC found in the file.
        """
        return hmac.compare_digest(self.mac(purpose, data), str(expected))

    def signing_key(self) -> Ed25519PrivateKey:
        """Return the site's Ed25519 signing key (derived, deterministic)."""
        seed = hmac.new(self.key, _SIGNING_LABEL, hashlib.sha256).digest()
        return Ed25519PrivateKey.from_private_bytes(seed)

    def public_key(self) -> Ed25519PublicKey:
        """Return the public half of :meth:`signing_key`."""
        return self.signing_key().public_key()

    def sign(self, data: bytes) -> str:
        """Sign ``data``; return the signature as 128 hex characters."""
        return self.signing_key().sign(data).hex()


def create_site_secret(path: Path) -> SiteSecret:
    """Create the site's secret file (mode 0600); refuse to overwrite one.

    Raises
    ------
    PkiError
        ``secret-exists`` when a file is already there: replacing the secret
        would orphan the MACs of the ledger and egress log.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(SECRET_BYTES)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise _problem(
            "secret-exists",
            "a site secret is already there; keep it (the ledger and egress log "
            "are sealed with it) or move it away deliberately",
            path,
        ) from None
    try:
        os.fchmod(descriptor, 0o600)
        os.write(descriptor, key.hex().encode("ascii") + b"\n")
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    return SiteSecret(path, key)


def load_site_secret(path: Path) -> SiteSecret:
    """Read the site's secret, refusing a file that others may read or write.

    Raises
    ------
    PkiError
        ``missing-secret`` (create it with ``fedbone site init``),
        ``secret-permissions`` (mode must be 0600 or stricter) or
        ``bad-secret`` (not 64 hex characters).
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise _problem(
            "missing-secret",
            "the site secret file is missing; create it once at set-up with "
            "`fedbone site init <site.yaml>` (never copy another site's)",
            path,
        ) from None
    if stat.S_IMODE(mode) & 0o077:
        raise _problem(
            "secret-permissions",
            f"mode {stat.S_IMODE(mode):04o} lets other users read or change the "
            f"secret; run `chmod 600 {path}`",
            path,
        )
    text = path.read_text(encoding="ascii", errors="replace").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != SECRET_BYTES:
        raise _problem(
            "bad-secret",
            f"expected {2 * SECRET_BYTES} hex characters; restore the file from "
            "the site's backup",
            path,
        )
    return SiteSecret(path, key)


def open_site_secret(path: Path, sealed: Sequence[Path] = ()) -> SiteSecret:
    """Load the site's secret, creating it only at a site that has sealed nothing.

    A fresh site (none of ``sealed`` exists yet: no ledger, no egress log)
    gets its secret on first use, as ``fedbone site init`` would make it. A
    site whose sealed files exist but whose secret is gone is refused: a new
    secret would let whoever deleted it rewrite those files unnoticed.

    Parameters
    ----------
    path
        The secret file (``privacy.secret`` of the site config).
    sealed
        Files sealed with the secret (the privacy ledger, the egress log).

    Raises
    ------
    PkiError
        ``missing-secret`` when sealed files exist without the secret; the
        problems of :func:`load_site_secret` otherwise.
    """
    path = Path(path)
    if not path.exists() and not any(Path(f).exists() for f in sealed):
        try:
            return create_site_secret(path)
        except PkiError:  # another process created it first
            pass
    return load_site_secret(path)


def write_public_key(secret: SiteSecret, path: Path) -> Path:
    """Write the site's public signing key (PEM) for its peers' configs."""
    pem = secret.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pem)
    return path


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Read a peer site's public signing key (PEM).

    Raises
    ------
    PkiError
        ``bad-public-key`` if the file is missing or not an Ed25519 key.
    """
    path = Path(path)
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise _problem(
            "bad-public-key", f"cannot read a PEM public key: {exc}", path
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise _problem(
            "bad-public-key",
            f"a {type(key).__name__}, not an Ed25519 key; ask the peer site for "
            "the public key `fedbone site init` wrote",
            path,
        )
    return key


def verify_signature(key: Ed25519PublicKey, signature_hex: str, data: bytes) -> bool:
    """Whether ``signature_hex`` is ``key``'s Ed25519 signature of ``data``.

    Parameters
    ----------
    key
        The signer's public key (from the verifying site's config).
    signature_hex
        The signature as sent (128 hex characters).
    data
        The bytes that were signed.
    """
    try:
        key.verify(bytes.fromhex(str(signature_hex)), data)
    except (InvalidSignature, ValueError):
        return False
    return True
