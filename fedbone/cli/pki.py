"""The ``fedbone pki`` command: create and check a study's PKI.

Prints what was written or checked (paths, fingerprints), never key material.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fedbone.security.pki import StudyPki

__all__ = ["add_pki_parser", "run_pki"]


def add_pki_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``fedbone pki {init,add-site,check}`` to the ``fedbone`` subparsers."""
    pki = sub.add_parser(
        "pki",
        help="create the study CA, the server TLS certificate and site keys",
        description=(
            "Create and check a study's PKI: a study CA, the SuperLink's TLS "
            "certificate and one SuperNode authentication key pair per site. "
            "Private keys are written owner-only (0600); existing files are "
            "never replaced without --force."
        ),
    )
    actions = pki.add_subparsers(dest="pki_command", required=True, metavar="ACTION")

    init = actions.add_parser(
        "init",
        help="create CA, server certificate and site keys",
        description="Create a new study PKI in --out.",
    )
    _add_out(init)
    init.add_argument("--study", required=True, help="study name")
    init.add_argument(
        "--server-host",
        action="append",
        required=True,
        help="DNS name or IP address sites use to reach the SuperLink "
        "(repeatable; each becomes a subject alternative name)",
    )
    init.add_argument(
        "--site", action="append", default=[], help="site id (repeatable)"
    )
    init.add_argument(
        "--no-loopback",
        dest="loopback",
        action="store_false",
        help="do not also name localhost, 127.0.0.1 and ::1 (the SuperLink's "
        "own SuperExec connects over loopback and needs them)",
    )
    init.add_argument("--days", type=int, default=365, help="certificate validity")
    init.add_argument("--force", action="store_true", help="replace existing files")

    add_site = actions.add_parser(
        "add-site",
        help="create key pairs for new sites",
        description="Add SuperNode key pairs to an existing study PKI.",
    )
    _add_out(add_site)
    add_site.add_argument(
        "--site", action="append", required=True, help="site id (repeatable)"
    )
    add_site.add_argument(
        "--force", action="store_true", help="replace the site's existing keys"
    )

    check = actions.add_parser(
        "check",
        help="check the server certificate for a host",
        description=(
            "Check that the server certificate is valid now, signed by the study "
            "CA, names the host and matches its key. Exit 1 listing the problems."
        ),
    )
    _add_out(check)
    check.add_argument(
        "--server-host", action="append", required=True, help="host (repeatable)"
    )
    pki.set_defaults(func=run_pki)


def run_pki(args: argparse.Namespace) -> int:
    """Run ``fedbone pki ACTION``; return the exit code.

    ``init`` and ``add-site`` raise :class:`~fedbone.security.PkiError` on
    invalid arguments or files that would be overwritten (the ``fedbone``
    command shows it and exits 2); ``check`` prints the problems and returns 1.
    """
    from fedbone.security import pki as pki_module

    if args.pki_command == "init":
        written = pki_module.create_study_pki(
            args.out,
            study=args.study,
            server_hosts=args.server_host,
            sites=args.site,
            days=args.days,
            force=args.force,
            loopback=args.loopback,
        )
        _print_central(written)
        _print_sites(written, args.site)
        return 0
    if args.pki_command == "add-site":
        written = pki_module.add_site_keys(args.out, args.site, force=args.force)
        _print_sites(written, args.site)
        return 0
    if args.pki_command == "check":
        return _check(pki_module.StudyPki.at(args.out), args.server_host)
    raise ValueError(f"unknown pki action {args.pki_command!r}")


def _add_out(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, required=True, help="the study's PKI folder"
    )


def _check(pki: StudyPki, hosts: list[str]) -> int:
    from fedbone.security.errors import PkiError
    from fedbone.security.pki import certificate_fingerprint, check_server_certificate

    failed = False
    for host in hosts:
        try:
            check_server_certificate(pki, host)
        except PkiError as exc:
            failed = True
            print(f"FAIL {host}: {pki.server_certificate}")
            for problem in exc.problems:
                print(f"  - {problem}")
            continue
        print(
            f"ok   {host}: {pki.server_certificate} is valid now, issued by "
            f"{pki.ca_certificate}, names {host}, matches {pki.server_key}"
        )
    if not failed:
        print(f"     sha256 {certificate_fingerprint(pki.server_certificate)}")
    return 1 if failed else 0


def _print_central(pki: StudyPki) -> None:
    from fedbone.security.pki import certificate_fingerprint

    print(f"study CA         {pki.ca_certificate}")
    print(f"  sha256         {certificate_fingerprint(pki.ca_certificate)}")
    print(f"  private key    {pki.ca_key} (0600; keep offline, never ship)")
    print(f"server TLS cert  {pki.server_certificate}")
    print(f"  sha256         {certificate_fingerprint(pki.server_certificate)}")
    print(f"  private key    {pki.server_key} (0600; SuperLink only)")


def _print_sites(pki: StudyPki, sites: list[str]) -> None:
    from fedbone.security.pki import public_key_fingerprint

    for site in sites:
        public = pki.site_public_key(site)
        print(f"site {site}")
        print(f"  private key    {pki.site_private_key(site)} (0600; this site only)")
        print(f"  public key     {public} ({public_key_fingerprint(public)})")
    if sites:
        print(
            f"ship to each site: {pki.ca_certificate} and its sites/<site>/ folder; "
            "register each .pub at the SuperLink"
        )
