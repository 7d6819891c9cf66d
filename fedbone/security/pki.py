"""Create a study's PKI: CA, server TLS certificate, SuperNode keys.

One folder holds everything the coordinating centre creates::

    root/ca.crt, ca.key            study CA (EC P-384, self-signed, CA:true)
    root/server.crt, server.key    SuperLink TLS (EC P-384, serverAuth, SANs)
    root/sites/<site>/<site>.key   SuperNode authentication key (OpenSSH, P-384)
    root/sites/<site>/<site>.pub   its public key (OpenSSH line)

The formats are the ones Flower 1.42 reads: ``flower-superlink --ssl-*`` passes
the PEM bytes to gRPC; ``flower-supernode --auth-supernode-private-key`` uses
``load_ssh_private_key`` and requires an EC key; ``flwr supernode register``
uses ``load_ssh_public_key`` and requires a NIST curve. A hospital receives
``ca.crt`` and its own ``sites/<site>/`` folder, nothing else.

Every folder this module creates is owner-only (0700) and every private key
0600, whatever the umask; an existing folder others can enter is left as it
is, with a warning naming the ``chmod`` that closes it.

Checking the server certificate and the fingerprints live in
:mod:`fedbone.security.certificate_checks`; they are re-exported here.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedbone.errors import Problem
from fedbone.security.certificate_checks import (
    certificate_fingerprint,
    check_server_certificate,
    host_general_name,
    public_key_fingerprint,
)
from fedbone.security.errors import PkiError

__all__ = [
    "StudyPki",
    "add_site_keys",
    "certificate_fingerprint",
    "check_server_certificate",
    "create_study_pki",
    "public_key_fingerprint",
]

logger = logging.getLogger(__name__)

# P-384 for every key: Flower generates its own node keys on SECP384R1, and gRPC
# (BoringSSL) serves ECDSA P-384 certificates; SHA-384 matches the curve strength.
_CURVE = ec.SECP384R1
_SIGNATURE_HASH = hashes.SHA384
# Backdate notBefore so a site whose clock runs a little behind still accepts
# a certificate created seconds ago.
_CLOCK_SKEW = timedelta(minutes=5)
# Same rule as a site id in the site YAML (fedbone.config.site), so paths stay safe.
_SITE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_LOOPBACK = ("localhost", "127.0.0.1", "::1")
_PRIVATE_MODE = 0o600
_PUBLIC_MODE = 0o644
_FOLDER_MODE = 0o700


@dataclass(frozen=True)
class StudyPki:
    """The paths of one study's PKI folder (see the module docstring).

    Parameters
    ----------
    root
        The folder; every other path is inside it.
    """

    root: Path
    ca_certificate: Path
    ca_key: Path
    server_certificate: Path
    server_key: Path

    @classmethod
    def at(cls, root: Path) -> StudyPki:
        """Return the layout rooted at ``root`` (nothing is read or written)."""
        root = Path(root)
        return cls(
            root=root,
            ca_certificate=root / "ca.crt",
            ca_key=root / "ca.key",
            server_certificate=root / "server.crt",
            server_key=root / "server.key",
        )

    def site_folder(self, site: str) -> Path:
        """Return the folder handed to hospital ``site`` (with ``ca.crt``)."""
        return self.root / "sites" / site

    def site_private_key(self, site: str) -> Path:
        """OpenSSH EC private key for ``--auth-supernode-private-key``."""
        return self.site_folder(site) / f"{site}.key"

    def site_public_key(self, site: str) -> Path:
        """OpenSSH public key line for ``flwr supernode register``."""
        return self.site_folder(site) / f"{site}.pub"

    def sites(self) -> tuple[str, ...]:
        """Site ids that have both key files, sorted."""
        folder = self.root / "sites"
        if not folder.is_dir():
            return ()
        return tuple(
            sorted(
                p.name
                for p in folder.iterdir()
                if self.site_private_key(p.name).is_file()
                and self.site_public_key(p.name).is_file()
            )
        )


def create_study_pki(
    root: Path,
    *,
    study: str,
    server_hosts: Sequence[str],
    sites: Sequence[str],
    days: int = 365,
    force: bool = False,
    loopback: bool = True,
) -> StudyPki:
    """Create the study CA, the server certificate and each site's key pair.

    Parameters
    ----------
    root
        Folder to write into (created if missing).
    study
        Study name, written into the certificates' subjects.
    server_hosts
        Names and addresses the sites use to reach the SuperLink; each IP
        address becomes an IP SAN, anything else a DNS SAN.
    sites
        Site ids (same rule as the site YAML's ``site.id``).
    days
        Validity of the CA and server certificates.
    force
        Replace existing files; without it, existing files are never touched.
    loopback
        Also name ``localhost``, ``127.0.0.1`` and ``::1``. The SuperLink's own
        SuperExec reaches its Runtime API over loopback with TLS checked
        against this certificate (Flower maps a bind-all ``--host`` to
        ``127.0.0.1``/``::1``), so without them no ServerApp can start.

    Returns
    -------
    StudyPki
        The layout of the written folder.

    Raises
    ------
    PkiError
        Invalid arguments, or files that exist while ``force`` is false; every
        problem is listed and nothing is written.
    """
    pki = StudyPki.at(root)
    problems = _check_sites(sites)
    if not study.strip():
        problems.append(Problem("missing-study", "give the study a name (--study)"))
    if not server_hosts:
        problems.append(
            Problem("missing-server-host", "give at least one --server-host")
        )
    problems += [p for host in server_hosts for p in _check_host(host)]
    if days < 1:
        problems.append(Problem("bad-days", f"days must be >= 1, got {days}"))
    PkiError.raise_if_any(pki.root, problems)
    site_files = [f for s in sites for f in _site_files(pki, s)]
    central = [pki.ca_certificate, pki.ca_key, pki.server_certificate, pki.server_key]
    _refuse_overwrite(pki, [*central, *site_files], force)

    hosts = _unique_hosts([*server_hosts, *(_LOOPBACK if loopback else ())])
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(_CURVE())
    ca_cert = _ca_certificate(ca_key, study.strip(), now, days)
    server_key = ec.generate_private_key(_CURVE())
    server_cert = _server_certificate(
        server_key, ca_key, ca_cert, study.strip(), hosts, now, days
    )
    _write(pki.ca_key, _pem_private(ca_key), _PRIVATE_MODE)
    _write(pki.ca_certificate, ca_cert.public_bytes(serialization.Encoding.PEM))
    _write(pki.server_key, _pem_private(server_key), _PRIVATE_MODE)
    _write(pki.server_certificate, server_cert.public_bytes(serialization.Encoding.PEM))
    for site in sites:
        _write_site_keys(pki, site)
    _warn_open_folders(pki, sites)
    logger.info("study PKI for %r written to %s", study, pki.root)
    return pki


def add_site_keys(root: Path, sites: Sequence[str], *, force: bool = False) -> StudyPki:
    """Add SuperNode key pairs for new sites to an existing study PKI.

    Parameters
    ----------
    root
        A folder written by :func:`create_study_pki`.
    sites
        Site ids to create keys for.
    force
        Replace a site's existing keys (the old public key must then be
        unregistered at the SuperLink).

    Raises
    ------
    PkiError
        No study PKI at ``root``, invalid site ids, or existing keys without
        ``force``.
    """
    pki = StudyPki.at(root)
    problems = _check_sites(sites)
    if not sites:
        problems.append(Problem("missing-site", "give at least one --site"))
    if not pki.ca_certificate.is_file():
        problems.append(
            Problem(
                "no-pki",
                f"{pki.ca_certificate} not found; run `fedbone pki init` first "
                "or point --out at the study's PKI folder",
            )
        )
    PkiError.raise_if_any(pki.root, problems)
    _refuse_overwrite(pki, [f for s in sites for f in _site_files(pki, s)], force)
    for site in sites:
        _write_site_keys(pki, site)
    _warn_open_folders(pki, sites)
    return pki


# --- building -------------------------------------------------------------------


def _ca_certificate(
    key: ec.EllipticCurvePrivateKey, study: str, now: datetime, days: int
) -> x509.Certificate:
    name = _name(f"{study} study CA", study)
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            _key_usage("key_cert_sign", "crl_sign"),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), False)
        .sign(key, _SIGNATURE_HASH())
    )


def _server_certificate(
    key: ec.EllipticCurvePrivateKey,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    study: str,
    hosts: Sequence[str],
    now: datetime,
    days: int,
) -> x509.Certificate:
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0], study))
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(
            _key_usage("digital_signature"),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.SubjectAlternativeName([host_general_name(h) for h in hosts]), False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            False,
        )
        .sign(ca_key, _SIGNATURE_HASH())
    )


def _key_usage(*allowed: str) -> x509.KeyUsage:
    flags = [
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    ]
    return x509.KeyUsage(**{flag: flag in allowed for flag in flags})


def _name(common_name: str, study: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedbone"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, study[:64]),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
        ]
    )


def _unique_hosts(hosts: Iterable[str]) -> list[str]:
    unique: dict[x509.GeneralName, str] = {}
    for host in hosts:
        unique.setdefault(host_general_name(host), host)
    return list(unique.values())


def _write_site_keys(pki: StudyPki, site: str) -> None:
    key = ec.generate_private_key(_CURVE())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    _private_folder(pki.site_folder(site))
    _write(pki.site_private_key(site), private, _PRIVATE_MODE)
    _write(pki.site_public_key(site), public + f" fedbone-site-{site}\n".encode())


def _pem_private(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int = _PUBLIC_MODE) -> None:
    """Write ``data`` via a temporary file created with ``mode`` (never wider).

    The file is created with its final permissions by ``os.open`` so a private
    key is never readable by others, not even for a moment, then renamed over.
    """
    _private_folder(path.parent)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    actual = path.stat().st_mode & 0o777
    if mode == _PRIVATE_MODE and actual & 0o077:
        raise PkiError(
            path,
            [
                Problem(
                    "key-permissions",
                    f"private key is mode {actual:o}, expected 600; this "
                    "filesystem does not keep owner-only permissions, write "
                    "the PKI to a local disk",
                )
            ],
        )


def _private_folder(folder: Path) -> None:
    """Create ``folder`` and its missing parents owner-only (0700).

    ``mkdir``'s mode is narrowed by the umask, never widened, and a umask such
    as 0o700 would leave the owner locked out, so each created folder is
    ``chmod``-ed to 0700 at once. Existing folders are not touched.
    """
    missing: list[Path] = []
    current = folder
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=_FOLDER_MODE)
        except FileExistsError:
            continue  # made meanwhile by someone else: left as it is
        path.chmod(_FOLDER_MODE)


def _warn_open_folders(pki: StudyPki, sites: Iterable[str]) -> None:
    """Warn about each PKI folder that group or others may enter or list."""
    folders = [pki.root, pki.root / "sites", *(pki.site_folder(s) for s in sites)]
    for folder in folders:
        mode = folder.stat().st_mode & 0o777 if folder.is_dir() else 0
        if mode & 0o077:
            logger.warning(
                "PKI folder %s is mode %o: other users can list the study's key "
                "files; run `chmod 700 %s`",
                folder,
                mode,
                folder,
            )


# --- arguments ------------------------------------------------------------------


def _site_files(pki: StudyPki, site: str) -> list[Path]:
    return [pki.site_private_key(site), pki.site_public_key(site)]


def _check_sites(sites: Iterable[str]) -> list[Problem]:
    problems, seen = [], set()
    for site in sites:
        if not _SITE_ID.match(site):
            problems.append(
                Problem(
                    "bad-site-id",
                    f"{site!r} must be 1-64 letters, digits, '.', '_' or '-', "
                    "starting with a letter or digit (as site.id in site.yaml)",
                )
            )
        elif site in seen:
            problems.append(Problem("duplicate-site", f"site {site!r} given twice"))
        seen.add(site)
    return problems


def _check_host(host: str) -> list[Problem]:
    try:
        ipaddress.ip_address(host)
        return []
    except ValueError:
        pass
    label = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
    if re.fullmatch(rf"{label}(\.{label})*\.?", host):
        return []
    return [
        Problem(
            "bad-server-host",
            f"{host!r} is neither an IP address nor a DNS name; give the name "
            "sites use to reach the SuperLink, without port or scheme",
        )
    ]


def _refuse_overwrite(pki: StudyPki, paths: Sequence[Path], force: bool) -> None:
    if force:
        return
    PkiError.raise_if_any(
        pki.root,
        [
            Problem(
                "exists",
                "already exists and was left untouched; pass --force "
                "(force=True) to replace it",
                str(path),
            )
            for path in paths
            if path.exists()
        ],
    )
