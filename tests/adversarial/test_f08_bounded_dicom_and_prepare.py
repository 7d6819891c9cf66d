"""Finding 8: inputs a site reads are bounded, and prepare survives a dead worker.

A deflate-syntax DICOM of about 1 MB inflated to 1.1 GB in memory; a header may
declare gigabytes of pixels in a small compressed file; and a prepare worker
killed by the system (the out-of-memory killer) hung ``prepare --workers 2``
forever. Each such file must be quarantined with its reason, before the
memory is spent, while the rest of the site's scans are cached.
"""

from __future__ import annotations

import json
import os
import signal
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pydicom.uid
import pytest
from dicom_factory import save, whole_body
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info

from fedbone.data import prepare as prepare_module
from fedbone.data.cache import SiteCache
from fedbone.data.dicom_read import (
    MAX_DECODED_PIXEL_BYTES,
    MAX_FILE_BYTES,
    read_nm_scan,
)
from fedbone.data.prepare import PrepareError, PrepareReport, prepare_site_cache
from fedbone.data.spec import PreprocessSpec
from fedbone.errors import DicomError, FedboneError

SPEC = PreprocessSpec(spacing_mm=4.0, canvas_height=64, canvas_width=32)
COLUMNS = "scan_id,scan_file,patient_id,split,label_bm,label_ca"
BOMB_MIB = 1100  # as filed: a ~1 MB file inflating to 1.1 GB
# The reader may hold one inflate step and a small file; never the dataset.
READ_PEAK_BYTES = 64 * 2**20
_REAL_PREPARE_ONE = prepare_module._prepare_one


def _deflate_bomb(path: Path, inflated_mib: int) -> Path:
    """Write a valid deflated NM file whose pixel data inflates to ``inflated_mib``.

    The zeros are compressed once (1 MiB) and the block repeated: a full flush
    makes each block independent, so the file is built in milliseconds.
    """
    ds = whole_body()
    del ds.PixelData
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    head = DicomBytesIO()
    head.is_little_endian, head.is_implicit_VR = True, False
    head.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(head, ds.file_meta)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    plain = Dataset()
    plain.update(ds)
    write_dataset(body, plain)
    length = inflated_mib * 2**20
    body.write(b"\xe0\x7f\x10\x00OW\x00\x00" + length.to_bytes(4, "little"))
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [squeeze.compress(body.getvalue()), squeeze.flush(zlib.Z_FULL_FLUSH)]
    block = squeeze.compress(bytes(2**20)) + squeeze.flush(zlib.Z_FULL_FLUSH)
    parts += [block] * inflated_mib + [squeeze.flush()]
    path.write_bytes(head.getvalue() + b"".join(parts))
    return path


def _site(folder: Path, attacks: dict[str, Path], good: int = 2) -> Path:
    """Write ``good`` good scans plus the attack files, and their manifest."""
    rows = []
    for index in range(good):
        save(whole_body(), folder / f"good{index}.dcm")
        rows.append(f"good{index},good{index}.dcm,P{index},train,0,0")
    for offset, (scan_id, path) in enumerate(attacks.items()):
        rows.append(f"{scan_id},{path.name},Q{offset},train,1,0")
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join([COLUMNS, *rows]) + "\n")
    return manifest


def _quarantined(report: PrepareReport, scan_id: str) -> prepare_module.QuarantineEntry:
    saved = json.loads((report.cache_dir / "quarantine.json").read_text())
    assert scan_id in [entry["scan_id"] for entry in saved]
    return next(entry for entry in report.quarantine if entry.scan_id == scan_id)


def test_deflate_bomb_is_quarantined_before_inflating_past_the_bound(
    tmp_path: Path,
) -> None:
    bomb = _deflate_bomb(tmp_path / "bomb.dcm", BOMB_MIB)
    manifest = _site(tmp_path, {"bomb": bomb})
    assert bomb.stat().st_size < 2 * 2**20 < MAX_FILE_BYTES < BOMB_MIB * 2**20

    tracemalloc.start()
    try:
        with pytest.raises(DicomError) as raised:
            read_nm_scan(bomb)
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    report = prepare_site_cache(manifest, tmp_path / "cache", SPEC)

    assert raised.value.codes == ["oversized-file"]
    assert "deflated dataset inflates to over" in str(raised.value)
    assert read_peak < READ_PEAK_BYTES
    entry = _quarantined(report, "bomb")
    assert entry.codes == ("oversized-file",)
    assert (report.n_cached, report.n_quarantined) == (2, 1)


def test_decoded_size_declared_over_the_bound_is_quarantined_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = whole_body(transfer_syntax=pydicom.uid.RLELossless)
    ds.Rows = ds.Columns = 8192
    ds.BitsAllocated = 32  # 2 x 8192 x 8192 x 4 bytes = 512 MiB declared
    assert MAX_DECODED_PIXEL_BYTES < 512 * 2**20
    ds.PixelData = encapsulate([b"\x00" * 64, b"\x00" * 64])
    huge = save(ds, tmp_path / "huge.dcm")
    manifest = _site(tmp_path, {"huge": huge})

    def never_decode(self: Dataset) -> np.ndarray:
        pytest.fail("pixel data decoded despite an oversized header")

    monkeypatch.setattr(Dataset, "pixel_array", property(never_decode))
    with pytest.raises(DicomError) as raised:
        read_nm_scan(huge)
    monkeypatch.undo()
    report = prepare_site_cache(manifest, tmp_path / "cache", SPEC)

    assert raised.value.codes == ["oversized-image"]
    assert "512 MiB of decoded pixels" in str(raised.value)
    assert _quarantined(report, "huge").codes == ("oversized-image",)
    assert report.n_cached == 2


def _dies_on_boom(task: prepare_module._Task) -> prepare_module._Outcome:
    """Stand in for the out-of-memory killer: SIGKILL the worker on ``boom``."""
    if task.row.scan_id.startswith("boom"):
        os.kill(os.getpid(), signal.SIGKILL)
    return _REAL_PREPARE_ONE(task)


@pytest.mark.timeout(120)
def test_a_killed_worker_quarantines_its_scan_and_prepare_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    boom = save(whole_body(), tmp_path / "boom.dcm")
    manifest = _site(tmp_path, {"boom": boom}, good=4)
    cache_dir = tmp_path / "cache"
    monkeypatch.setattr(prepare_module, "_prepare_one", _dies_on_boom)

    report = prepare_site_cache(manifest, cache_dir, SPEC, workers=2)

    entry = _quarantined(report, "boom")
    assert entry.codes == ("worker-died",)
    assert "worker process reading this scan died" in entry.messages[0]
    cache = SiteCache.open(cache_dir, verify=True)
    assert [record.scan_id for record in cache.index] == [f"good{i}" for i in range(4)]
    assert "worker-died" in (cache_dir / "prepare-report.txt").read_text()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.timeout(120)
def test_repeated_worker_deaths_stop_prepare_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = {f"boom{i}": save(whole_body(), tmp_path / f"boom{i}.dcm") for i in (1, 2)}
    manifest = _site(tmp_path, paths, good=1)
    monkeypatch.setattr(prepare_module, "_prepare_one", _dies_on_boom)
    monkeypatch.setattr(prepare_module, "MAX_WORKER_DEATHS", 1)

    with pytest.raises(PrepareError) as raised:
        prepare_site_cache(manifest, tmp_path / "cache", SPEC, workers=2)

    assert isinstance(raised.value, FedboneError)  # the CLI exits 2, no traceback
    assert "2 scans killed the worker" in str(raised.value)
    assert "fewer workers" in str(raised.value)
    assert not (tmp_path / "cache").exists()
    assert not (tmp_path / ".cache.partial").exists()
