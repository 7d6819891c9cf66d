"""A phantom federation on disk: one folder per site, each ready for ``prepare``.

Each site folder holds its DICOM files, manifest, previews and a ``site.yaml``
so the same commands a hospital runs work unchanged on phantom data.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from fedbone.config.site import (
    DataSettings,
    SiteConfig,
    SitePolicy,
    SiteRole,
    write_site_config,
)
from fedbone.data.phantom import generate_site_cohort
from fedbone.data.phantom.profiles import site_profile
from fedbone.data.spec import PreprocessSpec

__all__ = [
    "DEFAULT_ROLES",
    "PhantomSite",
    "ensure_phantom_federation",
    "write_phantom_federation",
]

logger = logging.getLogger(__name__)

#: Haberl et al.: A (large centre) and B (small centre) train; C-F are
#: external test sites that only validate.
DEFAULT_ROLES: dict[str, SiteRole] = {
    "A": SiteRole.TRAIN,
    "B": SiteRole.TRAIN,
    "C": SiteRole.VALIDATE_ONLY,
    "D": SiteRole.VALIDATE_ONLY,
    "E": SiteRole.VALIDATE_ONLY,
    "F": SiteRole.VALIDATE_ONLY,
}


@dataclass(frozen=True)
class PhantomSite:
    """A generated site: its folder and its site config file."""

    site_id: str
    folder: Path
    config_path: Path
    n_scans: int
    seconds: float


def write_phantom_federation(
    out_dir: Path,
    *,
    sites: list[str],
    spec: PreprocessSpec,
    scale: float,
    min_scans: int,
    seed: int,
    workers: int,
    outcomes: bool | None = None,
    previews: int = 4,
    progress: bool = False,
    fast_speeds: tuple[int, ...] = (),
) -> list[PhantomSite]:
    """Generate phantom cohorts for ``sites`` and a ``site.yaml`` for each.

    Parameters
    ----------
    out_dir
        Parent folder; site ``X`` goes to ``out_dir / "site-X"``.
    sites
        Site profile names (``A``..``F``).
    spec
        Preprocessing written into each site config.
    scale, min_scans, seed, workers, outcomes, previews, progress, fast_speeds
        Passed to :func:`fedbone.data.phantom.generate_site_cohort`; each site
        gets its own seed derived from ``seed`` by the generator. With
        ``fast_speeds`` each ``site.yaml`` names the ``fast_scans.csv``
        written (``data.fast_manifest``).

    Returns
    -------
    list of PhantomSite
        One entry per site, in the order given.
    """
    made: list[PhantomSite] = []
    for site in sites:
        folder = out_dir / f"site-{site}"
        summary = generate_site_cohort(
            site,
            folder,
            scale=scale,
            min_scans=min_scans,
            seed=seed,
            workers=workers,
            outcomes=outcomes,
            previews=previews,
            progress=progress,
            fast_speeds=fast_speeds,
        )
        config = SiteConfig(
            site_id=site,
            role=DEFAULT_ROLES.get(site, SiteRole.TRAIN),
            data=DataSettings(
                manifest=folder / "manifest.csv",
                cache_dir=folder / "cache",
                workers=workers,
                fast_manifest=summary.fast_manifest,
            ),
            preprocessing=spec,
            egress_log=folder / "egress-log.jsonl",
            work_dir=folder / "work",
            # a phantom hospital behaves as one set up with `fedbone site init`
            policy=SitePolicy(require_study_approval=True),
        )
        config_path = write_site_config(config, folder / "site.yaml")
        made.append(
            PhantomSite(site, folder, config_path, summary.n_scans, summary.elapsed_s)
        )
        logger.info(
            "site %s: %d phantom scans in %.1f s -> %s",
            site,
            summary.n_scans,
            summary.elapsed_s,
            folder,
        )
    return made


def ensure_phantom_federation(
    out_dir: Path,
    *,
    sites: list[str],
    spec: PreprocessSpec,
    scale: float,
    min_scans: int,
    seed: int,
    workers: int,
    outcome_sites: tuple[str, ...] | None = None,
    progress: bool = False,
    fast_speeds: tuple[int, ...] = (),
) -> list[Path]:
    """Return the site configs of a phantom federation, generating missing sites.

    A site folder made earlier with the same parameters (recorded in its
    ``phantom.json``) is reused as it is, so repeated simulations start in
    seconds; one made with other parameters is regenerated. ``outcome_sites``
    names the sites whose patients get follow-up (``None``: as the profiles
    say, i.e. site D).

    Parameters
    ----------
    out_dir
        Parent folder; site ``X`` lives in ``out_dir / "site-X"``.
    sites
        Site profile names (``A``..``F``).
    spec
        Preprocessing written into each site config; a change of its
        fingerprint regenerates the site.
    scale
        Fraction of the paper's cohort size.
    min_scans
        Floor on the number of scans per site.
    seed
        Cohort seed; the same seed gives the same cohorts.
    workers
        Processes used to render a site; the result does not depend on it
        and it is not part of the recorded parameters.
    outcome_sites
        Sites whose patients get follow-up; ``None`` follows the profiles.
    progress
        Show a progress bar while rendering.
    fast_speeds
        Table speeds of the fast acquisitions every visit also gets (see
        :func:`fedbone.data.phantom.generate_site_cohort`); empty: none.

    Returns
    -------
    list of Path
        The ``site.yaml`` of each site, in the order given.
    """
    configs = []
    for site in sites:
        folder = out_dir / f"site-{site}"
        wanted = {
            "site": site,
            "scale": scale,
            "min_scans": min_scans,
            "seed": seed,
            "spec": spec.fingerprint(),
        }
        outcomes = None if outcome_sites is None else site in outcome_sites
        if outcomes is not None and outcomes != site_profile(site).has_outcomes:
            # Only a departure from the profile is recorded, so folders made
            # before outcome_sites existed stay valid.
            wanted["outcomes"] = outcomes
        if fast_speeds:
            # Recorded only when asked for: earlier folders stay valid.
            wanted["fast_speeds"] = list(fast_speeds)
        record = folder / "phantom.json"
        current = json.loads(record.read_text()) if record.is_file() else None
        if current != wanted:
            if folder.exists():
                logger.info("site %s: phantom parameters changed; regenerating", site)
                shutil.rmtree(folder)
            write_phantom_federation(
                out_dir,
                sites=[site],
                spec=spec,
                scale=scale,
                min_scans=min_scans,
                seed=seed,
                workers=workers,
                outcomes=outcomes,
                previews=2,
                progress=progress,
                fast_speeds=fast_speeds,
            )
            record.write_text(json.dumps(wanted, indent=2) + "\n")
        configs.append(folder / "site.yaml")
    return configs
