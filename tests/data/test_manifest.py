from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

import pytest

from fedbone.data.manifest import read_manifest
from fedbone.errors import ManifestError

HEADER = (
    "scan_id,scan_file,patient_id,split,label_bm,label_ca,perugini_grade,age,sex,"
    "study_date,tracer,scanner,time_death_days,event_death,site_note"
)


def write_manifest(folder: Path, lines: list[str], *, files: bool = True) -> Path:
    """Write a manifest; create an empty stand-in for every scan_file named."""
    path = folder / "manifest.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    if files:
        (folder / "scans").mkdir(exist_ok=True)
        for line in lines[1:]:
            name = [*line.split(","), "", ""][1]
            if name.startswith("scans/"):
                (folder / name).touch()
    return path


def test_valid_manifest_is_parsed(tmp_path: Path) -> None:
    path = write_manifest(
        tmp_path,
        [
            HEADER,
            "s1,scans/a.dcm,P1,train,1,0,1,71,F,2021-03-04,DPD,Symbia T2,420,1,ok",
            "s2,scans/b.dcm,P1,train,,,,,,,,,,,",
            "s3,scans/c.dcm,P2,test,0,1,3,55.5,M,2020-01-31,HMDP,,30.5,0,",
        ],
    )

    manifest = read_manifest(path)

    assert manifest.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert manifest.endpoints == ("death",)
    assert [w.code for w in manifest.warnings] == ["unknown-column"]
    first, second, third = manifest.rows
    assert first.scan_file == (tmp_path / "scans" / "a.dcm").resolve()
    assert first.scan_file.is_absolute()
    assert (first.label_bm, first.label_ca, first.perugini_grade) == (1, 0, 1)
    assert (first.age, first.sex, first.study_date) == (71.0, "F", date(2021, 3, 4))
    assert (first.tracer, first.scanner) == ("DPD", "Symbia T2")
    assert first.endpoints == {"death": (420.0, 1)}
    assert first.extra == {"site_note": "ok"}
    assert first.row_number == 2
    assert second.label_bm is None and second.label_ca is None
    assert second.endpoints == {"death": (None, None)}
    assert second.age is None and second.sex is None and second.tracer is None
    assert third.endpoints == {"death": (30.5, 0)}


def test_every_mistake_is_reported_in_one_error(tmp_path: Path) -> None:
    lines = [
        HEADER,
        "s1,scans/a.dcm,P1,train,1,0,,70,F,2021-01-01,,,100,1,",
        # duplicate scan_id, duplicate file, patient P1 leaks into test
        "s1,scans/a.dcm,P1,test,0,0,,,,,,,,,",
        "s3,scans/missing.dcm,P3,train,2,0,,,,,,,,,",  # missing file, bad label
        "s4,scans/d.dcm,P4,training,0,x,,,,,,,,,",  # bad split, bad label_ca
        "s5,scans/e.dcm,P5,val,0,0,,130,Q,2021-13-01,,,,,",  # age, sex, date
        "s6,scans/f.dcm,P6,val,0,0,3,,,,,,,,",  # Perugini 3 means label_ca 1
        "s7,scans/g.dcm,P7,val,0,0,,,,,,,-5,1,",  # negative follow-up time
        "s8,scans/h.dcm,P8,val,0,0,,,,,,,abc,2,",  # non-numeric time, bad event
        "s9,scans/i.dcm,P9,val,0,0,,,,,,,100,,",  # time without event
        "bad id!,scans/j.dcm,,val,0,0,,,,,,,,,",  # invalid id, empty patient
        "s11,scans/k.dcm,P11,val,0,0",  # too few fields
    ]
    path = write_manifest(tmp_path, lines)
    (tmp_path / "scans" / "missing.dcm").unlink()

    with pytest.raises(ManifestError) as caught:
        read_manifest(path)

    found = {(p.code, p.where) for p in caught.value.problems}
    assert found == {
        ("duplicate-scan-id", "row 3, column scan_id"),
        ("duplicate-scan-file", "row 3, column scan_file"),
        ("patient-in-several-splits", "row 3, column split"),
        ("missing-file", "row 4, column scan_file"),
        ("invalid-label", "row 4, column label_bm"),
        ("invalid-split", "row 5, column split"),
        ("invalid-label", "row 5, column label_ca"),
        ("invalid-age", "row 6, column age"),
        ("invalid-sex", "row 6, column sex"),
        ("invalid-date", "row 6, column study_date"),
        ("perugini-label-mismatch", "row 7, column label_ca"),
        ("invalid-follow-up-time", "row 8, column time_death_days"),
        ("invalid-follow-up-time", "row 9, column time_death_days"),
        ("invalid-event", "row 9, column event_death"),
        ("unpaired-endpoint-value", "row 10, column event_death"),
        ("invalid-scan-id", "row 11, column scan_id"),
        ("missing-value", "row 11, column patient_id"),
        ("wrong-field-count", "row 12"),
    }
    assert f"{len(found)} problems" in str(caught.value)


def test_header_mistakes_are_reported_together(tmp_path: Path) -> None:
    path = write_manifest(
        tmp_path,
        [
            "scan_id,scan_file,split,label_bm,time_death_days,event_hf",
            "s1,scans/a.dcm,train,1,100,0",
        ],
    )

    with pytest.raises(ManifestError) as caught:
        read_manifest(path)

    found = {(p.code, p.where) for p in caught.value.problems}
    assert found == {
        ("missing-column", "column patient_id"),
        ("missing-column", "column label_ca"),
        ("unpaired-endpoint-column", "column time_death_days"),
        ("unpaired-endpoint-column", "column event_hf"),
    }


def test_files_are_not_checked_when_asked(tmp_path: Path) -> None:
    path = write_manifest(
        tmp_path, [HEADER, "s1,/nowhere/a.dcm,P1,train,1,0,,,,,,,,,"], files=False
    )

    manifest = read_manifest(path, check_files=False)

    assert manifest.rows[0].scan_file == Path("/nowhere/a.dcm")


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"", "empty-manifest"),
        (HEADER.encode() + b"\n", "no-rows"),
        (b"scan_id,scan_file\n\xff\xfe,x\n", "not-utf8"),
    ],
)
def test_unusable_files_fail_clearly(tmp_path: Path, content: bytes, code: str) -> None:
    path = tmp_path / "manifest.csv"
    path.write_bytes(content)

    with pytest.raises(ManifestError) as caught:
        read_manifest(path)

    assert caught.value.codes == [code]


def test_missing_manifest_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as caught:
        read_manifest(tmp_path / "absent.csv")

    assert caught.value.codes == ["unreadable-manifest"]


def test_excel_bom_and_blank_lines_are_accepted(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, [HEADER, "", "s1,scans/a.dcm,P1,val,0,1,2,,,,,,,,"])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())

    manifest = read_manifest(path)

    assert [row.scan_id for row in manifest.rows] == ["s1"]
    assert manifest.rows[0].row_number == 3
