from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest

from fedbone.data.dicom_read import read_nm_scan
from fedbone.data.manifest import read_manifest
from fedbone.data.phantom import (
    MANIFEST_COLUMNS,
    generate_site_cohort,
    plan_site_cohort,
    render_planned_scan,
)
from fedbone.data.scan import View


def manifest_rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "manifest.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def site_b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("site-b")
    generate_site_cohort("B", folder, scale=0.0, min_scans=6, seed=3, previews=2)
    return folder


def test_cohort_writes_dicom_manifest_and_previews(site_b: Path) -> None:
    rows = manifest_rows(site_b)

    manifest = read_manifest(site_b / "manifest.csv")

    assert len(rows) == len(manifest.rows) == 6
    assert list(rows[0]) == list(MANIFEST_COLUMNS)
    assert manifest.warnings == ()
    assert all((site_b / row["scan_file"]).is_file() for row in rows)
    assert len(list((site_b / "previews").glob("*.png"))) == 2


def test_written_scan_reads_back_with_both_views_and_header(site_b: Path) -> None:
    row = manifest_rows(site_b)[0]
    plan = plan_site_cohort("B", scale=0.0, min_scans=6, seed=3)[0]

    scan = read_nm_scan(site_b / row["scan_file"])

    rendered = render_planned_scan(plan)
    for view in (View.ANTERIOR, View.POSTERIOR):
        np.testing.assert_array_equal(scan.view(view).counts, rendered.views[view])
    assert scan.metadata.patient_id == row["patient_id"]
    assert scan.metadata.sex == row["sex"]
    assert scan.metadata.age_years == pytest.approx(float(row["age"]), abs=1.0)
    assert scan.metadata.tracer == row["tracer"]
    assert f"{scan.metadata.manufacturer} {scan.metadata.model}" == row["scanner"]
    assert scan.view(View.ANTERIOR).spacing_mm == (2.4, 2.4)


def test_same_seed_and_any_worker_count_give_identical_files(
    site_b: Path, tmp_path: Path
) -> None:
    generate_site_cohort(
        "B", tmp_path, scale=0.0, min_scans=6, seed=3, workers=2, previews=0
    )

    for row in manifest_rows(site_b):
        assert (tmp_path / row["scan_file"]).read_bytes() == (
            site_b / row["scan_file"]
        ).read_bytes()
    assert (tmp_path / "manifest.csv").read_bytes() == (
        site_b / "manifest.csv"
    ).read_bytes()


def test_site_f_has_no_age_sex_or_cardiac_label(tmp_path: Path) -> None:
    summary = generate_site_cohort("F", tmp_path, scale=0.0, min_scans=3, previews=0)

    rows = manifest_rows(tmp_path)
    ds = pydicom.dcmread(tmp_path / rows[0]["scan_file"], stop_before_pixels=True)

    assert {row["age"] for row in rows} == {""}
    assert {row["sex"] for row in rows} == {""}
    assert {row["label_ca"] for row in rows} == {""}
    assert {row["perugini_grade"] for row in rows} == {""}
    assert not ds.get("PatientAge") and not ds.get("PatientSex")
    assert summary.ca_positive == {}
    assert summary.by_split == {"test": 3}


def test_outcome_site_writes_paired_follow_up_columns(tmp_path: Path) -> None:
    summary = generate_site_cohort("D", tmp_path, scale=0.0, min_scans=3, previews=0)

    manifest = read_manifest(tmp_path / "manifest.csv")

    assert summary.has_outcomes
    assert set(manifest.endpoints) == {"death", "hf"}
    rows = manifest_rows(tmp_path)
    assert all(int(row["time_death_days"]) >= 1 for row in rows)
    assert {row["event_hf"] for row in rows} <= {"0", "1"}
