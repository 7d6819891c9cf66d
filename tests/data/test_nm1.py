"""The NEMA "NM1" whole-body bone scan (pydicom-data ``JPEG-LL.dcm``).

A GE Millennium MG anterior whole-body view stored as a Secondary Capture with
Modality NM, JPEG Lossless SV1, signed 16-bit. Its header names no view: no
view code, ImageID ``WHOLE BODY_E``, ImageComments ``JPEG lossless SV1`` and
GE private tags without ANT/POST text. So a site must set its default view.
"""

from __future__ import annotations

import numpy as np
import pydicom
import pydicom.uid
import pytest
from pydicom.data import get_testdata_file

from fedbone.data.dicom_read import read_nm_scan
from fedbone.data.scan import View, ViewSource
from fedbone.errors import DicomError

NM1_TOTAL_COUNTS = 3_596_452


@pytest.fixture(scope="module")
def nm1_path() -> str:
    path = get_testdata_file("JPEG-LL.dcm")
    assert path is not None, "pydicom-data is not installed"
    assert pydicom.dcmread(path, stop_before_pixels=True).Modality == "NM"
    return str(path)


def test_nm1_reads_as_an_anterior_whole_body_view(nm1_path):
    scan = read_nm_scan(nm1_path, default_view=View.ANTERIOR)

    anterior = scan.view(View.ANTERIOR)
    assert list(scan.views) == [View.ANTERIOR]
    assert anterior.shape == (1024, 256)
    assert anterior.spacing_mm == (2.26, 2.26)
    assert anterior.source is ViewSource.SITE_DEFAULT
    assert anterior.total_counts == NM1_TOTAL_COUNTS
    assert scan.metadata.counts_accumulated == NM1_TOTAL_COUNTS
    assert scan.metadata.patient_id == "8NM1"
    assert scan.metadata.manufacturer == "GE Medical Systems"
    assert scan.metadata.sex == "M"
    assert scan.metadata.sop_class_uid == pydicom.uid.SecondaryCaptureImageStorage
    assert scan.metadata.transfer_syntax_uid == pydicom.uid.JPEGLosslessSV1
    assert scan.metadata.scan_velocity_cm_min == pytest.approx(10.03, abs=0.01)


def test_nm1_without_a_default_view_asks_for_one(nm1_path):
    with pytest.raises(DicomError) as raised:
        read_nm_scan(nm1_path)

    assert raised.value.codes == ["unknown-view"]
    assert "default_view" in str(raised.value)


@pytest.mark.parametrize(
    "syntax",
    [
        pydicom.uid.RLELossless,
        pydicom.uid.JPEGLSLossless,
        pydicom.uid.JPEG2000Lossless,
    ],
)
def test_nm1_recompressed_losslessly_reads_back_identical(tmp_path, nm1_path, syntax):
    original = pydicom.dcmread(nm1_path)
    pixels = original.pixel_array
    recompressed = pydicom.dcmread(nm1_path)
    recompressed.compress(syntax, pixels, generate_instance_uid=False)
    path = tmp_path / "nm1.dcm"
    recompressed.save_as(path, enforce_file_format=True)

    scan = read_nm_scan(path, default_view=View.ANTERIOR)

    assert pixels.dtype == np.int16
    assert scan.metadata.transfer_syntax_uid == syntax
    assert np.array_equal(scan.view(View.ANTERIOR).counts, pixels)
    assert scan.view(View.ANTERIOR).total_counts == NM1_TOTAL_COUNTS
