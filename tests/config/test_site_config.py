from pathlib import Path

import pytest
import yaml

from fedbone.config.site import (
    Device,
    SiteRole,
    load_site_config,
    site_config_from_mapping,
    write_site_config,
)
from fedbone.data.scan import View
from fedbone.data.spec import ViewMode
from fedbone.errors import ConfigError


def _write(tmp_path: Path, mapping: object) -> Path:
    (tmp_path / "manifest.csv").write_text("scan_id\n")
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(mapping))
    return path


def test_valid_config_loads_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {
            "site": {"id": "vienna", "role": "validate-only"},
            "data": {"manifest": "manifest.csv", "default_view": "anterior"},
            "preprocessing": {"spacing_mm": 8, "canvas": [256, 64], "views": "both"},
            "device": "cpu",
        },
    )

    config = load_site_config(path)

    assert config.site_id == "vienna"
    assert config.role is SiteRole.VALIDATE_ONLY
    assert config.data.manifest == tmp_path.resolve() / "manifest.csv"
    assert config.data.cache_dir == tmp_path.resolve() / "cache"
    assert config.data.default_view is View.ANTERIOR
    assert config.preprocessing.output_shape == (256, 128)
    assert config.preprocessing.views is ViewMode.BOTH
    assert config.device is Device.CPU


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    raw = {
        "site": {"id": "bad id!", "role": "trainer"},
        "data": {"manifest": "missing.csv", "workers": 0, "default_view": "lateral"},
        "preprocessing": {"spacing_mm": "two", "canvas": [1024], "views": "side"},
        "device": "tpu",
        "typo_key": 1,
    }

    with pytest.raises(ConfigError) as caught:
        site_config_from_mapping(raw, base_dir=tmp_path)

    wheres = {p.where for p in caught.value.problems}
    assert wheres == {
        "typo_key",
        "site.id",
        "site.role",
        "data.manifest",
        "data.workers",
        "data.default_view",
        "preprocessing.spacing_mm",
        "preprocessing.canvas",
        "preprocessing.views",
        "device",
    }
    assert "trainer" in str(caught.value)


def test_missing_required_keys_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        site_config_from_mapping({}, base_dir=tmp_path)

    assert set(caught.value.codes) == {"missing-key"}
    assert {p.where for p in caught.value.problems} == {"site.id", "data.manifest"}


def test_unreadable_and_non_mapping_files_get_clear_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("site: [unclosed\n")
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")

    with pytest.raises(ConfigError) as missing:
        load_site_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError) as invalid:
        load_site_config(broken)
    with pytest.raises(ConfigError) as wrong_type:
        load_site_config(listing)

    assert missing.value.codes == ["unreadable-file"]
    assert invalid.value.codes == ["invalid-yaml"]
    assert wrong_type.value.codes == ["wrong-type"]


def test_written_config_reads_back_identically(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {"site": {"id": "B"}, "data": {"manifest": "manifest.csv", "workers": 2}},
    )
    config = load_site_config(path)

    copy_path = write_site_config(config, tmp_path / "copy.yaml")
    again = load_site_config(copy_path)

    assert again.site_id == config.site_id
    assert again.data == config.data
    assert again.preprocessing == config.preprocessing
    assert "manifest: manifest.csv" in copy_path.read_text()


def test_the_unrealistic_quantile_is_read_and_checked(tmp_path: Path) -> None:
    # Prepare
    (tmp_path / "manifest.csv").write_text("scan_id\n")
    base = {"site": {"id": "A"}, "data": {"manifest": "manifest.csv"}}
    chosen = {**base, "privacy": {"audit": {"unrealistic_quantile": 0.95}}}
    outside = {**base, "privacy": {"audit": {"unrealistic_quantile": 0.3}}}

    # Execute
    config = site_config_from_mapping(chosen, base_dir=tmp_path)
    default = site_config_from_mapping(base, base_dir=tmp_path)
    with pytest.raises(ConfigError) as caught:
        site_config_from_mapping(outside, base_dir=tmp_path)

    # Assert
    assert config.privacy.audit.unrealistic_quantile == 0.95
    assert default.privacy.audit.unrealistic_quantile == 0.99
    assert {p.where for p in caught.value.problems} == {
        "privacy.audit.unrealistic_quantile"
    }
