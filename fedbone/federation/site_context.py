"""Find the site a ClientApp runs as, from a message and its context.

In deployment the SuperNode is started with ``--node-config
site-config=/path/site.yaml``. In simulation every partition runs the same
ClientApp, so the server lists the site YAMLs in partition order in the
``config`` record (``sim-site-configs``) and each partition picks its own.
Either way the :class:`~fedbone.site.Site` is built once per site YAML (and
again when the file changes) and reused by every handler.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message

from fedbone.config.site import SiteConfig, load_site_config
from fedbone.errors import ConfigError, Problem
from fedbone.federation.egress.guard import EgressGuard, EgressLog
from fedbone.federation.kinds import CONFIG_RECORD
from fedbone.site import Site

__all__ = [
    "PARTITION_NODE_KEY",
    "SIM_SITE_CONFIGS_KEY",
    "SITE_CONFIG_NODE_KEY",
    "guard_and_log_for",
    "load_site_for",
    "resolve_site_config_path",
    "site_for",
]

SITE_CONFIG_NODE_KEY = "site-config"
PARTITION_NODE_KEY = "partition-id"
SIM_SITE_CONFIGS_KEY = "sim-site-configs"

_HOW_TO_CONFIGURE = (
    "start the SuperNode with `--node-config site-config=/path/site.yaml` "
    "(deployment), or run a simulation whose server sends the site YAML paths "
    f"in config[{SIM_SITE_CONFIGS_KEY!r}]"
)


def _simulation_path(message: Message, partition: object) -> Path:
    subject = "simulation node_config"
    config = (
        message.content.config_records.get(CONFIG_RECORD, ConfigRecord())
        if message.has_content()
        else ConfigRecord()
    )
    paths = config.get(SIM_SITE_CONFIGS_KEY)
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise ConfigError(
            subject,
            [
                Problem(
                    "missing-site-config",
                    f"partition {partition} has no site config: the message's "
                    f"config record lacks a list[str] {SIM_SITE_CONFIGS_KEY!r}; "
                    + _HOW_TO_CONFIGURE,
                )
            ],
        )
    if (
        not isinstance(partition, int)
        or isinstance(partition, bool)
        or not 0 <= partition < len(paths)
    ):
        raise ConfigError(
            subject,
            [
                Problem(
                    "missing-site-config",
                    f"partition-id {partition!r} has no entry among the "
                    f"{len(paths)} {SIM_SITE_CONFIGS_KEY!r}; list one site YAML "
                    "per simulated partition",
                )
            ],
        )
    return Path(str(paths[partition]))


def resolve_site_config_path(message: Message, context: Context) -> Path:
    """Path of the site YAML this ClientApp serves.

    Parameters
    ----------
    message
        The incoming message (its ``config`` record, in simulation).
    context
        The ClientApp context (its ``node_config``).

    Raises
    ------
    ConfigError
        If neither ``node_config["site-config"]`` nor a simulation entry for
        ``node_config["partition-id"]`` is available; says how to configure it.
    """
    node_config = context.node_config
    if SITE_CONFIG_NODE_KEY in node_config:
        return Path(str(node_config[SITE_CONFIG_NODE_KEY]))
    if PARTITION_NODE_KEY in node_config:
        return _simulation_path(message, node_config[PARTITION_NODE_KEY])
    raise ConfigError(
        "SuperNode node_config",
        [
            Problem(
                "missing-site-config",
                f"node {context.node_id} has no {SITE_CONFIG_NODE_KEY!r} in its "
                "node config; " + _HOW_TO_CONFIGURE,
            )
        ],
    )


@lru_cache(maxsize=32)
def _site_cached(path: Path, mtime_ns: int) -> Site:
    # mtime_ns is only part of the key: an edited file makes a new Site
    return Site(load_site_config(path))


def site_for(message: Message, context: Context) -> Site:
    """Return the :class:`Site` a message is for, built once per file version.

    The site keeps its opened cache between messages, so the ClientApp's
    handlers share one site object instead of re-opening its state each time.

    Raises
    ------
    ConfigError
        If the path cannot be resolved, or the file is missing or invalid.
    """
    path = resolve_site_config_path(message, context).resolve()
    try:
        mtime_ns = path.stat().st_mtime_ns
    except OSError:
        return Site(load_site_config(path))
    return _site_cached(path, mtime_ns)


def load_site_for(message: Message, context: Context) -> SiteConfig:
    """Load (once per process and file version) the site config for a message.

    Raises
    ------
    ConfigError
        If the path cannot be resolved, or the file is missing or invalid.
    """
    return site_for(message, context).config


def guard_and_log_for(
    message: Message, context: Context
) -> tuple[EgressGuard, EgressLog]:
    """Build the site's egress guard and log; pass this to ``egress_mod``.

    The log is keyed with the site's secret (created at a fresh site) and
    checked against its head first, so a site whose secret is gone or whose
    log was cut off or replaced fails before doing any work.

    Raises
    ------
    ConfigError
        As :func:`site_for`.
    PkiError
        When the site secret is missing (its ledger or log exist) or unreadable.
    EgressLogTampered
        When the egress log no longer matches its head.
    """
    from fedbone.privacy.site_spending import open_site_secret_for

    site = site_for(message, context)
    guard = EgressGuard(
        small_cell_threshold=site.config.privacy.small_cell_threshold,
        release_check=site.release_register.unreleased,
        max_histogram_bins=site.config.policy.max_histogram_bins,
        min_patients_per_class=site.config.policy.min_patients_per_class,
        require_private_statistics=site.config.privacy.require_dp_statistics,
    )
    log = EgressLog(site.config.egress_log, open_site_secret_for(site.config))
    log.check_tail()
    return guard, log
