import json
from pathlib import Path

import pytest
import yaml

from fedbone.cli.main import main


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])

    out = capsys.readouterr().out
    assert exited.value.code == 0
    for command in ("phantom", "prepare", "inspect", "simulate", "pki"):
        assert command in out


def test_inspect_reads_the_real_nm1_scan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pydicom.data import get_testdata_file

    nm1 = get_testdata_file("JPEG-LL.dcm")
    png = tmp_path / "nm1.png"

    code = main(
        ["inspect", str(nm1), "--default-view", "anterior", "--json", "--png", str(png)]
    )

    described = json.loads(capsys.readouterr().out)
    assert code == 0
    assert described["patient id"] == "8NM1"
    assert "1024x256 px" in described["anterior view"]
    assert "3,596,452 counts" in described["anterior view"]
    assert png.stat().st_size > 0


def test_inspect_of_a_broken_file_exits_2_with_the_problem(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not a dicom file at all")

    code = main(["inspect", str(junk)])

    assert code == 2
    assert "unreadable-file" in caplog.text


def test_prepare_with_a_bad_config_lists_every_problem(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "site.yaml"
    config.write_text(
        yaml.safe_dump({"site": {"role": "boss"}, "data": {"manifest": "nope.csv"}})
    )

    code = main(["prepare", "--config", str(config)])

    assert code == 2
    for expected in ("site.id", "site.role", "data.manifest"):
        assert expected in caplog.text
