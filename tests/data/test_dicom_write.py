from __future__ import annotations

import dataclasses

import numpy as np
import pydicom
import pydicom.uid
import pytest
from dicom_factory import HEADER, SPACING_MM, counts, two_views

from fedbone.data.dicom_write import (
    NMHeader,
    SingleViewStorage,
    write_nm_whole_body,
    write_single_view,
)
from fedbone.data.scan import View
from fedbone.data.view_identification import orientation_from_cosines

NM_STORAGE = "1.2.840.10008.5.1.4.1.1.20"
SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"


def test_whole_body_file_is_a_two_detector_nm_image(tmp_path):
    views = two_views()

    path = write_nm_whole_body(tmp_path / "wb.dcm", views, SPACING_MM, HEADER)

    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == NM_STORAGE
    assert ds.file_meta.MediaStorageSOPClassUID == NM_STORAGE
    assert ds.Modality == "NM"
    assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "WHOLE BODY", "EMISSION"]
    assert list(ds.FrameIncrementPointer) == [0x00540010, 0x00540020]
    assert ds.NumberOfFrames == 2
    assert ds.NumberOfDetectors == 2
    assert list(ds.DetectorVector) == [1, 2]
    assert list(ds.EnergyWindowVector) == [1, 1]
    assert [float(v) for v in ds.PixelSpacing] == list(SPACING_MM)
    pixels = ds.pixel_array
    assert pixels.dtype == np.uint16
    assert np.array_equal(pixels[0], views[View.ANTERIOR])
    assert np.array_equal(pixels[1], views[View.POSTERIOR])
    assert int(ds.CountsAccumulated) == int(pixels.sum(dtype=np.int64))


def test_each_detector_carries_its_view_code_and_orientation(tmp_path):
    path = write_nm_whole_body(tmp_path / "wb.dcm", two_views(), SPACING_MM, HEADER)

    detectors = pydicom.dcmread(path).DetectorInformationSequence

    codes = [
        (d.ViewCodeSequence[0].CodeValue, d.ViewCodeSequence[0].CodingSchemeDesignator)
        for d in detectors
    ]
    assert codes == [("399321004", "SCT"), ("399001007", "SCT")]
    orientations = [
        orientation_from_cosines([float(c) for c in d.ImageOrientationPatient])
        for d in detectors
    ]
    assert orientations == [("L", "F"), ("R", "F")]


def test_header_fields_use_dicom_units_and_formats(tmp_path):
    path = write_nm_whole_body(tmp_path / "wb.dcm", two_views(), SPACING_MM, HEADER)

    ds = pydicom.dcmread(path)

    assert ds.PatientID == "PHANTOM-001"
    assert ds.PatientAge == "071Y"
    assert ds.PatientSex == "F"
    assert ds.StudyDate == "20210304"
    assert ds.Manufacturer == "Acme Gamma"
    assert ds.ManufacturerModelName == "WB-2"
    assert ds.InstitutionName == "Test Hospital"
    assert int(ds.ActualFrameDuration) == 1_260_000  # ms
    assert float(ds.ScanVelocity) == pytest.approx(2.0)  # 12 cm/min in mm/s
    drug = ds.RadiopharmaceuticalInformationSequence[0]
    assert drug.Radiopharmaceutical == "Tc99m HMDP"
    assert drug.RadiopharmaceuticalCodeSequence[0].CodeValue == "53951001"
    window = ds.EnergyWindowInformationSequence[0].EnergyWindowRangeSequence[0]
    assert (
        float(window.EnergyWindowLowerLimit)
        < 140
        < float(window.EnergyWindowUpperLimit)
    )


@pytest.mark.parametrize(
    ("years", "expected"), [(71.9, "071Y"), (0.5, "006M"), (0.05, "018D"), (None, "")]
)
def test_patient_age_is_written_as_an_age_string(tmp_path, years, expected):
    header = dataclasses.replace(HEADER, patient_age_years=years)

    path = write_nm_whole_body(tmp_path / "wb.dcm", two_views(), SPACING_MM, header)

    assert pydicom.dcmread(path).PatientAge == expected


def test_same_uid_seed_gives_identical_files(tmp_path):
    first = write_nm_whole_body(tmp_path / "a.dcm", two_views(), SPACING_MM, HEADER)
    second = write_nm_whole_body(tmp_path / "b.dcm", two_views(), SPACING_MM, HEADER)

    assert first.read_bytes() == second.read_bytes()


def test_without_uid_seed_every_file_gets_new_uids(tmp_path):
    header = dataclasses.replace(HEADER, uid_seed=None)

    first = write_nm_whole_body(tmp_path / "a.dcm", two_views(), SPACING_MM, header)
    second = write_nm_whole_body(tmp_path / "b.dcm", two_views(), SPACING_MM, header)

    a, b = pydicom.dcmread(first), pydicom.dcmread(second)
    assert a.SOPInstanceUID != b.SOPInstanceUID
    assert a.StudyInstanceUID != b.StudyInstanceUID


def test_a_single_view_is_written_as_one_frame(tmp_path):
    views = {View.POSTERIOR: counts(3)}

    path = write_nm_whole_body(tmp_path / "post.dcm", views, SPACING_MM, HEADER)

    ds = pydicom.dcmread(path)
    assert ds.NumberOfFrames == 1
    assert list(ds.PatientOrientation) == ["R", "F"]
    assert ds.DetectorInformationSequence[0].ViewCodeSequence[0].CodeValue == (
        "399001007"
    )


def test_jpeg_lossless_sv1_cannot_be_written(tmp_path):
    with pytest.raises(ValueError, match="JPEG-LS Lossless"):
        write_nm_whole_body(
            tmp_path / "x.dcm",
            two_views(),
            SPACING_MM,
            HEADER,
            transfer_syntax=pydicom.uid.JPEGLosslessSV1,
        )


@pytest.mark.parametrize(
    ("anterior", "message"),
    [
        (np.full((96, 32), -1.0), "0..65535"),
        (np.full((96, 32), 70_000.0), "0..65535"),
        (np.full((96, 32), 1.5), "whole counts"),
        (np.full((96, 32), np.nan), "NaN"),
        (np.ones((96, 33)), "same shape"),
        (np.ones((2, 96, 32)), "2-D"),
    ],
)
def test_pixels_that_are_not_uint16_counts_are_refused(tmp_path, anterior, message):
    views = {View.ANTERIOR: anterior, View.POSTERIOR: counts(1)}

    with pytest.raises(ValueError, match=message):
        write_nm_whole_body(tmp_path / "x.dcm", views, SPACING_MM, HEADER)


def test_whole_counts_in_other_dtypes_are_accepted(tmp_path):
    views = {v: a.astype(np.float64) for v, a in two_views().items()}

    path = write_nm_whole_body(tmp_path / "wb.dcm", views, SPACING_MM, HEADER)

    assert np.array_equal(pydicom.dcmread(path).pixel_array[0], views[View.ANTERIOR])


def test_secondary_capture_is_modality_nm_with_optional_evidence(tmp_path):
    coded = write_single_view(
        tmp_path / "coded.dcm",
        counts(1),
        SPACING_MM,
        HEADER,
        view=View.ANTERIOR,
        storage=SingleViewStorage.SECONDARY_CAPTURE,
    )
    bare = write_single_view(
        tmp_path / "bare.dcm",
        counts(1),
        SPACING_MM,
        NMHeader(patient_id="X"),
        view=View.ANTERIOR,
        storage=SingleViewStorage.SECONDARY_CAPTURE,
        write_view_code=False,
        vendor_hint="WB ANT",
    )

    coded_ds, bare_ds = pydicom.dcmread(coded), pydicom.dcmread(bare)
    assert coded_ds.SOPClassUID == SC_STORAGE
    assert coded_ds.Modality == "NM"
    assert coded_ds.ViewCodeSequence[0].CodeValue == "399321004"
    assert "ViewCodeSequence" not in bare_ds
    assert "DetectorInformationSequence" not in bare_ds
    assert bare_ds.ImageID == "WB ANT"
    assert bare_ds.SeriesDescription == "WB ANT"


def test_single_view_nm_without_view_has_no_view_evidence(tmp_path):
    path = write_single_view(tmp_path / "x.dcm", counts(1), SPACING_MM, HEADER)

    ds = pydicom.dcmread(path)

    assert ds.SOPClassUID == NM_STORAGE
    assert "ViewCodeSequence" not in ds.DetectorInformationSequence[0]
    assert ds.PatientOrientation == ""
    assert "ImageID" not in ds
