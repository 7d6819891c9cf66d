"""Check a study's server certificate and print fingerprints people can compare.

:func:`check_server_certificate` tells, before the SuperLink starts, whether a
site reaching it at a given host will accept its TLS certificate: validity
dates, issued by the study CA, the host among its subject alternative names,
the serverAuth usage, and a private key that matches it. Every problem is
listed at once in a :class:`~fedbone.security.errors.PkiError`.
"""

from __future__ import annotations

import base64
import ipaddress
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID

from fedbone.errors import Problem
from fedbone.security.errors import PkiError

if TYPE_CHECKING:
    from fedbone.security.pki import StudyPki

__all__ = [
    "certificate_fingerprint",
    "check_server_certificate",
    "host_general_name",
    "public_key_fingerprint",
]


def check_server_certificate(
    pki: StudyPki, host: str, *, now: datetime | None = None
) -> None:
    """Check that the server certificate will be accepted by a site at ``host``.

    Parameters
    ----------
    pki
        The study PKI.
    host
        The name or address the sites use to reach the SuperLink.
    now
        Time to check validity at (default: now, UTC).

    Raises
    ------
    PkiError
        Listing every problem: missing or unreadable files, a certificate
        expired or not yet valid, not signed by this study's CA, without
        ``host`` in its SANs or the serverAuth usage, or a key that does not
        match it.
    """
    when = now or datetime.now(UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    missing = [
        Problem("missing-file", f"{path} not found; run `fedbone pki init`")
        for path in (pki.ca_certificate, pki.server_certificate, pki.server_key)
        if not path.is_file()
    ]
    PkiError.raise_if_any(pki.root, missing)
    problems: list[Problem] = []
    ca = _load_certificate(pki.ca_certificate, problems)
    leaf = _load_certificate(pki.server_certificate, problems)
    key = _load_private_key(pki.server_key, problems)
    if ca is not None:
        problems += _validity_problems(ca, when, "ca-")
        if not _is_ca(ca):
            problems.append(
                Problem(
                    "not-a-ca",
                    "the CA certificate lacks basicConstraints CA:true; "
                    "re-create the PKI with `fedbone pki init --force`",
                    str(pki.ca_certificate),
                )
            )
    if leaf is not None:
        where = str(pki.server_certificate)
        problems += _validity_problems(leaf, when, "")
        if ca is not None and not _signed_by(leaf, ca):
            problems.append(
                Problem(
                    "not-signed-by-ca",
                    f"not issued by the study CA in {pki.ca_certificate}; sites "
                    "will refuse it. Use the server.crt made with this ca.crt",
                    where,
                )
            )
        problems += _host_problems(leaf, host, where)
        if key is not None and not _same_public_key(leaf, key):
            problems.append(
                Problem(
                    "key-mismatch",
                    f"{pki.server_key} is not the private key of this "
                    "certificate; the SuperLink cannot serve TLS with them. "
                    "Copy the matching pair or re-create with --force",
                    where,
                )
            )
    PkiError.raise_if_any(pki.server_certificate, problems)


def certificate_fingerprint(path: Path) -> str:
    """Return the SHA-256 fingerprint of a PEM certificate, as colon-separated hex."""
    cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def public_key_fingerprint(path: Path) -> str:
    """Return the ``SHA256:...`` fingerprint of an OpenSSH public key, as ssh-keygen."""
    key = serialization.load_ssh_public_key(Path(path).read_bytes())
    digest = serialization.ssh_key_fingerprint(key, hashes.SHA256())
    # ``ssh-keygen -l`` prints unpadded base64; match it so people can compare.
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def host_general_name(host: str) -> x509.GeneralName:
    """Return the subject alternative name entry that names ``host``.

    Parameters
    ----------
    host
        A host name or an IP address, as the sites use to reach the SuperLink.

    Returns
    -------
    x509.GeneralName
        An IP SAN for an address, otherwise a DNS SAN with the name lower-cased.
    """
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host.lower())


# --- helpers --------------------------------------------------------------------


def _load_certificate(path: Path, problems: list[Problem]) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError as exc:
        problems.append(
            Problem(
                "unreadable-certificate", f"not a PEM certificate ({exc})", str(path)
            )
        )
        return None


def _load_private_key(path: Path, problems: list[Problem]) -> PrivateKeyTypes | None:
    try:
        return serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        problems.append(
            Problem("unreadable-key", f"not an unencrypted PEM key ({exc})", str(path))
        )
        return None


def _validity_problems(
    cert: x509.Certificate, when: datetime, prefix: str
) -> list[Problem]:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    subject = cert.subject.rfc4514_string()
    if when < start:
        return [
            Problem(
                f"{prefix}not-yet-valid",
                f"{subject} is valid only from {start:%Y-%m-%d %H:%M} UTC; "
                "check this machine's clock",
            )
        ]
    if when > end:
        return [
            Problem(
                f"{prefix}expired",
                f"{subject} expired on {end:%Y-%m-%d %H:%M} UTC; re-create it "
                "with `fedbone pki init --force` and redistribute ca.crt",
            )
        ]
    return []


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(
            cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        )
    except x509.ExtensionNotFound:
        return False


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _host_problems(cert: x509.Certificate, host: str, where: str) -> list[Problem]:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names: list[str] = [
            str(n) for n in sans.value.get_values_for_type(x509.DNSName)
        ]
        addresses = sans.value.get_values_for_type(x509.IPAddress)
    except x509.ExtensionNotFound:
        names, addresses = [], []
    problems = []
    wanted = host_general_name(host)
    if isinstance(wanted, x509.IPAddress):
        found = wanted.value in addresses
    else:
        found = wanted.value in {n.lower().rstrip(".") for n in names}
    if not found:
        listed = ", ".join([*names, *map(str, addresses)]) or "none"
        problems.append(
            Problem(
                "host-not-in-certificate",
                f"{host!r} is not among its subject alternative names ({listed}); "
                f"sites connecting to {host!r} will refuse it. Re-create with "
                f"`fedbone pki init --server-host {host} ... --force`",
                where,
            )
        )
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        server_auth = ExtendedKeyUsageOID.SERVER_AUTH in usages
    except x509.ExtensionNotFound:
        server_auth = True  # no EKU extension means any usage is allowed
    if not server_auth:
        problems.append(
            Problem(
                "not-a-server-certificate",
                "its extended key usage lacks serverAuth; re-create it with "
                "`fedbone pki init --force`",
                where,
            )
        )
    return problems


def _same_public_key(cert: x509.Certificate, key: PrivateKeyTypes) -> bool:
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    mine = key.public_key().public_bytes(der, spki)
    return mine == cert.public_key().public_bytes(der, spki)
