"""A corpus of deliberately broken files: every problem code, and all at once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom.uid
import pytest
from dicom_factory import counts, save, set_pixels, single_view, whole_body
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate

from fedbone.data.dicom_read import check_nm_dataset, read_nm_scan
from fedbone.data.dicom_write import SingleViewStorage
from fedbone.data.scan import View
from fedbone.errors import DicomError


def _modality_ct(ds: Dataset) -> None:
    ds.Modality = "CT"


def _no_pixels(ds: Dataset) -> None:
    del ds.PixelData


def _tomo_image_type(ds: Dataset) -> None:
    ds.ImageType = ["ORIGINAL", "PRIMARY", "TOMO", "EMISSION"]


def _rotation_vector(ds: Dataset) -> None:
    ds.RotationVector = [1, 1]


def _spect_like_frames(ds: Dataset) -> None:
    set_pixels(ds, np.stack([counts(i) for i in range(6)]))
    ds.DetectorVector = [1, 2, 1, 2, 1, 2]
    ds.EnergyWindowVector = [1] * 6


def _rgb(ds: Dataset) -> None:
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    shape = (int(ds.NumberOfFrames), ds.Rows, ds.Columns, 3)
    ds.PixelData = np.zeros(shape, np.uint8).tobytes()


def _no_spacing(ds: Dataset) -> None:
    del ds.PixelSpacing


def _one_spacing_value(ds: Dataset) -> None:
    ds.PixelSpacing = "2.4"


def _spacing_in_cm(ds: Dataset) -> None:
    ds.PixelSpacing = [0.24, 0.24]


def _spacing_in_um(ds: Dataset) -> None:
    ds.PixelSpacing = [2400, 2400]


def _nan_float_pixels(ds: Dataset) -> None:
    pixels = counts(7).astype(np.float32)
    pixels[3, 4] = np.nan
    pixels[5, 6] = np.inf
    del ds.PixelData, ds.BitsStored, ds.HighBit, ds.PixelRepresentation
    ds.BitsAllocated = 32
    ds.FloatPixelData = pixels.tobytes()


def _negative_signed_pixels(ds: Dataset) -> None:
    pixels = counts(7).astype(np.int16)
    pixels[0, 0] = -5
    set_pixels(ds, pixels, signed=True)


def _garbage_rle(ds: Dataset) -> None:
    ds.file_meta.TransferSyntaxUID = pydicom.uid.RLELossless
    ds.PixelData = encapsulate([b"\x07" + b"\x00" * 63])


def _no_view(ds: Dataset) -> None:
    del ds.DetectorInformationSequence[0].ViewCodeSequence
    ds.PatientOrientation = ""


def _two_anterior_heads(ds: Dataset) -> None:
    item = ds.DetectorInformationSequence[1]
    item.ViewCodeSequence = ds.DetectorInformationSequence[0].ViewCodeSequence


def _one_bit(ds: Dataset) -> None:
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 1, 0


def _declares_one_of_two_frames(ds: Dataset) -> None:
    ds.NumberOfFrames = 1


def _one_by_one(ds: Dataset) -> None:
    set_pixels(ds, np.array([[5]], np.uint16))


def _huge_header(ds: Dataset) -> None:
    ds.Rows = ds.Columns = 8192
    ds.NumberOfFrames = 1000
    ds.NumberOfDetectors = 1000


BROKEN: dict[str, tuple[Callable[[Dataset], None], list[str]]] = {
    "ct": (_modality_ct, ["wrong-modality"]),
    "no-pixels": (_no_pixels, ["no-pixel-data"]),
    "tomo-image-type": (_tomo_image_type, ["tomographic-data"]),
    "rotation-vector": (_rotation_vector, ["tomographic-data"]),
    "six-frames": (_spect_like_frames, ["tomographic-data"]),
    "rgb": (_rgb, ["rgb-screen-capture"]),
    "no-spacing": (_no_spacing, ["missing-spacing"]),
    "one-spacing-value": (_one_spacing_value, ["missing-spacing"]),
    "spacing-in-cm": (_spacing_in_cm, ["absurd-spacing"]),
    "spacing-in-um": (_spacing_in_um, ["absurd-spacing"]),
    "garbage-rle": (_garbage_rle, ["undecodable-pixels"]),
    "two-anterior-heads": (_two_anterior_heads, ["duplicate-view"]),
    "bits-allocated-1": (_one_bit, ["unsupported-bit-depth"]),
    "declares-one-of-two-frames": (_declares_one_of_two_frames, ["wrong-frame-count"]),
    "huge-header": (_huge_header, ["oversized-image"]),
}
BROKEN_SINGLE_VIEW: dict[str, tuple[Callable[[Dataset], None], list[str]]] = {
    "nan-float-pixels": (_nan_float_pixels, ["non-finite-pixels"]),
    "negative-signed": (_negative_signed_pixels, ["negative-counts"]),
    "no-view": (_no_view, ["unknown-view"]),
    "one-by-one": (_one_by_one, ["absurd-image-size"]),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_whole_body_file_reports_its_problem(tmp_path, name):
    breaker, expected = BROKEN[name]
    ds = whole_body()
    breaker(ds)
    path = save(ds, tmp_path / f"{name}.dcm")

    with pytest.raises(DicomError) as raised:
        read_nm_scan(path)

    assert raised.value.codes == expected
    assert str(path) in str(raised.value)


@pytest.mark.parametrize("name", sorted(BROKEN_SINGLE_VIEW))
def test_broken_single_view_file_reports_its_problem(tmp_path, name):
    breaker, expected = BROKEN_SINGLE_VIEW[name]
    ds = single_view(view=View.ANTERIOR)
    breaker(ds)
    path = save(ds, tmp_path / f"{name}.dcm")

    with pytest.raises(DicomError) as raised:
        read_nm_scan(path)

    assert raised.value.codes == expected


def test_every_problem_of_one_file_is_listed(tmp_path):
    ds = single_view(storage=SingleViewStorage.SECONDARY_CAPTURE, write_view_code=False)
    _modality_ct(ds)
    _spacing_in_um(ds)
    _negative_signed_pixels(ds)
    path = save(ds, tmp_path / "many.dcm")

    with pytest.raises(DicomError) as raised:
        read_nm_scan(path)

    assert sorted(raised.value.codes) == sorted(
        ["wrong-modality", "absurd-spacing", "unknown-view", "negative-counts"]
    )
    assert "4 problems" in str(raised.value)


def test_check_nm_dataset_lists_problems_without_raising():
    ds = whole_body()
    _modality_ct(ds)
    _no_spacing(ds)
    _two_anterior_heads(ds)

    problems = check_nm_dataset(ds)

    assert sorted(p.code for p in problems) == [
        "duplicate-view",
        "missing-spacing",
        "wrong-modality",
    ]
    assert all(p.message for p in problems)


def _truncate(path: Path, keep: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.mark.parametrize(
    "syntax", [pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.RLELossless]
)
def test_truncated_file_is_unreadable(tmp_path, syntax):
    path = _truncate(save(whole_body(transfer_syntax=syntax), tmp_path / "t.dcm"), 0.8)

    with pytest.raises(DicomError) as raised:
        read_nm_scan(path)

    assert raised.value.codes == ["unreadable-file"]
    assert "truncated" in str(raised.value)


@pytest.mark.parametrize("content", [b"", b"hello, not DICOM", b"\x00" * 200])
def test_non_dicom_file_is_unreadable(tmp_path, content):
    path = tmp_path / "x.dcm"
    path.write_bytes(content)

    with pytest.raises(DicomError) as raised:
        read_nm_scan(path)

    assert raised.value.codes == ["unreadable-file"]


def test_missing_file_is_unreadable(tmp_path):
    with pytest.raises(DicomError) as raised:
        read_nm_scan(tmp_path / "absent.dcm")

    assert raised.value.codes == ["unreadable-file"]
