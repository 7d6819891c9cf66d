"""The site's bounds on what the centre may ask, checked before any work.

Every parameter of a request is chosen by the centre, which may be curious.
The site's :class:`~fedbone.config.site.SitePolicy` (and its privacy settings)
bound them; a request outside the bounds is refused with
:class:`PolicyRefused`, whose problem codes reach the centre (through the
egress guard's error reply) and whose full text stays in the site's egress
log. ``docs/threat-model.md`` maps each check to the attack it answers.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np

from fedbone.config.site import SiteConfig
from fedbone.config.synthetic import GanSettings
from fedbone.errors import Problem, ProblemsError
from fedbone.generative.release_signature import verify_release
from fedbone.security.site_secret import load_public_key

__all__ = [
    "PolicyRefused",
    "approved_encoder_path",
    "check_histogram_bins",
    "check_release_provenance",
    "require_noisy_statistics",
    "resolve_encoder",
]


class PolicyRefused(ProblemsError):  # noqa: N818 (reads as "the policy refused")
    """A request the site's own policy does not allow; nothing was computed."""

    kind = "request"


def _refuse(site: SiteConfig, code: str, message: str, where: str) -> PolicyRefused:
    return PolicyRefused(site.site_id, [Problem(code, message, where)])


def check_histogram_bins(site: SiteConfig, bins: int) -> None:
    """Refuse score histograms finer than the site allows.

    Raises
    ------
    PolicyRefused
        ``too-many-bins`` above ``policy.max_histogram_bins``.
    """
    limit = site.policy.max_histogram_bins
    if bins > limit:
        raise _refuse(
            site,
            "too-many-bins",
            f"{bins} histogram bins asked, this site allows at most {limit}: finer "
            "histograms would locate each patient's score",
            "policy.max_histogram_bins",
        )


def require_noisy_statistics(site: SiteConfig, what: str, *, noisy: bool) -> None:
    """Refuse exact statistics at a site that requires noisy ones.

    Parameters
    ----------
    site
        The site's config (``privacy.require_dp_statistics``).
    what
        The statistic asked for, for the message.
    noisy
        Whether the request asked for noisy (DP) statistics.

    Raises
    ------
    PolicyRefused
        ``dp-statistics-required``.
    """
    if site.privacy.require_dp_statistics and not noisy:
        raise _refuse(
            site,
            "dp-statistics-required",
            f"this site releases {what} only under differential privacy; the "
            "study must set dp.statistics (exact statistics and Cox fits are "
            "refused here)",
            "privacy.require_dp_statistics",
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_encoder(site: SiteConfig, gan: GanSettings) -> GanSettings:
    """Point the study's GAN settings at an encoder file the site approved.

    The study names a TorchScript encoder only by its sha256; the file is one
    the site listed in ``policy.encoders``. A path the centre sent is never
    opened: loading TorchScript runs code, so it must be the site's choice.

    Raises
    ------
    PolicyRefused
        ``encoder-not-approved`` when no listed file has the requested sha256.
    """
    if gan.encoder != "torchscript":
        return replace(gan, encoder_path=None)
    path = approved_encoder_path(site, str(gan.encoder_sha256 or ""))
    return replace(gan, encoder_path=str(path))


def approved_encoder_path(site: SiteConfig, sha256: str) -> Path:
    """Return the file of ``policy.encoders`` whose sha256 the study named.

    Parameters
    ----------
    site
        The site's config.
    sha256
        The digest the study sent (the only way a study names an encoder).

    Raises
    ------
    PolicyRefused
        ``encoder-not-approved`` when no listed file has that sha256.
    """
    wanted = sha256.lower()
    for path in site.policy.encoders:
        if path.is_file() and _sha256(path) == wanted:
            return path
    raise _refuse(
        site,
        "encoder-not-approved",
        f"the study names a TorchScript encoder (sha256 {wanted[:12]}...) that "
        "is not among this site's policy.encoders; a site loads only encoder "
        "files it listed itself",
        "policy.encoders",
    )


def check_release_provenance(
    site: SiteConfig,
    released_by: str,
    signature: str,
    *,
    run_name: str,
    images: np.ndarray,
    class_ids: np.ndarray,
) -> None:
    """Refuse to audit images a listed peer did not sign.

    Parameters
    ----------
    site
        The auditing site's config (``policy.cross_audit_peers``).
    released_by
        The site the centre says produced the images.
    signature
        The producing site's signature of the batch, as the centre forwarded it.
    run_name, images, class_ids
        What the signature must cover (see
        :func:`fedbone.generative.release_signature.release_digest`).

    Raises
    ------
    PolicyRefused
        ``unknown-peer`` when ``released_by`` is not a listed peer;
        ``unverified-images`` when the signature does not verify.
    """
    key_file = site.policy.cross_audit_peers.get(released_by)
    if key_file is None:
        raise _refuse(
            site,
            "unknown-peer",
            f"this site audits only images signed by the peers it lists; "
            f"{released_by[:64]!r} is not one of them (policy.cross_audit_peers)",
            "policy.cross_audit_peers",
        )
    key = load_public_key(key_file)
    if not verify_release(key, signature, released_by, run_name, images, class_ids):
        raise _refuse(
            site,
            "unverified-images",
            f"the images are not exactly a batch {released_by[:64]!r} signed in this "
            "run; images of unknown provenance are never audited (the verdicts "
            "would measure their distance to this site's scans)",
            "release-signature",
        )
