from __future__ import annotations

import datetime
import json
from pathlib import Path

import numpy as np
import pytest

from fedbone.data import prepare as prepare_module
from fedbone.data.cache import SiteCache
from fedbone.data.dicom_write import (
    NMHeader,
    SingleViewStorage,
    single_view_dataset,
    write_nm_whole_body,
)
from fedbone.data.prepare import prepare_site_cache
from fedbone.data.scan import NMScan, View
from fedbone.data.spec import PreprocessSpec, ViewMode
from fedbone.errors import CacheError, ManifestError

SHAPE = (128, 32)
SPACING_MM = (4.0, 4.0)
SPEC = PreprocessSpec(spacing_mm=4.0, canvas_height=128, canvas_width=32)
COLUMNS = "scan_id,scan_file,patient_id,split,label_bm,label_ca,age,time_death_days,"
COLUMNS += "event_death"


def body_counts(rng: np.random.Generator) -> np.ndarray:
    mean = np.full(SHAPE, 0.3)
    top = int(rng.integers(4, 12))
    mean[top:, 8:24] = 20.0
    mean[top + 10 : top + 60, 15:17] = 80.0  # a spine
    return rng.poisson(mean).astype(np.uint16)


def write_good_scan(path: Path, seed: int, age: float | None = 70.0) -> Path:
    rng = np.random.default_rng(seed)
    header = NMHeader(
        patient_id=f"P{seed}",
        patient_age_years=age,
        patient_sex="F",
        study_date=datetime.date(2022, 5, 1),
        tracer="DPD",
        uid_seed=f"prepare-{seed}",
    )
    views = {View.ANTERIOR: body_counts(rng), View.POSTERIOR: body_counts(rng)}
    return write_nm_whole_body(path, views, SPACING_MM, header)


def write_rgb_capture(path: Path) -> Path:
    ds = single_view_dataset(
        body_counts(np.random.default_rng(9)),
        SPACING_MM,
        NMHeader(patient_id="P9", uid_seed="rgb"),
        view=View.ANTERIOR,
        storage=SingleViewStorage.SECONDARY_CAPTURE,
    )
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelData = np.zeros((*SHAPE, 3), np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four good scans (P1 twice), a text file and an RGB capture."""
    folder = tmp_path_factory.mktemp("site")
    for seed in range(4):
        write_good_scan(folder / f"good{seed}.dcm", seed, age=None if seed else 70.0)
    (folder / "notes.dcm").write_text("this is not DICOM")
    write_rgb_capture(folder / "capture.dcm")
    rows = [
        "g0,good0.dcm,P1,train,1,0,,100,1",
        "g1,good1.dcm,P1,train,0,,64,200,0",
        "bad1,notes.dcm,P2,train,0,0,,,",
        "g2,good2.dcm,P3,test,0,1,,,",
        "bad2,capture.dcm,P4,val,1,1,,,",
        "g3,good3.dcm,P5,val,,1,,50,1",
    ]
    (folder / "manifest.csv").write_text("\n".join([COLUMNS, *rows]) + "\n")
    return folder


@pytest.fixture(scope="module")
def prepared(
    site: Path, tmp_path_factory: pytest.TempPathFactory
) -> prepare_module.PrepareReport:
    cache_dir = tmp_path_factory.mktemp("prepared") / "cache"
    return prepare_site_cache(site / "manifest.csv", cache_dir, SPEC)


def test_bad_scans_are_quarantined_and_the_rest_cached(
    prepared: prepare_module.PrepareReport,
) -> None:
    cache = SiteCache.open(prepared.cache_dir, verify=True)

    assert (prepared.n_rows, prepared.n_cached, prepared.n_quarantined) == (6, 4, 2)
    assert [r.scan_id for r in cache.index] == ["g0", "g1", "g2", "g3"]
    by_id = {entry.scan_id: entry for entry in prepared.quarantine}
    assert by_id["bad1"].codes == ("unreadable-file",)
    assert by_id["bad1"].error_type == "DicomError"
    assert "rgb-screen-capture" in by_id["bad2"].codes
    assert by_id["bad2"].row_number == 6
    saved = json.loads((prepared.cache_dir / "quarantine.json").read_text())
    assert [entry["scan_id"] for entry in saved] == ["bad1", "bad2"]
    text = (prepared.cache_dir / "prepare-report.txt").read_text()
    assert "4 of 6 scans cached, 2 quarantined" in text
    assert "rgb-screen-capture" in text
    assert not prepared.reused
    assert prepared.content_hash == cache.content_hash


def test_cached_images_and_records_match_the_scans(
    prepared: prepare_module.PrepareReport,
) -> None:
    cache = SiteCache.open(prepared.cache_dir)

    image = cache[0]
    record = cache.index[0]

    assert cache.images.shape == (4, 128, 32)
    assert image.dtype == np.float32
    assert image.max() == 1.0 and image.min() >= 0.0
    assert cache.spec == SPEC
    assert record.endpoints == {"death": (100.0, 1)}
    assert record.age == 70.0  # from the header: the manifest left it empty
    assert cache.index[1].age == 64.0  # the manifest wins over the header
    assert record.tracer == "DPD"
    assert [v.view for v in record.views] == ["anterior"]
    assert record.views[0].total_counts > 0
    assert record.views[0].spacing_mm == SPACING_MM


def test_split_and_label_accessors(prepared: prepare_module.PrepareReport) -> None:
    cache = SiteCache.open(prepared.cache_dir)

    assert cache.indices("train").tolist() == [0, 1]
    assert cache.indices("val").tolist() == [3]
    assert cache.indices("test").tolist() == [2]
    assert cache.labels("bm").tolist() == [1, 0, 0, -1]
    assert cache.labels("ca").tolist() == [0, -1, 1, 1]
    with pytest.raises(ValueError, match="split"):
        cache.indices("holdout")


def test_manifest_problems_stop_before_anything_is_read(
    site: Path, tmp_path: Path
) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"{COLUMNS}\ng0,{site / 'good0.dcm'},P1,train,yes,0,,,\n")
    cache_dir = tmp_path / "cache"

    with pytest.raises(ManifestError) as caught:
        prepare_site_cache(manifest, cache_dir, SPEC)

    assert caught.value.codes == ["invalid-label"]
    assert not cache_dir.exists()


def test_up_to_date_cache_is_reused_unless_forced(site: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    first = prepare_site_cache(site / "manifest.csv", cache_dir, SPEC)

    again = prepare_site_cache(site / "manifest.csv", cache_dir, SPEC)
    forced = prepare_site_cache(site / "manifest.csv", cache_dir, SPEC, force=True)
    both = PreprocessSpec(
        spacing_mm=4.0, canvas_height=128, canvas_width=32, views=ViewMode.BOTH
    )
    respecced = prepare_site_cache(site / "manifest.csv", cache_dir, both)

    assert again.reused and not forced.reused and not respecced.reused
    assert again.n_quarantined == 2 and again.n_cached == 4
    assert again.content_hash == forced.content_hash == first.content_hash
    assert respecced.content_hash != first.content_hash
    assert SiteCache.open(cache_dir).images.shape == (4, 128, 64)


def test_two_workers_write_the_same_cache(
    site: Path, tmp_path: Path, prepared: prepare_module.PrepareReport
) -> None:
    report = prepare_site_cache(
        site / "manifest.csv", tmp_path / "cache", SPEC, workers=2
    )

    assert report.content_hash == prepared.content_hash
    assert report.quarantine == prepared.quarantine


def test_unexpected_errors_are_quarantined_with_their_type(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_read = prepare_module.read_nm_scan

    def flaky_read(path: Path, *, default_view: View | None = None) -> NMScan:
        if Path(path).name == "good2.dcm":
            raise RuntimeError("decoder crashed")
        return real_read(path, default_view=default_view)

    monkeypatch.setattr(prepare_module, "read_nm_scan", flaky_read)

    report = prepare_site_cache(site / "manifest.csv", tmp_path / "cache", SPEC)

    entry = next(e for e in report.quarantine if e.scan_id == "g2")
    assert entry.error_type == "RuntimeError"
    assert entry.codes == ("unexpected-error",)
    assert entry.messages == ("decoder crashed",)
    assert report.n_cached == 3


def test_interrupted_run_keeps_the_previous_cache(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_dir = tmp_path / "cache"
    first = prepare_site_cache(site / "manifest.csv", cache_dir, SPEC)

    def interrupted(path: Path, *, default_view: View | None = None) -> NMScan:
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare_module, "read_nm_scan", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_site_cache(site / "manifest.csv", cache_dir, SPEC, force=True)

    assert SiteCache.open(cache_dir, verify=True).content_hash == first.content_hash
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


def test_a_folder_with_other_files_is_not_replaced(site: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "results"
    cache_dir.mkdir()
    (cache_dir / "thesis.docx").write_text("precious")

    with pytest.raises(CacheError, match="not a fedbone cache"):
        prepare_site_cache(site / "manifest.csv", cache_dir, SPEC)

    assert (cache_dir / "thesis.docx").read_text() == "precious"


def test_damaged_cache_is_rebuilt_instead_of_reused(site: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    first = prepare_site_cache(site / "manifest.csv", cache_dir, SPEC)
    (cache_dir / "quarantine.json").write_text("{not json")
    (cache_dir / "images.f16").write_bytes(b"")

    again = prepare_site_cache(site / "manifest.csv", cache_dir, SPEC)

    assert not again.reused
    assert again.content_hash == first.content_hash
    assert SiteCache.open(cache_dir, verify=True).content_hash == first.content_hash


def test_a_scan_cropped_by_the_canvas_is_warned_about_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_good_scan(tmp_path / "tall.dcm", seed=3)
    (tmp_path / "manifest.csv").write_text(f"{COLUMNS}\nt0,tall.dcm,P3,train,0,0,,,\n")
    half_height = PreprocessSpec(spacing_mm=4.0, canvas_height=64, canvas_width=32)

    report = prepare_site_cache(
        tmp_path / "manifest.csv", tmp_path / "cache", half_height
    )

    summary = json.loads((tmp_path / "cache" / "prepare-report.json").read_text())
    assert report.n_cached == 1
    assert "t0 (tall.dcm): the anterior view lost" in caplog.text
    assert summary["scans_cropped_over_threshold"] == 1
