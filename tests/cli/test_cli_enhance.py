"""``fedbone enhance`` on the real NM1 scan: files, folders and refusals."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from fedbone.cli.enhance import parse_speed
from fedbone.cli.main import main
from fedbone.enhance.model_file import EnhancerModel, save_enhancer
from fedbone.models.enhancers import EnhancerSpec, initial_arrays


@pytest.fixture(scope="module")
def nm1() -> Path:
    path = get_testdata_file("JPEG-LL.dcm")
    assert path is not None, "pydicom-data is not installed"
    return Path(path)


@pytest.fixture(scope="module")
def enhancer(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """An untrained (identity) DDSRCNN on NM1's 2.26 mm pixels, for 2x scans."""
    spec = EnhancerSpec("ddsrcnn", width=4, blocks=1)
    model = EnhancerModel(
        spec=spec,
        arrays=initial_arrays(spec, seed=0),
        levels=("2x",),
        speeds=(2.0,),
        spacing_mm=2.26,
        canvas=(64, 32),
        clip_percentile=99.5,
        study="tiny-enhance",
    )
    path = tmp_path_factory.mktemp("enhancer") / "ddsrcnn.enhancer.npz"
    return path, save_enhancer(model, path)


def enhance_args(source: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return [
        "enhance",
        str(source),
        "--model",
        str(model),
        "--out",
        str(out),
        "--default-view",
        "anterior",
        *extra,
    ]


def test_enhance_writes_one_file_and_says_so(
    tmp_path: Path,
    nm1: Path,
    enhancer: tuple[Path, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Prepare
    model, sha256 = enhancer
    out = tmp_path / "nm1-enhanced.dcm"

    # Execute
    code = main(
        enhance_args(nm1, model, out, "--sha256", sha256.upper(), "--speed", "2x")
    )

    # Assert
    printed = capsys.readouterr().out
    assert code == 0
    assert f"wrote {out} (anterior, 2.26 mm, speed 2x" in printed
    assert "enhanced 1 scan with ddsrcnn" in printed
    assert sha256 in pydicom.dcmread(out).DerivationDescription


def test_enhance_without_a_sha256_records_the_file_it_read(
    tmp_path: Path, nm1: Path, enhancer: tuple[Path, str]
) -> None:
    # Prepare: an existing folder as --out takes the source's name
    model, sha256 = enhancer

    # Execute
    code = main(enhance_args(nm1, model, tmp_path, "--speed", "2"))

    # Assert
    written = pydicom.dcmread(tmp_path / nm1.name, stop_before_pixels=True)
    assert code == 0
    assert sha256 in written.DerivationDescription


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        (["--speed", "2", "--sha256", "0" * 64], "sha256-mismatch"),
        (["--speed", "5x"], "speed-out-of-range"),
    ],
)
def test_enhance_refusals_exit_2_with_the_problem(
    tmp_path: Path,
    nm1: Path,
    enhancer: tuple[Path, str],
    caplog: pytest.LogCaptureFixture,
    extra: list[str],
    code: str,
) -> None:
    # Prepare
    model, _ = enhancer
    out = tmp_path / "enhanced.dcm"

    # Execute
    status = main(enhance_args(nm1, model, out, *extra))

    # Assert
    assert status == 2
    assert code in caplog.text
    assert not out.exists()


def test_enhance_of_a_folder_lists_the_broken_file_and_exits_1(
    tmp_path: Path,
    nm1: Path,
    enhancer: tuple[Path, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Prepare
    model, _ = enhancer
    folder = tmp_path / "fast"
    folder.mkdir()
    shutil.copy(nm1, folder / "nm1.dcm")
    (folder / "broken.dcm").write_bytes(b"not a DICOM file")
    out = tmp_path / "enhanced"

    # Execute
    status = main(enhance_args(folder, model, out, "--speed", "2"))

    # Assert
    printed = capsys.readouterr().out
    assert status == 1
    assert f"refused {folder / 'broken.dcm'}:" in printed
    assert "unreadable-file" in printed
    assert f"wrote {out / 'nm1.dcm'}" in printed
    assert "enhanced 1 of 2 scans with ddsrcnn" in printed
    assert (out / "nm1.dcm").is_file()


@pytest.mark.parametrize(("text", "speed"), [("2", 2.0), ("2x", 2.0), ("3.3X", 3.3)])
def test_speeds_are_read_with_or_without_an_x(text: str, speed: float) -> None:
    assert parse_speed(text) == speed


@pytest.mark.parametrize("text", ["fast", "0x", "-2", "nan", "inf"])
def test_a_speed_that_is_not_a_positive_number_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="such as 2 or 2x"):
        parse_speed(text)


def test_enhance_is_listed_in_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])

    assert exited.value.code == 0
    assert "enhance fast whole-body scans" in capsys.readouterr().out
