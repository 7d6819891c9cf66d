"""``fedbone site init``: set up a hospital's site secret and public key, once.

The secret (``privacy.secret`` of the site YAML, mode 0600) seals the site's
privacy ledger and egress log and signs the synthetic images the site
releases; the public key written beside it (``site-signing.pem``) is what
the other sites list under ``policy.cross_audit_peers`` to audit only this
site's signed releases. An existing secret is kept (replacing it would
orphan the seals), and its public key is written again.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import TextIO

from cryptography.hazmat.primitives import serialization

__all__ = ["add_site_init_parser", "run_site_init"]


def add_site_init_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``init`` to the ``fedbone site`` subcommands."""
    p = sub.add_parser(
        "init",
        help="create the site secret (0600) and write its public signing key",
        description=(
            "Create this site's secret (privacy.secret in the site YAML, mode "
            "0600; kept if it exists) and write the public key the other sites "
            "list under policy.cross_audit_peers."
        ),
    )
    p.add_argument("--config", type=Path, required=True, help="site YAML")
    p.set_defaults(func=run_site_init)


def run_site_init(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Create (or keep) the site secret and write its public key; return 0.

    Parameters
    ----------
    args
        ``config``: the site YAML.
    out
        Where to print (standard output by default).
    """
    from fedbone.config.site import load_site_config
    from fedbone.security.site_secret import (
        PUBLIC_KEY_FILE,
        create_site_secret,
        load_site_secret,
        write_public_key,
    )

    stream = sys.stdout if out is None else out
    config = load_site_config(args.config)
    path = config.secret_file
    existed = path.exists()
    secret = load_site_secret(path) if existed else create_site_secret(path)
    public = write_public_key(secret, path.with_name(PUBLIC_KEY_FILE))
    raw = secret.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    print(
        f"site {config.site_id}: secret {'kept' if existed else 'created'} at {path}",
        file=stream,
    )
    print(f"public signing key: {public}", file=stream)
    print(f"fingerprint (sha256): {hashlib.sha256(raw).hexdigest()}", file=stream)
    print(
        "give the public key to the other sites of the consortium; each lists "
        f"it as policy.cross_audit_peers.{config.site_id}",
        file=stream,
    )
    return 0
