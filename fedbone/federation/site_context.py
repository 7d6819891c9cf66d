"""Find the site configuration a ClientApp runs under, from a message and context.

In deployment the SuperNode is started with ``--node-config
site-config=/path/site.yaml``. In simulation every partition runs the same
ClientApp, so the server lists the site YAMLs in partition order in the
``config`` record (``sim-site-configs``) and each partition picks its own.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message

from fedbone.config.site import SiteConfig, load_site_config
from fedbone.data.cache import META_FILE, SiteCache
from fedbone.errors import ConfigError, Problem
from fedbone.federation.egress.guard import EgressGuard, EgressLog
from fedbone.federation.kinds import CONFIG_RECORD
from fedbone.generative.release_register import ReleaseRegister

__all__ = [
    "PARTITION_NODE_KEY",
    "RELEASE_REGISTER_FILE",
    "SIM_SITE_CONFIGS_KEY",
    "SITE_CONFIG_NODE_KEY",
    "guard_and_log_for",
    "load_site_for",
    "open_site_cache",
    "release_register_of",
    "resolve_site_config_path",
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
def _load_cached(path: Path, mtime_ns: int) -> SiteConfig:
    # mtime_ns is only part of the key: an edited file is loaded afresh
    return load_site_config(path)


def load_site_for(message: Message, context: Context) -> SiteConfig:
    """Load (once per process and file version) the site config for a message.

    Raises
    ------
    ConfigError
        If the path cannot be resolved, or the file is missing or invalid.
    """
    path = resolve_site_config_path(message, context).resolve()
    try:
        mtime_ns = path.stat().st_mtime_ns
    except OSError:
        return load_site_config(path)
    return _load_cached(path, mtime_ns)


RELEASE_REGISTER_FILE = "release-register.jsonl"


def guard_and_log_for(
    message: Message, context: Context
) -> tuple[EgressGuard, EgressLog]:
    """Build the site's egress guard and log; pass this to ``egress_mod``."""
    site = load_site_for(message, context)
    guard = EgressGuard(
        small_cell_threshold=site.privacy.small_cell_threshold,
        release_check=release_register_of(site).unreleased,
    )
    return guard, EgressLog(site.egress_log)


def release_register_of(site: SiteConfig) -> ReleaseRegister:
    """Return the site's register of audit-released images (in its work dir)."""
    return ReleaseRegister(site.work_dir / RELEASE_REGISTER_FILE)


@lru_cache(maxsize=8)
def _open_cached(cache_dir: Path, meta_mtime_ns: int) -> SiteCache:
    return SiteCache.open(cache_dir)


def open_site_cache(site: SiteConfig) -> SiteCache:
    """Open the site's prepared cache, once per process while it is unchanged.

    Every message needs the cache; re-reading a large site's index for each
    one would cost more than the exchange. A re-prepared cache rewrites its
    ``meta.json``, which changes the key, so it is picked up at once.
    """
    cache_dir = site.data.cache_dir.resolve()
    meta = cache_dir / META_FILE
    mtime = meta.stat().st_mtime_ns if meta.is_file() else -1
    return _open_cached(cache_dir, mtime)
