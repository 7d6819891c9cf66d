"""Finding 12 (data parts): typed refusals instead of crashes, and range checks.

``fedbone inspect`` crashed with a traceback on BitsAllocated=1, on fewer
frames than NumberOfFrames declares and on a file without TransferSyntaxUID;
a manifest with a field over 131,072 characters crashed the csv module; a
header age of 999 years and a 1 x 1 image were accepted. Each must be a typed
problem with a stable code, recorded where the site looks (the quarantine,
the prepare report, the manifest error, the command's exit status 2).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom.uid
import pytest
from dicom_factory import save, set_pixels, single_view, whole_body
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, get_frame
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info

from fedbone.cli.main import main
from fedbone.data.cache import SiteCache
from fedbone.data.dicom_read import read_nm_scan
from fedbone.data.manifest import read_manifest
from fedbone.data.prepare import prepare_site_cache
from fedbone.data.scan import View
from fedbone.data.spec import PreprocessSpec
from fedbone.errors import DicomError, ManifestError

SPEC = PreprocessSpec(spacing_mm=4.0, canvas_height=64, canvas_width=32)
COLUMNS = "scan_id,scan_file,patient_id,split,label_bm,label_ca,scanner"
CSV_FIELD_LIMIT = 131_072


def _inspect(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run ``fedbone inspect`` and return its exit status and all it printed."""
    code = main(["inspect", str(path)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _one_bit(tmp_path: Path) -> Path:
    ds = whole_body()
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 1, 0
    return save(ds, tmp_path / "one-bit.dcm")


def _fewer_frames_encapsulated(tmp_path: Path) -> Path:
    ds = whole_body(transfer_syntax=pydicom.uid.RLELossless)
    ds.PixelData = encapsulate([get_frame(ds.PixelData, 0, number_of_frames=2)])
    return save(ds, tmp_path / "one-of-two-frames.dcm")


def _fewer_frames_native(tmp_path: Path) -> Path:
    ds = whole_body()
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    return save(ds, tmp_path / "half-the-bytes.dcm")


def _more_frames_than_declared(tmp_path: Path) -> Path:
    ds = whole_body()
    ds.NumberOfFrames = 1
    return save(ds, tmp_path / "two-frames-declared-one.dcm")


def _no_transfer_syntax(tmp_path: Path) -> Path:
    """A Part 10 file whose file meta lacks (0002,0010), dataset explicit VR LE."""
    ds = whole_body()
    del ds.file_meta.TransferSyntaxUID
    head = DicomBytesIO()
    head.is_little_endian, head.is_implicit_VR = True, False
    head.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(head, ds.file_meta, enforce_standard=False)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    plain = Dataset()
    plain.update(ds)
    write_dataset(body, plain)
    path = tmp_path / "no-transfer-syntax.dcm"
    path.write_bytes(head.getvalue() + body.getvalue())
    return path


INSPECT_CRASHES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "bits-allocated-1": (_one_bit, "unsupported-bit-depth"),
    "fewer-frames-encapsulated": (_fewer_frames_encapsulated, "wrong-frame-count"),
    "fewer-frames-native": (_fewer_frames_native, "unreadable-file"),
    "more-frames-than-declared": (_more_frames_than_declared, "wrong-frame-count"),
    "no-transfer-syntax": (_no_transfer_syntax, "missing-transfer-syntax"),
}


@pytest.mark.parametrize("name", sorted(INSPECT_CRASHES))
def test_inspect_of_a_malformed_file_is_a_typed_problem_not_a_traceback(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    name: str,
) -> None:
    write, expected = INSPECT_CRASHES[name]
    path = write(tmp_path)

    with pytest.raises(DicomError) as raised:
        read_nm_scan(path)
    code, printed = _inspect(path, capsys)

    assert raised.value.codes == [expected]
    assert code == 2
    assert f"[{expected}]" in caplog.text
    assert "Traceback" not in printed + caplog.text


def test_manifest_field_over_the_csv_limit_is_a_manifest_error_naming_the_cell(
    tmp_path: Path,
) -> None:
    save(whole_body(), tmp_path / "a.dcm")
    save(whole_body(), tmp_path / "b.dcm")
    blob = "Z" * (CSV_FIELD_LIMIT + 1)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        f"{COLUMNS}\na,a.dcm,P1,train,0,0,\nb,b.dcm,P2,train,0,0,{blob}\n"
    )

    with pytest.raises(ManifestError) as raised:
        read_manifest(manifest)
    with pytest.raises(ManifestError) as from_prepare:
        prepare_site_cache(manifest, tmp_path / "cache", SPEC)

    assert raised.value.codes == ["field-too-long"]
    assert raised.value.problems[0].where == "row 3, column scanner"
    assert "131,072 characters" in str(raised.value)
    assert from_prepare.value.codes == ["field-too-long"]
    assert not (tmp_path / "cache").exists()


def test_header_age_999_is_treated_as_missing_and_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ds = whole_body()
    ds.PatientAge = "999Y"
    save(ds, tmp_path / "old.dcm")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"{COLUMNS}\nold,old.dcm,P1,train,0,0,\n")
    cache_dir = tmp_path / "cache"

    scan = read_nm_scan(tmp_path / "old.dcm")
    code, printed = _inspect(tmp_path / "old.dcm", capsys)
    report = prepare_site_cache(manifest, cache_dir, SPEC)
    reused = prepare_site_cache(manifest, cache_dir, SPEC)

    assert scan.metadata.age_years is None
    assert [w.code for w in scan.metadata.warnings] == ["absurd-age"]
    assert code == 0 and "[absurd-age]" in printed
    assert report.n_cached == 1
    assert [w.code for w in report.warnings] == ["absurd-age"]
    saved = json.loads((cache_dir / "prepare-report.json").read_text())
    assert saved["warning_codes"] == {"absurd-age": 1}
    assert SiteCache.open(cache_dir).index[0].age is None
    assert "999Y" in (cache_dir / "prepare-report.txt").read_text()
    assert reused.reused and reused.warnings == report.warnings


def test_one_by_one_image_is_quarantined_with_its_reason(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    tiny = single_view(view=View.ANTERIOR)
    set_pixels(tiny, np.array([[5]], np.uint16))
    save(tiny, tmp_path / "tiny.dcm")
    save(whole_body(), tmp_path / "good.dcm")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        f"{COLUMNS}\ngood,good.dcm,P1,train,0,0,\ntiny,tiny.dcm,P2,train,0,0,\n"
    )

    code, printed = _inspect(tmp_path / "tiny.dcm", capsys)
    report = prepare_site_cache(manifest, tmp_path / "cache", SPEC)

    assert code == 2 and "Traceback" not in printed
    assert "[absurd-image-size]" in caplog.text
    assert (report.n_cached, report.n_quarantined) == (1, 1)
    assert report.quarantine[0].scan_id == "tiny"
    assert report.quarantine[0].codes == ("absurd-image-size",)
    saved = json.loads((tmp_path / "cache" / "quarantine.json").read_text())
    assert saved[0]["codes"] == ["absurd-image-size"]
    assert "1 x 1 pixels" in saved[0]["messages"][0]
