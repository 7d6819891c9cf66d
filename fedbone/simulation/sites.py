"""The simulated federation of a study: phantom sites made, budgeted and prepared.

Node ``i`` of a simulation is site ``i`` of the study's ``simulation.sites``;
this module gives each one its folder, site YAML and prepared cache, and has
each approve the study (as a hospital does with ``fedbone site approve``).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from fedbone.config.profiles import profile_spec
from fedbone.config.site import load_site_config, write_site_config
from fedbone.config.study import StudyConfig
from fedbone.data.cache_summary import format_summary_table, summarise_site_cache
from fedbone.data.prepare import prepare_site_cache
from fedbone.data.spec import ViewMode
from fedbone.errors import ConfigError, Problem
from fedbone.privacy.approvals import open_site_approvals
from fedbone.privacy.study_approval import StudyApproval
from fedbone.security.site_secret import (
    PUBLIC_KEY_FILE,
    create_site_secret,
    load_site_secret,
    write_public_key,
)
from fedbone.simulation.phantom_sites import ensure_phantom_federation

__all__ = [
    "SIMULATION_APPROVER",
    "approve_at_sites",
    "link_cross_audit_peers",
    "prepare_simulated_sites",
]

logger = logging.getLogger(__name__)

SIMULATION_APPROVER = "simulation"
"""Who approves a study at phantom sites (``approved-by`` in their lists)."""


def prepare_simulated_sites(study: StudyConfig, *, approve: bool = True) -> list[Path]:
    """Make (if absent) and prepare the phantom sites; return their configs.

    Every phantom site requires study approval (``policy.require_study_approval``)
    and, with ``approve``, approves ``study`` through its approvals list.

    Parameters
    ----------
    study
        A study with a ``simulation`` block (which sites, profile, scale...).
    approve
        Approve the study at every site (``False``: a test or the deployment
        approves it itself, e.g. with ``fedbone site approve``).

    Raises
    ------
    ConfigError
        If the study has no ``simulation`` block.
    """
    sim = study.simulation
    if sim is None:
        raise ConfigError(
            study.source or "study config",
            [
                Problem(
                    "missing-key", "simulation needs a 'simulation' block", "simulation"
                )
            ],
        )
    configs = ensure_phantom_federation(
        sim.sites_dir,
        sites=list(sim.sites),
        spec=replace(profile_spec(sim.profile), views=ViewMode(sim.views)),
        scale=sim.scale,
        min_scans=sim.min_scans,
        seed=sim.seed,
        workers=sim.workers,
        outcome_sites=sim.outcome_sites,
        fast_speeds=sim.fast_speeds,
    )
    summaries = []
    for path in configs:
        site = load_site_config(path)
        privacy = replace(site.privacy, epsilon_budget=sim.site_epsilon)
        policy = replace(site.policy, require_study_approval=True)
        if (privacy, policy) != (site.privacy, site.policy):
            # The study's simulated hospitals take the budget it names and
            # answer only studies approved there (sites made before approvals).
            changed = replace(site, privacy=privacy, policy=policy, source=None)
            write_site_config(changed, path)
            site = load_site_config(path)
        report = prepare_site_cache(
            site.data.manifest,
            site.data.cache_dir,
            site.preprocessing,
            default_view=site.data.default_view,
            workers=sim.workers,
        )
        logger.info(
            "site %s: %s cache of %d scans (%d quarantined)",
            site.site_id,
            "reused" if report.reused else "prepared",
            report.n_cached,
            report.n_quarantined,
        )
        summaries.append(summarise_site_cache(site.site_id, site.data.cache_dir))
    logger.info("federation:\n%s", format_summary_table(summaries))
    link_cross_audit_peers(configs)
    if approve:
        approve_at_sites(study, configs)
    return configs


def approve_at_sites(
    study: StudyConfig, configs: list[Path], *, by: str = SIMULATION_APPROVER
) -> None:
    """Approve ``study`` at every site, as ``fedbone site approve`` would.

    Parameters
    ----------
    study
        The study to approve.
    configs
        The sites' YAML files.
    by
        Who approves it (recorded in each site's approvals list).
    """
    approval = StudyApproval.of(study, study.file_sha256())
    for path in configs:
        site = load_site_config(path)
        open_site_approvals(site).approve(approval, by=by)
        logger.info(
            "site %s: study %s approved (%s...)",
            site.site_id,
            approval.study,
            approval.approval_sha256[:12],
        )


def link_cross_audit_peers(configs: list[Path]) -> None:
    """Give every site its secret and public key, and list the others as peers.

    What a consortium does at set-up (``fedbone site init`` at each hospital,
    public keys exchanged): each site then audits only images the other
    sites signed. Existing secrets are kept.

    Parameters
    ----------
    configs
        The sites' YAML files.
    """
    sites = [load_site_config(path) for path in configs]
    keys = {}
    for site in sites:
        secret_path = site.secret_file
        secret = (
            load_site_secret(secret_path)
            if secret_path.exists()
            else create_site_secret(secret_path)
        )
        keys[site.site_id] = write_public_key(
            secret, secret_path.with_name(PUBLIC_KEY_FILE)
        )
    for site, path in zip(sites, configs, strict=True):
        peers = {other: key for other, key in keys.items() if other != site.site_id}
        if dict(site.policy.cross_audit_peers) != peers:
            policy = replace(site.policy, cross_audit_peers=peers)
            write_site_config(replace(site, policy=policy, source=None), path)
