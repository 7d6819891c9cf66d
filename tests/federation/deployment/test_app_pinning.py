"""App pinning: a site runs a FAB only if its code is the code installed there.

FABs are built the way the centre builds them (Flower's own builder), or
hand-made zips for what an attacker could submit instead.
"""

from __future__ import annotations

import importlib
import io
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from flwr.cli.build import build_fab_from_disk, build_fab_from_files

from fedbone.federation.deployment.app_pinning import (
    AppNotAllowedError,
    FabLimits,
    check_fab,
    fab_problems,
    installed_package_dirs,
)
from fedbone.federation.deployment.pinned_clientapp import (
    pinned_install_from_fab,
    run_pinned_clientapp,
    write_clientapp_shim,
)

# Flower's builder uses pathspec's deprecated pattern class; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pathspec.*")

REPO = Path(__file__).resolve().parents[3]
INSTALLED = installed_package_dirs()
FAB_FOLDERS = ["fedbone/**", "sites/**", "server/**", "configs/**"]


def _pyproject(clientapp: str = "sites.app:app") -> bytes:
    config = {
        "project": {"name": "fedbone", "version": "0.1.0"},
        "tool": {
            "flwr": {
                "app": {
                    "publisher": "fedbone",
                    "components": {
                        "serverapp": "server.app:app",
                        "clientapp": clientapp,
                    },
                }
            }
        },
    }
    return tomli_w.dumps(config).encode()


def _installed_code() -> dict[str, bytes]:
    files = {}
    for package, folder in INSTALLED.items():
        for path in folder.rglob("*.py"):
            if "__pycache__" not in path.parts:
                relative = path.relative_to(folder).as_posix()
                files[f"{package}/{relative}"] = path.read_bytes()
    return files


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(zipfile.ZipInfo(name), content)
    return buffer.getvalue()


def _fab_with(changes: dict[str, bytes | None]) -> bytes:
    """The installed code as a zip, with members replaced, added or removed."""
    members = {"pyproject.toml": _pyproject(), **_installed_code()}
    for name, content in changes.items():
        if content is None:
            members.pop(name, None)
        else:
            members[name] = content
    return _zip(members)


def _flower_built_fab() -> bytes:
    """A FAB built by Flower's own builder from the installed code."""
    files: dict[str, bytes | Path] = {"pyproject.toml": _pyproject()}
    files.update(_installed_code())
    return build_fab_from_files(files)[0]


def _one_byte_changed(content: bytes) -> bytes:
    last = content[-1:]
    return content[:-1] + (b" " if last != b" " else b"\t")


def test_fab_built_from_installed_code_passes() -> None:
    # Prepare
    fab = _flower_built_fab()

    # Execute
    problems = fab_problems(fab, INSTALLED)

    # Assert
    assert problems == []
    check_fab(fab)


def test_one_changed_byte_in_the_clientapp_is_refused() -> None:
    # Prepare
    app = (INSTALLED["sites"] / "app.py").read_bytes()
    fab = _fab_with({"sites/app.py": _one_byte_changed(app)})

    # Execute
    problems = fab_problems(fab, INSTALLED)

    # Assert
    assert [(p.code, p.where) for p in problems] == [("changed-code", "sites/app.py")]
    assert "install the same fedbone version" in problems[0].message


@pytest.mark.parametrize(
    ("member", "code"),
    [
        ("numpy.py", "foreign-code"),
        ("tests/x.py", "foreign-code"),
        ("bench/y.py", "foreign-code"),
        ("fedbone/brand_new_module.py", "unknown-code"),
        ("evil.so", "foreign-file"),
        ("fedbone/federation/egress.cpython-311-x86_64-linux-gnu.so", "foreign-file"),
        ("sites/__pycache__/app.cpython-311.pyc", "foreign-file"),
        ("hook.pth", "foreign-file"),
        ("../x.py", "unsafe-path"),
        ("/etc/cron.d/job.yaml", "unsafe-path"),
        ("configs/../../x.toml", "unsafe-path"),
    ],
)
def test_members_that_could_run_code_are_refused(member: str, code: str) -> None:
    # Prepare
    fab = _fab_with({member: b"print('not installed here')\n"})

    # Execute
    problems = fab_problems(fab, INSTALLED)

    # Assert
    assert [(p.code, p.where) for p in problems] == [(code, member)]


def test_code_of_a_package_not_installed_here_is_refused() -> None:
    # Prepare
    without_server = {
        name: path for name, path in INSTALLED.items() if name != "server"
    }
    fab = _fab_with({})

    # Execute
    problems = fab_problems(fab, without_server)

    # Assert
    assert problems
    assert {p.code for p in problems} == {"unknown-code"}
    assert all(p.where.startswith("server/") for p in problems)


def test_configs_and_documents_are_allowed() -> None:
    # Prepare
    fab = _fab_with(
        {
            "configs/simulation.yaml": b"phases: []\n",
            "README.md": b"# fedbone\n",
            "LICENSE": b"Apache-2.0\n",
            ".info/CONTENT": b"pyproject.toml,0,0\n",
        }
    )

    # Execute
    problems = fab_problems(fab, INSTALLED)

    # Assert
    assert problems == []


def test_another_clientapp_is_refused() -> None:
    # Prepare
    fab = _fab_with({"pyproject.toml": _pyproject(clientapp="other.mod:app")})

    # Execute
    problems = fab_problems(fab, INSTALLED)

    # Assert
    assert [(p.code, p.where) for p in problems] == [
        ("other-clientapp", "pyproject.toml")
    ]
    assert "other.mod:app" in problems[0].message


@pytest.mark.parametrize(
    ("pyproject", "code"),
    [(None, "missing-pyproject"), (b"[tool.flwr\n", "bad-pyproject")],
)
def test_a_missing_or_unreadable_pyproject_is_refused(
    pyproject: bytes | None, code: str
) -> None:
    # Prepare
    fab = _fab_with({"pyproject.toml": pyproject})

    # Execute
    problems = fab_problems(fab, INSTALLED)

    # Assert
    assert [p.code for p in problems] == [code]


def test_not_a_zip_is_refused() -> None:
    # Prepare / Execute
    problems = fab_problems(b"not a zip", INSTALLED)

    # Assert
    assert [p.code for p in problems] == ["bad-fab"]


@pytest.mark.parametrize(
    ("limits", "codes"),
    [
        (FabLimits(max_members=10), ["too-many-members"]),
        (FabLimits(max_member_bytes=1000), ["member-too-large"]),
        (FabLimits(max_total_bytes=10_000), ["fab-too-large"]),
    ],
    ids=["members", "member-size", "total-size"],
)
def test_a_fab_past_a_size_bound_is_refused_unread(
    limits: FabLimits, codes: list[str]
) -> None:
    # Prepare: 20 inert members of 2,000 bytes each (40,000 bytes in all).
    fab = _fab_with({f"configs/c{i}.yaml": b"#" * 2000 for i in range(20)})
    members = zipfile.ZipFile(io.BytesIO(fab)).infolist()

    # Execute
    problems = fab_problems(fab, INSTALLED, limits)

    # Assert
    assert sorted({p.code for p in problems}) == codes
    if codes == ["member-too-large"]:
        big = {m.filename for m in members if m.file_size > 1000}
        assert {p.where for p in problems} == big
    with pytest.raises(AppNotAllowedError):
        check_fab(fab, INSTALLED, limits)


def test_every_problem_is_kept_and_a_long_list_is_shortened() -> None:
    # Prepare
    fab = _fab_with({f"evil{i}.so": b"\x7fELF" for i in range(25)})

    # Execute
    with pytest.raises(AppNotAllowedError) as refused:
        check_fab(fab, INSTALLED)

    # Assert
    assert refused.value.codes == ["foreign-file"] * 25
    assert "has 25 problems" in str(refused.value)
    assert "evil19.so" in str(refused.value)
    assert "evil20.so" not in str(refused.value)
    assert "and 5 more" in str(refused.value)


def test_the_real_fab_of_this_project_passes(tmp_path: Path) -> None:
    # Prepare: a copy of the project as the centre would build it (never in the
    # repository), limited to what the sites need.
    project = tmp_path / "fedbone"
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    config["tool"]["flwr"]["app"].setdefault("fab-include", FAB_FOLDERS)
    project.mkdir()
    (project / "pyproject.toml").write_text(tomli_w.dumps(config), encoding="utf-8")
    for folder in ("fedbone", "sites", "server", "configs"):
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(REPO / folder, project / folder, ignore=ignore)
    for extra in ("tests", "bench"):
        shutil.copytree(REPO / extra, project / extra)

    # Execute
    fab = build_fab_from_disk(project)

    # Assert
    with zipfile.ZipFile(io.BytesIO(fab)) as archive:
        top = {name.split("/")[0] for name in archive.namelist()}
    assert top == {"fedbone", "sites", "server", "configs", "pyproject.toml", ".info"}
    assert fab_problems(fab, installed_package_dirs()) == []


def test_wrapper_installs_a_pinned_fab_and_refuses_another(tmp_path: Path) -> None:
    # Prepare
    import flwr.cli.install

    calls: list[Any] = []

    def original(fab_file: bytes, **options: Any) -> Path:
        calls.append(options)
        return flwr.cli.install.install_from_fab(fab_file, **options)

    install = pinned_install_from_fab(original, INSTALLED)
    app = (INSTALLED["sites"] / "app.py").read_bytes()
    bad = _fab_with({"sites/app.py": _one_byte_changed(app)})

    # Execute
    with pytest.raises(AppNotAllowedError) as refused:
        install(bad, install_dir=tmp_path, skip_prompt=True)
    installed_at = install(_flower_built_fab(), install_dir=tmp_path, skip_prompt=True)

    # Assert
    assert refused.value.codes == ["changed-code"]
    assert len(calls) == 1
    assert (installed_at / "sites" / "app.py").read_bytes() == app


def _flower_like_main(fab: bytes, seen: list[BaseException]) -> Any:
    """Stand in for Flower's flwr-clientapp: install, reply, exit via sys.exit."""
    runtime = importlib.import_module("flwr.supernode.runtime.run_clientapp")

    def main() -> None:
        try:
            runtime.install_from_fab(fab, skip_prompt=True)
        except Exception as error:
            seen.append(error)
            sys.exit(1)
        sys.exit(0)

    return main


@pytest.mark.parametrize(("good", "status"), [(True, 0), (False, 1)])
def test_pinned_clientapp_checks_the_fab_before_flower_installs_it(
    monkeypatch: pytest.MonkeyPatch, good: bool, status: int
) -> None:
    # Prepare
    runtime = importlib.import_module("flwr.supernode.runtime.run_clientapp")
    command = importlib.import_module("flwr.supernode.cli.flwr_clientapp")
    installs: list[bytes] = []

    def flower_install(fab_file: bytes, **_: Any) -> Path:
        installs.append(fab_file)
        return Path("unused")

    fab = _fab_with({}) if good else _fab_with({"numpy.py": b"import os\n"})
    seen: list[BaseException] = []
    monkeypatch.setattr(runtime, "install_from_fab", flower_install)
    monkeypatch.setattr(command, "flwr_clientapp", _flower_like_main(fab, seen))

    # Execute
    exit_status = run_pinned_clientapp()

    # Assert
    assert exit_status == status
    assert installs == ([fab] if good else [])
    assert [type(error) for error in seen] == ([] if good else [AppNotAllowedError])
    assert runtime.install_from_fab is flower_install


def test_shim_is_an_executable_flwr_clientapp_for_this_python(tmp_path: Path) -> None:
    # Prepare
    bin_dir = tmp_path / "bin"

    # Execute
    shim = write_clientapp_shim(bin_dir)
    again = write_clientapp_shim(bin_dir)
    usage = subprocess.run(
        [str(shim), "--help"], capture_output=True, text=True, timeout=120
    )

    # Assert
    assert shim == again == bin_dir / "flwr-clientapp"
    assert os.access(shim, os.X_OK)
    assert shim.stat().st_mode & 0o777 == 0o755
    assert shim.read_text().splitlines()[0] == f"#!{sys.executable}"
    assert sorted(p.name for p in bin_dir.iterdir()) == ["flwr-clientapp"]
    assert usage.returncode == 0, usage.stderr
    assert "--runtime-api-address" in usage.stdout


def test_a_refused_bundle_is_written_to_the_site_egress_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: Flower pulls a census request for a site, then installs a bundle.
    from federation_messages import context, request
    from flwr.app import RecordDict

    from fedbone.federation.egress.guard import EgressLog

    site_dir = tmp_path / "site"
    site_dir.mkdir()
    (site_dir / "manifest.csv").write_text("scan_id\n")
    (site_dir / "site.yaml").write_text(
        "site: {id: A}\ndata: {manifest: manifest.csv}\negress_log: logs/egress.jsonl\n"
    )
    message = request("query.census", RecordDict())
    node = context(**{"site-config": str(site_dir / "site.yaml")})
    runtime = importlib.import_module("flwr.supernode.runtime.run_clientapp")
    command = importlib.import_module("flwr.supernode.cli.flwr_clientapp")
    bad = _fab_with({"numpy.py": b"import os\n"})

    def flower_like_main() -> None:
        runtime.pull_task_input(None)
        try:
            runtime.install_from_fab(bad, skip_prompt=True)
        except AppNotAllowedError:
            sys.exit(1)

    monkeypatch.setattr(runtime, "pull_task_input", lambda _: (message, node, 0, 0))
    monkeypatch.setattr(command, "flwr_clientapp", flower_like_main)

    # Execute
    exit_status = run_pinned_clientapp()

    # Assert
    entries = EgressLog(site_dir / "logs" / "egress.jsonl").entries()
    assert exit_status == 1
    assert [(e["kind"], e["verdict"]) for e in entries] == [("query.census", "error")]
    assert "foreign-code" in entries[0]["reason"]
