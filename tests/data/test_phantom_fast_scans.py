"""Phantom cohorts with fast acquisitions of every visit (the real-pairs path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from fedbone.data.dicom_read import read_nm_scan
from fedbone.data.phantom import (
    fast_acquisition,
    generate_site_cohort,
    plan_site_cohort,
    render_planned_scan,
)
from fedbone.data.phantom.plan import fast_seed_sequence
from fedbone.data.scan import View
from fedbone.data.spec import PreprocessSpec
from fedbone.enhance.fast_manifest import read_fast_manifest
from fedbone.enhance.registration import register_translation
from fedbone.simulation.phantom_sites import write_phantom_federation

SCANS = 3


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Site B without and with 2x and 3x acquisitions, from one seed."""
    plain = tmp_path_factory.mktemp("plain")
    fast = tmp_path_factory.mktemp("fast")
    generate_site_cohort("B", plain, scale=0.0, min_scans=SCANS, seed=5, previews=0)
    generate_site_cohort(
        "B",
        fast,
        scale=0.0,
        min_scans=SCANS,
        seed=5,
        previews=0,
        fast_speeds=(2, 3),
    )
    return plain, fast


def test_fast_scans_are_listed_in_a_manifest_the_enhancer_reads(
    cohorts: tuple[Path, Path],
) -> None:
    _, fast = cohorts

    rows = read_fast_manifest(fast / "fast_scans.csv")

    assert len(rows) == 2 * SCANS
    assert {row.level for row in rows} == {"2x-real", "3x-real"}
    assert all(row.fast_scan_file.is_file() for row in rows)
    assert rows[0].fast_scan_file.name == f"{rows[0].scan_id}_fast2x.dcm"


def test_standard_scans_and_manifest_are_unchanged_by_fast_speeds(
    cohorts: tuple[Path, Path],
) -> None:
    plain, fast = cohorts

    standard_files = sorted(p.name for p in (plain / "dicom").iterdir())

    assert not (plain / "fast_scans.csv").exists()
    assert len(standard_files) == SCANS
    for name in [*(f"dicom/{n}" for n in standard_files), "manifest.csv"]:
        assert (plain / name).read_bytes() == (fast / name).read_bytes()


def test_a_fast_scan_is_the_same_visit_with_a_kth_of_the_counts(
    cohorts: tuple[Path, Path],
) -> None:
    _, fast = cohorts
    row = read_fast_manifest(fast / "fast_scans.csv")[1]  # the first 3x scan

    standard = read_nm_scan(fast / "dicom" / f"{row.scan_id}.dcm")
    quick = read_nm_scan(row.fast_scan_file)

    for view in (View.ANTERIOR, View.POSTERIOR):
        ratio = standard.view(view).total_counts / quick.view(view).total_counts
        assert ratio == pytest.approx(3.0, rel=0.02)
    assert quick.metadata.patient_id == standard.metadata.patient_id
    assert quick.metadata.study_date == standard.metadata.study_date
    assert standard.metadata.scan_velocity_cm_min is not None
    assert quick.metadata.scan_velocity_cm_min == pytest.approx(
        3 * standard.metadata.scan_velocity_cm_min
    )
    assert standard.metadata.acquisition_duration_s is not None
    assert quick.metadata.acquisition_duration_s == pytest.approx(
        standard.metadata.acquisition_duration_s / 3, abs=0.1
    )


def test_the_fast_file_holds_an_independent_draw_shifted_by_a_few_pixels(
    cohorts: tuple[Path, Path],
) -> None:
    _, fast = cohorts
    plan = plan_site_cohort("B", scale=0.0, min_scans=SCANS, seed=5)[0]
    scan = render_planned_scan(plan)
    rng = np.random.default_rng(fast_seed_sequence(5, "B", plan.index, 2))

    acquired = fast_acquisition(scan, 2, rng)

    written = read_nm_scan(fast / "dicom" / f"{plan.scan_id}_fast2x.dcm")
    anterior = acquired.views[View.ANTERIOR]
    np.testing.assert_array_equal(written.view(View.ANTERIOR).counts, anterior)
    assert max(abs(v) for v in acquired.shift_px) <= 2
    found = register_translation(scan.views[View.ANTERIOR], anterior, max_shift=4)
    assert found == (-acquired.shift_px[0], -acquired.shift_px[1])
    halved = np.round(scan.views[View.ANTERIOR] / 2)
    assert not np.array_equal(anterior, halved)


@pytest.mark.parametrize("speeds", [(1,), (2, 2), (2.5,)])
def test_fast_speeds_must_be_distinct_whole_numbers_from_two(
    tmp_path: Path, speeds: tuple[int, ...]
) -> None:
    with pytest.raises(ValueError, match="fast_speeds"):
        generate_site_cohort("B", tmp_path, min_scans=1, fast_speeds=speeds)


def test_phantom_site_config_names_the_fast_manifest_only_when_written(
    tmp_path: Path,
) -> None:
    spec = PreprocessSpec(spacing_mm=16.0, canvas_height=128, canvas_width=32)

    def site_b(folder: Path, fast_speeds: tuple[int, ...]) -> Path:
        made = write_phantom_federation(
            folder,
            sites=["B"],
            spec=spec,
            scale=0.0,
            min_scans=1,
            seed=0,
            workers=1,
            previews=0,
            fast_speeds=fast_speeds,
        )
        return made[0].config_path

    plain = site_b(tmp_path / "plain", ())
    fast = site_b(tmp_path / "fast", (2,))

    assert "fast_manifest" not in yaml.safe_load(plain.read_text())["data"]
    data = yaml.safe_load(fast.read_text())["data"]
    assert data["fast_manifest"] == "fast_scans.csv"
