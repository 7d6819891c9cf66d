"""The fast-scan manifest and the site config key that names it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fedbone.config.site import (
    DataSettings,
    SiteConfig,
    SiteRole,
    load_site_config,
    site_config_from_mapping,
    write_site_config,
)
from fedbone.enhance.fast_manifest import fast_manifest_sha256, read_fast_manifest
from fedbone.errors import ConfigError, ManifestError


def write_csv(folder: Path, text: str) -> Path:
    path = folder / "fast_scans.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_rows_are_read_with_paths_relative_to_the_manifest(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        "scan_id,fast_scan_file,speed,note\n"
        "S-1,dicom/S-1_fast2x.dcm,2,\n"
        "S-1,dicom/S-1_fast3x.dcm,3x,second pass\n"
        ",,,\n"
        "S-2,/archive/S-2.dcm,1.5,\n",
    )

    rows = read_fast_manifest(path)

    assert [(r.scan_id, r.speed, r.level) for r in rows] == [
        ("S-1", 2.0, "2x-real"),
        ("S-1", 3.0, "3x-real"),
        ("S-2", 1.5, "1.5x-real"),
    ]
    assert rows[0].fast_scan_file == tmp_path.resolve() / "dicom" / "S-1_fast2x.dcm"
    assert rows[2].fast_scan_file == Path("/archive/S-2.dcm")


def test_every_problem_of_the_rows_is_listed_at_once(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        "scan_id,fast_scan_file,speed\n"
        "S-1,a.dcm,fast\n"
        "S-2,b.dcm,1\n"
        ",c.dcm,2\n"
        "S-3,,2\n"
        "S-4,d.dcm,2\n"
        "S-4,e.dcm,2\n"
        "S-5,d.dcm,3\n",
    )

    with pytest.raises(ManifestError) as caught:
        read_fast_manifest(path)

    assert sorted(caught.value.codes) == [
        "duplicate-file",
        "duplicate-row",
        "missing-value",
        "missing-value",
        "unknown-speed",
        "unknown-speed",
    ]
    assert {p.where for p in caught.value.problems} >= {
        "row 2, column speed",
        "row 7, column scan_id",
        "row 8, column fast_scan_file",
    }


def test_missing_columns_are_named(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "scan_id,file\nS-1,a.dcm\n")

    with pytest.raises(ManifestError) as caught:
        read_fast_manifest(path)

    assert caught.value.codes == ["missing-column", "missing-column"]
    assert "fast_scan_file" in str(caught.value)


def test_an_unreadable_manifest_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as caught:
        fast_manifest_sha256(tmp_path / "absent.csv")

    assert caught.value.codes == ["unreadable-manifest"]


def site_mapping(**data: object) -> dict[str, object]:
    return {"site": {"id": "vienna"}, "data": {"manifest": "manifest.csv", **data}}


def test_site_config_resolves_fast_manifest_like_the_other_paths(
    tmp_path: Path,
) -> None:
    (tmp_path / "manifest.csv").write_text("scan_id\n")
    write_csv(tmp_path, "scan_id,fast_scan_file,speed\n")
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(site_mapping(fast_manifest="fast_scans.csv")))

    config = load_site_config(path)
    written = write_site_config(config, tmp_path / "again.yaml")

    assert config.data.fast_manifest == tmp_path.resolve() / "fast_scans.csv"
    assert load_site_config(written).data.fast_manifest == config.data.fast_manifest
    assert yaml.safe_load(written.read_text())["data"]["fast_manifest"] == (
        "fast_scans.csv"
    )


def test_a_fast_manifest_that_is_set_but_missing_is_a_config_problem(
    tmp_path: Path,
) -> None:
    (tmp_path / "manifest.csv").write_text("scan_id\n")

    with pytest.raises(ConfigError) as caught:
        site_config_from_mapping(
            site_mapping(fast_manifest="absent.csv"), base_dir=tmp_path
        )

    assert [(p.code, p.where) for p in caught.value.problems] == [
        ("missing-file", "data.fast_manifest")
    ]


def test_without_fast_scans_the_written_config_has_no_such_key(tmp_path: Path) -> None:
    config = SiteConfig(
        site_id="vienna",
        role=SiteRole.TRAIN,
        data=DataSettings(manifest=tmp_path / "manifest.csv"),
        egress_log=tmp_path / "egress.jsonl",
        work_dir=tmp_path / "work",
    )

    written = write_site_config(config, tmp_path / "site.yaml")

    assert config.data.fast_manifest is None
    assert "fast_manifest" not in yaml.safe_load(written.read_text())["data"]
