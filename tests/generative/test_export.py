from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from fedbone.data.dicom_read import read_nm_scan
from fedbone.data.scan import View
from fedbone.generative.export import (
    SYNTHETIC_DESCRIPTION,
    write_synthetic_dicom,
    write_synthetic_png,
)

PROVENANCE = {"site": "site-b", "round": "3", "generator-sha256": "ab12cd34"}


def synthetic_image() -> np.ndarray:
    return np.random.default_rng(0).random((256, 64)).astype(np.float32)


def write(tmp_path: Path, **overrides: object) -> Path:
    settings: dict[str, object] = {
        "label_bm": 1,
        "label_ca": 0,
        "provenance": PROVENANCE,
        "spacing_mm": 2.0,
        "uid_seed": "run-1/site-b/0007",
    }
    settings.update(overrides)
    return write_synthetic_dicom(
        synthetic_image(),
        tmp_path / "synthetic.dcm",
        **settings,  # type: ignore[arg-type]
    )


def test_dicom_reads_back_through_fedbone_reader_with_its_pixels(
    tmp_path: Path,
) -> None:
    # Prepare
    path = write(tmp_path)

    # Execute
    scan = read_nm_scan(path, default_view=View.ANTERIOR)

    # Assert
    view = scan.view(View.ANTERIOR)
    assert view.spacing_mm == (2.0, 2.0)
    np.testing.assert_allclose(view.counts / 65535, synthetic_image(), atol=1e-5)


def test_dicom_is_marked_synthetic_with_labels_and_provenance(tmp_path: Path) -> None:
    # Execute
    ds = pydicom.dcmread(write(tmp_path))

    # Assert
    assert ds.Modality == "NM"
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert ds.ConversionType == "SYN"
    assert ds.SeriesDescription == SYNTHETIC_DESCRIPTION
    assert ds.BurnedInAnnotation == "NO"
    assert ds.ContentLabel == "SYNTHETIC"
    for text in ("label-bm=1", "label-ca=0", "site=site-b", "round=3", "ab12cd34"):
        assert text in ds.DerivationDescription
        assert text in ds.ImageComments


def test_dicom_carries_no_patient_identity(tmp_path: Path) -> None:
    # Execute
    ds = pydicom.dcmread(write(tmp_path))
    (tmp_path / "again").mkdir()
    again = pydicom.dcmread(write(tmp_path / "again"))
    other = pydicom.dcmread(write(tmp_path, uid_seed="run-1/site-b/0008"))

    # Assert
    assert str(ds.PatientName) == "SYNTHETIC^IMAGE"
    assert ds.PatientID.startswith("SYN-")
    assert ds.PatientID == again.PatientID != other.PatientID
    assert ds.PatientBirthDate == "" and ds.PatientSex == ""
    assert "PatientAge" not in ds
    assert ds.PatientIdentityRemoved == "YES"


def test_unknown_labels_are_written_as_none(tmp_path: Path) -> None:
    # Execute
    ds = pydicom.dcmread(write(tmp_path, label_bm=None, label_ca=None))

    # Assert
    assert "label-bm=none" in ds.DerivationDescription


def test_bad_label_and_spacing_are_both_reported(tmp_path: Path) -> None:
    # Execute / Assert
    with pytest.raises(ValueError, match=r"label_bm is 2.*spacing_mm is 0"):
        write(tmp_path, label_bm=2, spacing_mm=0.0)


def test_png_is_16_bit_and_marked_synthetic(tmp_path: Path) -> None:
    # Execute
    path = write_synthetic_png(synthetic_image(), tmp_path / "synthetic.png")

    # Assert
    with Image.open(path) as png:
        pixels = np.asarray(png)
        description = png.info["Description"]
    assert description == SYNTHETIC_DESCRIPTION
    np.testing.assert_allclose(pixels / 65535, synthetic_image(), atol=1e-5)


def test_png_refuses_images_outside_unit_interval(tmp_path: Path) -> None:
    # Execute / Assert
    with pytest.raises(ValueError, match=r"expected \[0, 1\]"):
        write_synthetic_png(synthetic_image() * 2, tmp_path / "bad.png")
