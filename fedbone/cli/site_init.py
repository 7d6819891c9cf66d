"""``fedbone site init``: set up a hospital's site secret and public key, once.

The secret (``privacy.secret`` of the site YAML, mode 0600) seals the site's
privacy ledger and egress log and signs the synthetic images the site
releases; the public key written beside it (``site-signing.pem``) is what
the other sites list under ``policy.cross_audit_peers`` to audit only this
site's signed releases. An existing secret is kept (replacing it would
orphan the seals), and its public key is written again.

A site set up this way answers only the studies it approves (``fedbone site
approve``): when the site YAML does not say, ``init`` writes
``policy.require_study_approval: true`` into it (one line added to a block
``policy:`` section, comments kept); an explicit ``false`` is kept, with a
warning.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path
from typing import Any, TextIO

from cryptography.hazmat.primitives import serialization

__all__ = ["add_site_init_parser", "require_study_approval", "run_site_init"]


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
    print(require_study_approval(Path(args.config)), file=stream)
    return 0


_KEY = "require_study_approval"
_POLICY_LINE = re.compile(r"^policy:[ \t]*(#.*)?$", re.MULTILINE)


def require_study_approval(path: Path) -> str:
    """Write ``policy.require_study_approval: true`` unless the site YAML says.

    Parameters
    ----------
    path
        The site YAML; checked again after the change, restored if it fails.

    Returns
    -------
    str
        What was done, or how to do it by hand (e.g. a read-only file).
    """
    from fedbone.config.reader import read_yaml
    from fedbone.config.site import load_site_config
    from fedbone.errors import ConfigError

    raw = read_yaml(path)
    policy = raw.get("policy") or {}
    if _KEY in policy:
        if policy[_KEY] is True:
            return "study approval: required (policy.require_study_approval: true)"
        return (
            "WARNING: policy.require_study_approval is false: this site answers "
            "every study; set it to true to answer only the studies you approve"
        )
    text = path.read_text(encoding="utf-8")
    changed = _with_line(text, "policy" in raw) or _dumped(raw, policy)
    by_hand = (
        f"could not change {path}: add `{_KEY}: true` under its policy: section "
        "so that the site answers only the studies you approve"
    )
    try:
        path.write_text(changed, encoding="utf-8")
    except OSError:
        return by_hand
    try:
        written = load_site_config(path).policy.require_study_approval
    except ConfigError:
        written = False
    if not written:
        path.write_text(text, encoding="utf-8")
        return by_hand
    return (
        f"study approval: required ({_KEY}: true written to {path}); approve "
        "each study with `fedbone site approve <study.yaml> --config ...`"
    )


def _with_line(text: str, has_policy: bool) -> str | None:
    """Add the setting as a line of block YAML (comments kept), else ``None``."""
    found = _POLICY_LINE.search(text)
    if found is None:
        if has_policy or text.lstrip().startswith("{"):
            return None  # a flow mapping (or JSON): rewritten instead
        return text.rstrip("\n") + f"\npolicy:\n  {_KEY}: true\n"
    rest = text[found.end() :].splitlines()
    content = [
        line for line in rest if line.strip() and not line.lstrip().startswith("#")
    ]
    indent = len(content[0]) - len(content[0].lstrip()) if content else 0
    if indent == 0:
        return None  # an empty section: the mapping is rewritten instead
    line = f"\n{' ' * indent}{_KEY}: true  # answer only studies approved here"
    return text[: found.end()] + line + text[found.end() :]


def _dumped(raw: Any, policy: Any) -> str:
    """Return the YAML's mapping with the setting added (a flow or JSON file)."""
    import yaml

    return yaml.safe_dump({**raw, "policy": {**policy, _KEY: True}}, sort_keys=False)
