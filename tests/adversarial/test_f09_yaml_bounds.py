"""Issue #17, finding 9 (and finding 12's duplicate keys): hostile settings YAML.

A site or study YAML that is an alias bomb, nests thousands deep, is not
UTF-8, is huge or gives a key twice is refused with a typed ``ConfigError``
naming the problem, quickly and without a traceback.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fedbone.config.reader import MAX_YAML_BYTES, MAX_YAML_DEPTH
from fedbone.config.site import load_site_config
from fedbone.config.study import load_study_config
from fedbone.errors import ConfigError

SITE = "site: {id: A}\ndata: {manifest: manifest.csv}\n"
STUDY = "study: {name: bomb}\n"


def _billion_laughs(key: str) -> str:
    """Nine levels of ten aliases: 10**9 strings once expanded."""
    lines = [f'{key}0: &l0 ["lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 10):
        aliases = ", ".join([f"*l{level - 1}"] * 10)
        lines.append(f"{key}{level}: &l{level} [{aliases}]")
    return "\n".join(lines) + "\n"


def _site_file(tmp_path: Path, text: str | bytes) -> Path:
    (tmp_path / "manifest.csv").write_text("scan_id\n")
    path = tmp_path / "site.yaml"
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


@pytest.mark.timeout(30)
def test_alias_bomb_in_a_site_config_is_refused_fast(tmp_path: Path) -> None:
    # Prepare
    path = _site_file(tmp_path, SITE + _billion_laughs("lol"))

    # Execute
    started = time.perf_counter()
    with pytest.raises(ConfigError) as refused:
        load_site_config(path)
    seconds = time.perf_counter() - started

    # Assert
    assert refused.value.codes == ["yaml-alias"]
    assert refused.value.problems[0].where == "line 3"
    assert "anchors (&name) or aliases (*name)" in str(refused.value)
    assert seconds < 2


@pytest.mark.timeout(30)
def test_alias_bomb_in_a_study_config_is_refused_fast(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "study.yaml"
    path.write_text(STUDY + _billion_laughs("lol"), encoding="utf-8")

    # Execute
    started = time.perf_counter()
    with pytest.raises(ConfigError) as refused:
        load_study_config(path, base_dir=tmp_path)
    seconds = time.perf_counter() - started

    # Assert
    assert refused.value.codes == ["yaml-alias"]
    assert seconds < 2


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "nested",
    [
        "lol: " + "[" * 5000 + "]" * 5000 + "\n",
        "lol: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n",
        "- " * 5000 + "x\n",
    ],
    ids=["flow-lists", "flow-mappings", "block-lists"],
)
def test_nesting_5000_deep_is_a_typed_error(tmp_path: Path, nested: str) -> None:
    # Prepare
    site = _site_file(tmp_path, nested)
    study = tmp_path / "study.yaml"
    study.write_text(nested, encoding="utf-8")

    # Execute
    with pytest.raises(ConfigError) as site_refused:
        load_site_config(site)
    with pytest.raises(ConfigError) as study_refused:
        load_study_config(study, base_dir=tmp_path)

    # Assert
    assert site_refused.value.codes == ["too-deep"]
    assert study_refused.value.codes == ["too-deep"]
    assert f"deeper than {MAX_YAML_DEPTH} levels" in str(site_refused.value)


def test_a_file_that_is_not_utf8_is_a_typed_error(tmp_path: Path) -> None:
    # Prepare: a Latin-1 file, as an editor on a hospital PC may save it.
    path = _site_file(tmp_path, (SITE + "# Zürich\n").encode("latin-1"))

    # Execute
    with pytest.raises(ConfigError) as refused:
        load_site_config(path)

    # Assert
    assert refused.value.codes == ["not-utf8"]
    assert refused.value.problems[0].where == "line 3"
    assert "save the file as UTF-8" in str(refused.value)


@pytest.mark.timeout(30)
def test_an_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    # Prepare: a valid mapping padded past the limit with one long comment.
    padding = "#" * MAX_YAML_BYTES + "\n"
    path = _site_file(tmp_path, SITE + padding)

    # Execute
    with pytest.raises(ConfigError) as refused:
        load_site_config(path)

    # Assert
    assert refused.value.codes == ["file-too-large"]
    assert str(MAX_YAML_BYTES) in str(refused.value)


def test_every_duplicate_key_is_listed_with_its_lines(tmp_path: Path) -> None:
    # Prepare: last-wins would silently keep role "train" and the second manifest.
    text = (
        "site:\n"
        "  id: A\n"
        "  role: validate-only\n"
        "  role: train\n"
        "data:\n"
        "  manifest: manifest.csv\n"
        "  manifest: other.csv\n"
        "  manifest: third.csv\n"
        "device: cpu\n"
        "device: cuda\n"
    )
    path = _site_file(tmp_path, text)

    # Execute
    with pytest.raises(ConfigError) as refused:
        load_site_config(path)

    # Assert
    problems = refused.value.problems
    assert [(p.code, p.where) for p in problems] == [
        ("duplicate-key", "site.role"),
        ("duplicate-key", "data.manifest"),
        ("duplicate-key", "device"),
    ]
    assert "lines 3, 4" in problems[0].message
    assert "given 3 times (lines 6, 7, 8)" in problems[1].message
    assert "lines 9, 10" in problems[2].message


@pytest.mark.parametrize("value", ["2024-13-45", "1" * 5000])
def test_a_value_python_cannot_build_is_a_typed_error(
    tmp_path: Path, value: str
) -> None:
    # Prepare: YAML accepts both; datetime and int() raise ValueError.
    path = _site_file(tmp_path, SITE + f"device: {value}\n")

    # Execute
    with pytest.raises(ConfigError) as refused:
        load_site_config(path)

    # Assert
    assert refused.value.codes == ["invalid-yaml"]
