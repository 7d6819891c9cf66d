"""The files a site seals with its secret, and opening the secret for them.

A site keeps three tamper-evident files, each hash-chained and keyed with the
site's secret (:mod:`fedbone.security.site_secret`): the privacy ledger, the
egress log and the approvals list. While any of them (or its head) exists, a
missing secret is refused rather than made anew: a new secret would let
whoever deleted the old one rewrite them unnoticed. Light on purpose (no
torch): ``fedbone site approve`` and ``status`` open the secret through it.
"""

from __future__ import annotations

from pathlib import Path

from fedbone.config.site import SiteConfig
from fedbone.privacy.ledger import head_path_for
from fedbone.security.site_secret import SiteSecret, open_site_secret

__all__ = ["open_site_secret_for", "sealed_files"]


def sealed_files(site: SiteConfig) -> list[Path]:
    """Return the files the site's secret seals, and their heads.

    Parameters
    ----------
    site
        The site config.
    """
    secret = site.secret_file
    sealed: list[Path] = [site.privacy.ledger, site.egress_log, site.approvals_file]
    return sealed + [head_path_for(path, secret) for path in sealed]


def open_site_secret_for(site: SiteConfig) -> SiteSecret:
    """Load the site's secret (``privacy.secret``), creating it at a fresh site.

    The files it seals are the privacy ledger, the egress log and the
    approvals list and their heads (:func:`sealed_files`): while any of them
    exists, a missing secret is refused rather than made anew.

    Parameters
    ----------
    site
        The site config.

    Returns
    -------
    SiteSecret
        The loaded (or, at a fresh site, new) secret.

    Raises
    ------
    PkiError
        ``missing-secret``, ``secret-permissions`` or ``bad-secret``.
    """
    return open_site_secret(site.secret_file, sealed=sealed_files(site))
