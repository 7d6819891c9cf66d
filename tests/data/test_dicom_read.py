from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from dicom_factory import (
    HEADER,
    SPACING_MM,
    counts,
    save,
    single_view,
    two_views,
    whole_body,
)
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from fedbone.data.dicom_read import check_nm_dataset, read_nm_scan
from fedbone.data.dicom_write import (
    WRITABLE_TRANSFER_SYNTAXES,
    SingleViewStorage,
    write_nm_whole_body,
)
from fedbone.data.scan import View, ViewSource
from fedbone.data.view_identification import view_from_text
from fedbone.errors import DicomError

SC = SingleViewStorage.SECONDARY_CAPTURE


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = (
        value,
        scheme,
        meaning,
    )
    return item


@pytest.mark.parametrize("syntax", sorted(WRITABLE_TRANSFER_SYNTAXES))
def test_written_whole_body_reads_back_exactly(tmp_path, syntax):
    views = two_views()
    path = write_nm_whole_body(
        tmp_path / "wb.dcm", views, SPACING_MM, HEADER, transfer_syntax=syntax
    )

    scan = read_nm_scan(path)

    assert set(scan.views) == {View.ANTERIOR, View.POSTERIOR}
    for view, written in views.items():
        read = scan.view(view)
        assert read.counts.dtype == np.float32
        assert np.array_equal(read.counts, written)
        assert read.spacing_mm == SPACING_MM
        assert read.source is ViewSource.VIEW_CODE
    assert scan.view(View.ANTERIOR).patient_orientation == ("L", "F")
    assert scan.view(View.POSTERIOR).patient_orientation == ("R", "F")
    meta = scan.metadata
    assert meta.transfer_syntax_uid == syntax
    assert meta.sop_class_uid == "1.2.840.10008.5.1.4.1.1.20"
    assert meta.source_path == str(path)
    assert (meta.patient_id, meta.sex, meta.study_date) == (
        HEADER.patient_id,
        HEADER.patient_sex,
        HEADER.study_date,
    )
    assert meta.age_years == HEADER.patient_age_years
    assert (meta.manufacturer, meta.model, meta.tracer) == (
        "Acme Gamma",
        "WB-2",
        "HMDP",
    )
    assert meta.counts_accumulated == sum(int(v.sum()) for v in views.values())
    assert meta.acquisition_duration_s == HEADER.acquisition_duration_s
    assert meta.scan_velocity_cm_min == pytest.approx(HEADER.scan_velocity_cm_min)


@pytest.mark.parametrize("tracer", ["DPD", "HMDP", "MDP"])
def test_tracer_reads_back_as_written(tmp_path, tracer):
    header = dataclasses.replace(HEADER, tracer=tracer)
    path = write_nm_whole_body(tmp_path / "wb.dcm", two_views(), SPACING_MM, header)

    assert read_nm_scan(path).metadata.tracer == tracer


def test_missing_optional_header_fields_read_as_none(tmp_path):
    ds = whole_body()
    for keyword in ("PatientAge", "PatientSex", "StudyDate", "CountsAccumulated"):
        ds[keyword].value = ""
    del (
        ds.ActualFrameDuration,
        ds.ScanVelocity,
        ds.RadiopharmaceuticalInformationSequence,
    )

    meta = read_nm_scan(save(ds, tmp_path / "x.dcm")).metadata

    assert meta.age_years is None
    assert meta.sex is None
    assert meta.study_date is None
    assert meta.counts_accumulated is None
    assert meta.acquisition_duration_s is None
    assert meta.scan_velocity_cm_min is None
    assert meta.tracer is None


@pytest.mark.parametrize(("age", "years"), [("006M", 0.5), ("052W", 52 * 7 / 365.25)])
def test_age_strings_in_months_and_weeks_are_converted(tmp_path, age, years):
    ds = whole_body()
    ds.PatientAge = age

    meta = read_nm_scan(save(ds, tmp_path / "x.dcm")).metadata

    assert meta.age_years == pytest.approx(years)


@pytest.mark.parametrize("storage", list(SingleViewStorage))
def test_single_view_with_view_code(tmp_path, storage):
    ds = single_view(view=View.POSTERIOR, storage=storage)

    scan = read_nm_scan(save(ds, tmp_path / "x.dcm"))

    assert list(scan.views) == [View.POSTERIOR]
    assert scan.view(View.POSTERIOR).source is ViewSource.VIEW_CODE
    assert scan.view(View.POSTERIOR).patient_orientation == ("R", "F")
    assert np.array_equal(scan.view(View.POSTERIOR).counts, counts(7))


@pytest.mark.parametrize(
    ("value", "scheme", "meaning", "expected"),
    [
        ("G-5215", "SRT", "Anterior projection", View.ANTERIOR),
        ("G-5216", "SRT", "Posterior projection", View.POSTERIOR),
        ("LOCAL1", "99ACME", "posterior", View.POSTERIOR),
    ],
)
def test_older_and_local_view_codes_are_recognised(
    tmp_path, value, scheme, meaning, expected
):
    ds = single_view(view=View.ANTERIOR, write_view_code=False)
    ds.DetectorInformationSequence[0].ViewCodeSequence = Sequence(
        [_code(value, scheme, meaning)]
    )

    scan = read_nm_scan(save(ds, tmp_path / "x.dcm"))

    assert list(scan.views) == [expected]


@pytest.mark.parametrize(
    ("hint", "expected"),
    [
        ("WB ANT", View.ANTERIOR),
        ("POST_WB", View.POSTERIOR),
        ("Ganzkoerper ventral", View.ANTERIOR),
        ("Posterior", View.POSTERIOR),
    ],
)
def test_vendor_hint_names_the_view_of_a_bare_secondary_capture(
    tmp_path, hint, expected
):
    ds = single_view(storage=SC, write_view_code=False, vendor_hint=hint)

    scan = read_nm_scan(save(ds, tmp_path / "x.dcm"))

    assert list(scan.views) == [expected]
    assert scan.views[expected].source is ViewSource.VENDOR_HINT


def test_vendor_hint_in_a_private_tag_is_used(tmp_path):
    ds = single_view(storage=SC, write_view_code=False)
    block = ds.private_block(0x0011, "ACME_NM", create=True)
    block.add_new(0x10, "LO", "WHOLEBODY_POST")

    scan = read_nm_scan(save(ds, tmp_path / "x.dcm"))

    assert scan.view(View.POSTERIOR).source is ViewSource.VENDOR_HINT


def test_patient_name_in_a_private_tag_is_not_a_hint(tmp_path):
    ds = single_view(storage=SC, write_view_code=False)
    ds.PatientName = "POST^JOHN"
    block = ds.private_block(0x0009, "ACME_NM", create=True)
    block.add_new(0x40, "LO", "POST,JOHN")

    problems = check_nm_dataset(ds)

    assert [p.code for p in problems] == ["unknown-view"]


@pytest.mark.parametrize(
    "text", ["POSTOP CONTROL", "WB post injection", "ANT/POST", "LAO anterior oblique"]
)
def test_text_that_is_not_one_planar_view_is_no_hint(text):
    assert view_from_text(text) is None


def test_site_default_applies_only_without_evidence(tmp_path):
    bare = save(single_view(storage=SC, write_view_code=False), tmp_path / "a.dcm")
    coded = save(single_view(view=View.ANTERIOR), tmp_path / "b.dcm")

    from_default = read_nm_scan(bare, default_view=View.POSTERIOR)
    from_code = read_nm_scan(coded, default_view=View.POSTERIOR)

    assert from_default.view(View.POSTERIOR).source is ViewSource.SITE_DEFAULT
    assert list(from_code.views) == [View.ANTERIOR]


def test_conflicting_vendor_hints_are_not_overridden_by_the_default(tmp_path):
    ds = single_view(storage=SC, write_view_code=False, vendor_hint="WB ANT")
    ds.ImageComments = "posterior"

    problems = check_nm_dataset(ds, default_view=View.ANTERIOR)

    assert [p.code for p in problems] == ["unknown-view"]
    assert "both views" in problems[0].message


def test_uncoded_second_head_is_the_opposite_view(tmp_path):
    ds = whole_body()
    del ds.DetectorInformationSequence[1].ViewCodeSequence

    scan = read_nm_scan(save(ds, tmp_path / "x.dcm"))

    assert scan.view(View.ANTERIOR).source is ViewSource.VIEW_CODE
    assert scan.view(View.POSTERIOR).source is ViewSource.DETECTOR_VECTOR
    assert np.array_equal(scan.view(View.POSTERIOR).counts, two_views()[View.POSTERIOR])


def test_detector_vector_decides_which_frame_is_which(tmp_path):
    ds = whole_body()
    ds.DetectorVector = [2, 1]

    scan = read_nm_scan(save(ds, tmp_path / "x.dcm"))

    views = two_views()
    assert np.array_equal(scan.view(View.POSTERIOR).counts, views[View.ANTERIOR])
    assert np.array_equal(scan.view(View.ANTERIOR).counts, views[View.POSTERIOR])


def test_good_dataset_has_no_problems():
    assert check_nm_dataset(whole_body()) == []


def test_rescale_slope_is_applied(tmp_path):
    ds = single_view(view=View.ANTERIOR)
    ds.RescaleSlope, ds.RescaleIntercept = 2, 0

    scan = read_nm_scan(save(ds, tmp_path / "x.dcm"))

    assert np.array_equal(scan.view(View.ANTERIOR).counts, 2 * counts(7))


def test_file_without_part10_header_is_unreadable(tmp_path):
    path = tmp_path / "raw.dcm"
    single_view(view=View.ANTERIOR).save_as(path, enforce_file_format=False)

    with pytest.raises(DicomError) as raised:
        read_nm_scan(path)

    assert raised.value.codes == ["unreadable-file"]


def test_multi_frame_file_without_view_codes_lists_each_frame(tmp_path):
    ds = whole_body()
    for item in ds.DetectorInformationSequence:
        del item.ViewCodeSequence

    problems = check_nm_dataset(ds, default_view=View.ANTERIOR)

    assert [p.code for p in problems] == ["unknown-view", "unknown-view"]
    assert "detector 2" in problems[1].message
