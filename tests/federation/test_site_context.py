from __future__ import annotations

import os
from pathlib import Path

import pytest
from federation_messages import config, context, request
from flwr.app import Message, RecordDict

from fedbone.errors import ConfigError
from fedbone.federation.site_context import (
    guard_and_log_for,
    load_site_for,
    resolve_site_config_path,
    site_for,
)


def _site_yaml(folder: Path, site_id: str, threshold: int = 5) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.csv").write_text("scan_id\n")
    path = folder / "site.yaml"
    path.write_text(
        f"site: {{id: {site_id}}}\n"
        "data: {manifest: manifest.csv}\n"
        f"privacy: {{small_cell_threshold: {threshold}}}\n"
        "egress_log: logs/egress.jsonl\n"
    )
    return path


def _census(**extra: object) -> Message:
    return request("query.census", RecordDict({"config": config("census", **extra)}))


def test_deployment_reads_the_path_from_node_config(tmp_path: Path) -> None:
    path = _site_yaml(tmp_path / "vienna", "vienna")

    resolved = resolve_site_config_path(
        _census(), context(**{"site-config": str(path)})
    )

    assert resolved == path


def test_simulation_picks_the_partitions_entry(tmp_path: Path) -> None:
    paths = [_site_yaml(tmp_path / s, s) for s in ("vienna", "brescia")]
    message = _census(**{"sim-site-configs": [str(p) for p in paths]})

    site = load_site_for(message, context(**{"partition-id": 1}))

    assert site.site_id == "brescia"


def test_missing_site_config_says_how_to_configure(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--node-config site-config=") as caught:
        resolve_site_config_path(_census(), context())

    assert caught.value.codes == ["missing-site-config"]


def test_partition_without_an_entry_is_an_error(tmp_path: Path) -> None:
    message = _census(**{"sim-site-configs": [str(tmp_path / "a.yaml")]})

    with pytest.raises(ConfigError, match="partition-id 3"):
        resolve_site_config_path(message, context(**{"partition-id": 3}))
    with pytest.raises(ConfigError, match="sim-site-configs"):
        resolve_site_config_path(_census(), context(**{"partition-id": 0}))


def test_site_config_is_cached_until_the_file_changes(tmp_path: Path) -> None:
    path = _site_yaml(tmp_path / "site", "vienna", threshold=5)
    node = context(**{"site-config": str(path)})

    first = load_site_for(_census(), node)
    again = load_site_for(_census(), node)
    _site_yaml(tmp_path / "site", "vienna", threshold=9)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    edited = load_site_for(_census(), node)

    assert again is first
    assert edited.privacy.small_cell_threshold == 9


def test_guard_and_log_follow_the_site_config(tmp_path: Path) -> None:
    path = _site_yaml(tmp_path / "site", "vienna", threshold=11)

    guard, log = guard_and_log_for(_census(), context(**{"site-config": str(path)}))

    assert guard.small_cell_threshold == 11
    assert log.path == (tmp_path / "site" / "logs" / "egress.jsonl").resolve()


def test_the_site_cache_is_opened_once_until_it_is_prepared_again(
    tmp_path: Path,
) -> None:
    # Prepare
    from tiny_caches import build_toy_cache

    from fedbone.config.site import DataSettings, SiteConfig, SiteRole
    from fedbone.site import Site

    cache_dir = build_toy_cache(tmp_path, count=10).cache_dir
    site = Site(
        SiteConfig(
            "vienna", SiteRole.TRAIN, DataSettings(tmp_path / "m.csv", cache_dir)
        )
    )

    # Execute
    first = site.cache
    again = site.cache
    meta = cache_dir / "meta.json"
    os.utime(meta, ns=(meta.stat().st_atime_ns, meta.stat().st_mtime_ns + 10**9))
    after_prepare = site.cache

    # Assert
    assert again is first
    assert after_prepare is not first


def test_the_site_is_built_once_per_config_version(tmp_path: Path) -> None:
    path = _site_yaml(tmp_path / "site", "vienna")
    node = context(**{"site-config": str(path)})

    first = site_for(_census(), node)
    again = site_for(_census(), node)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    edited = site_for(_census(), node)

    assert again is first
    assert edited is not first
    assert edited.site_id == "vienna"
