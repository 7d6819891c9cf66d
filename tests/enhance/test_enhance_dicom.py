"""Enhancing fast whole-body DICOM scans into new DICOM series.

The enhancers here are untrained DDSRCNNs, whose zero output convolution makes
them the identity: the written counts must be the fast counts times the speed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_factory import HEADER, SPACING_MM, counts, save
from pydicom.data import get_testdata_file

from fedbone.data.dicom_read import read_nm_scan
from fedbone.data.dicom_write import nm_whole_body_dataset
from fedbone.data.scan import View
from fedbone.enhance.dicom_enhance import (
    FolderEnhancement,
    enhance_dicom,
    enhance_dicom_folder,
)
from fedbone.enhance.errors import EnhanceError
from fedbone.enhance.model_file import EnhancerModel, load_enhancer, save_enhancer
from fedbone.models.enhancers import EnhancerSpec, initial_arrays

NM1_SPACING_MM = 2.26
NM1_TOTAL_COUNTS = 3_596_452
SHA256 = "ab" * 32


def identity_model(
    spacing_mm: float = NM1_SPACING_MM, speeds: tuple[float, ...] = (2.0,)
) -> EnhancerModel:
    spec = EnhancerSpec("ddsrcnn", width=4, blocks=1)
    return EnhancerModel(
        spec=spec,
        arrays=initial_arrays(spec, seed=0),
        levels=tuple(f"{speed:g}x" for speed in speeds),
        speeds=speeds,
        spacing_mm=spacing_mm,
        canvas=(64, 32),
        clip_percentile=99.5,
        study="tiny-enhance",
        description="untrained DDSRCNN",
    )


@pytest.fixture(scope="module")
def nm1() -> Path:
    path = get_testdata_file("JPEG-LL.dcm")
    assert path is not None, "pydicom-data is not installed"
    return Path(path)


def test_nm1_becomes_a_derived_series_of_the_same_study(
    tmp_path: Path, nm1: Path
) -> None:
    # Prepare
    out = tmp_path / "enhanced.dcm"
    source = pydicom.dcmread(nm1, stop_before_pixels=True)

    # Execute
    result = enhance_dicom(
        nm1,
        identity_model(),
        speed=2.0,
        model_sha256=SHA256,
        out=out,
        default_view=View.ANTERIOR,
    )

    # Assert
    written = pydicom.dcmread(out)
    assert list(written.ImageType[:2]) == ["DERIVED", "SECONDARY"]
    assert written.SeriesDescription == "fedbone enhanced (ddsrcnn, 2x -> standard)"
    assert SHA256 in written.DerivationDescription
    assert "ddsrcnn" in written.DerivationDescription
    assert SHA256 in written.ImageComments
    assert written.StudyInstanceUID == source.StudyInstanceUID
    assert written.PatientID == source.PatientID == "8NM1"
    assert written.PatientName == source.PatientName
    assert written.PatientSex == "M"
    assert written.SeriesInstanceUID not in (source.SeriesInstanceUID, "")
    assert written.SOPInstanceUID != source.SOPInstanceUID
    assert written.SeriesInstanceUID == result.series_instance_uid
    referenced = written.SourceImageSequence[0]
    assert referenced.ReferencedSOPInstanceUID == source.SOPInstanceUID
    scan = read_nm_scan(out)
    anterior = scan.view(View.ANTERIOR)
    assert list(scan.views) == [View.ANTERIOR]
    assert anterior.shape == (1024, 256)
    assert anterior.spacing_mm == (NM1_SPACING_MM, NM1_SPACING_MM)
    assert anterior.total_counts == pytest.approx(2.0 * NM1_TOTAL_COUNTS, rel=0.01)
    assert result.clipped_pixels == 0


def test_a_coarser_enhancer_gets_the_scan_rebinned_padded_and_cropped_back(
    tmp_path: Path, nm1: Path
) -> None:
    # Prepare: 1024 x 256 pixels of 2.26 mm are 965 x 242 pixels of 2.4 mm,
    # neither a multiple of 4
    out = tmp_path / "enhanced.dcm"

    # Execute
    enhance_dicom(
        nm1,
        identity_model(spacing_mm=2.4),
        speed=2.0,
        model_sha256=SHA256,
        out=out,
        default_view=View.ANTERIOR,
    )

    # Assert
    anterior = read_nm_scan(out).view(View.ANTERIOR)
    assert anterior.shape == (965, 242)
    assert anterior.spacing_mm == (2.4, 2.4)
    assert anterior.total_counts == pytest.approx(2.0 * NM1_TOTAL_COUNTS, rel=0.01)


def test_both_views_come_back_as_stored_under_the_same_patient_and_study(
    tmp_path: Path,
) -> None:
    # Prepare: a hot column on one side, so a lost or extra flip shows; sides
    # that are not multiples of 4
    anterior, posterior = counts(1, (94, 30)), counts(2, (94, 30))
    anterior[:, 2] = 90
    posterior[:, 3] = 70
    fast = nm_whole_body_dataset(
        {View.ANTERIOR: anterior, View.POSTERIOR: posterior}, SPACING_MM, HEADER
    )
    fast.SpecificCharacterSet = "ISO_IR 192"
    fast.PatientName = "Müller^Jörg"
    fast.PatientBirthDate = "19500102"
    fast.AccessionNumber = "ACC-77"
    source = save(fast, tmp_path / "fast.dcm")

    # Execute
    result = enhance_dicom(
        source,
        identity_model(spacing_mm=SPACING_MM[0]),
        speed=2.0,
        model_sha256=SHA256,
        out=tmp_path / "enhanced.dcm",
    )

    # Assert
    scan = read_nm_scan(result.output)
    assert result.views == (View.ANTERIOR, View.POSTERIOR)
    np.testing.assert_array_equal(scan.view(View.ANTERIOR).counts, 2.0 * anterior)
    np.testing.assert_array_equal(scan.view(View.POSTERIOR).counts, 2.0 * posterior)
    written = pydicom.dcmread(result.output, stop_before_pixels=True)
    assert written.PatientName == "Müller^Jörg"
    assert written.PatientBirthDate == "19500102"
    assert written.AccessionNumber == "ACC-77"
    assert written.PatientID == HEADER.patient_id
    assert written.StudyInstanceUID == fast.StudyInstanceUID
    assert written.StudyDate == "20210304"


def test_counts_beyond_uint16_are_clipped_and_the_clipping_is_said(
    tmp_path: Path, nm1: Path
) -> None:
    # Prepare: NM1's hottest pixel holds 278 counts; x 300 is over 65535
    model = identity_model(speeds=(300.0,))

    # Execute
    result = enhance_dicom(
        nm1,
        model,
        speed=300.0,
        model_sha256=SHA256,
        out=tmp_path / "enhanced.dcm",
        default_view=View.ANTERIOR,
    )

    # Assert
    written = pydicom.dcmread(result.output)
    assert result.clipped_pixels > 0
    assert written.pixel_array.max() == 65535
    assert f"{result.clipped_pixels} pixels clipped at 65535" in (
        written.DerivationDescription
    )


def test_a_foreign_speed_and_too_coarse_a_scan_are_refused_together(
    tmp_path: Path, nm1: Path
) -> None:
    # Prepare: 2.26 mm pixels are 51 % coarser than the enhancer's 1.5 mm
    out = tmp_path / "enhanced.dcm"

    # Execute
    with pytest.raises(EnhanceError) as refused:
        enhance_dicom(
            nm1,
            identity_model(spacing_mm=1.5),
            speed=8.0,
            model_sha256=SHA256,
            out=out,
            default_view=View.ANTERIOR,
        )

    # Assert
    assert refused.value.codes == ["speed-out-of-range", "scan-too-coarse"]
    assert "cannot add resolution" in str(refused.value)
    assert not out.exists()


def test_a_scan_slightly_coarser_than_the_enhancer_is_accepted(
    tmp_path: Path, nm1: Path
) -> None:
    # Prepare: 2.26 mm is 9 % coarser than 2.08 mm, within the 10 % allowed
    model = identity_model(spacing_mm=2.08)

    # Execute
    result = enhance_dicom(
        nm1,
        model,
        speed=2.0,
        model_sha256=SHA256,
        out=tmp_path / "enhanced.dcm",
        default_view=View.ANTERIOR,
    )

    # Assert
    assert result.spacing_mm == 2.08
    assert result.output.is_file()


def test_the_source_is_never_overwritten(tmp_path: Path, nm1: Path) -> None:
    # Prepare
    source = Path(shutil.copy(nm1, tmp_path / "fast.dcm"))
    before = source.read_bytes()

    # Execute
    with pytest.raises(EnhanceError) as refused:
        enhance_dicom(
            source,
            identity_model(),
            speed=2.0,
            model_sha256=SHA256,
            out=source,
            default_view=View.ANTERIOR,
        )

    # Assert
    assert refused.value.codes == ["output-is-input"]
    assert source.read_bytes() == before


def test_an_enhancer_file_with_another_sha256_is_not_read(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "ddsrcnn.enhancer.npz"
    save_enhancer(identity_model(), path)

    # Execute
    with pytest.raises(EnhanceError) as refused:
        load_enhancer(path, sha256="0" * 64)

    # Assert
    assert refused.value.codes == ["sha256-mismatch"]


def test_a_broken_file_in_a_folder_is_listed_and_the_good_one_written(
    tmp_path: Path, nm1: Path
) -> None:
    # Prepare
    folder = tmp_path / "fast"
    folder.mkdir()
    shutil.copy(nm1, folder / "nm1.dcm")
    (folder / "broken.dcm").write_bytes(b"not a DICOM file")
    out = tmp_path / "enhanced"
    reported: list[object] = []

    # Execute
    outcome = enhance_dicom_folder(
        folder,
        identity_model(),
        speed=2.0,
        model_sha256=SHA256,
        out=out,
        default_view=View.ANTERIOR,
        report=reported.append,
    )

    # Assert
    assert [r.output for r in outcome.written] == [out / "nm1.dcm"]
    assert [r.path for r in outcome.refused] == [folder / "broken.dcm"]
    assert [p.code for p in outcome.refused[0].problems] == ["unreadable-file"]
    assert len(reported) == 2
    assert sorted(p.name for p in out.iterdir()) == ["nm1.dcm"]
    assert (folder / "broken.dcm").read_bytes() == b"not a DICOM file"


def test_a_folder_is_refused_whole_for_a_foreign_speed_or_as_its_own_output(
    tmp_path: Path, nm1: Path
) -> None:
    # Prepare
    folder = tmp_path / "fast"
    folder.mkdir()
    shutil.copy(nm1, folder / "nm1.dcm")

    # Execute
    with pytest.raises(EnhanceError) as refused:
        enhance_dicom_folder(
            folder,
            identity_model(),
            speed=9.0,
            model_sha256=SHA256,
            out=folder,
            default_view=View.ANTERIOR,
        )

    # Assert
    assert refused.value.codes == ["speed-out-of-range", "output-is-input"]
    assert sorted(p.name for p in folder.iterdir()) == ["nm1.dcm"]


def test_a_recursive_run_keeps_subfolders_and_skips_its_own_output(
    tmp_path: Path, nm1: Path
) -> None:
    # Prepare: the output folder lies inside the input folder, and a first
    # run has already written into it
    folder = tmp_path / "fast"
    (folder / "ward-3").mkdir(parents=True)
    shutil.copy(nm1, folder / "ward-3" / "nm1.dcm")
    out = folder / "enhanced"

    def run() -> FolderEnhancement:
        return enhance_dicom_folder(
            folder,
            identity_model(),
            speed=2.0,
            model_sha256=SHA256,
            out=out,
            default_view=View.ANTERIOR,
            recursive=True,
        )

    run()

    # Execute
    outcome = run()

    # Assert
    assert [r.source for r in outcome.written] == [folder / "ward-3" / "nm1.dcm"]
    assert [r.output for r in outcome.written] == [out / "ward-3" / "nm1.dcm"]
    assert outcome.refused == ()
