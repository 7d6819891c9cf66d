"""App pinning: a site runs only the fedbone code it installed itself.

In Flower 1.42's deployment runtime the ClientApp a hospital runs comes from
the FAB (a zip) the centre submits with ``flwr run``: the SuperNode's SuperExec
starts ``flwr-clientapp`` (found on ``PATH``), which extracts the FAB with
``install_from_fab``, puts the extracted folder first on ``sys.path`` and loads
``[tool.flwr.app.components].clientapp`` from it. Whoever can submit a run
could therefore ship a ``sites/app.py`` without the egress guard to every
hospital. Flower's own FAB signing needs the Flower platform and cannot be
used offline, so a site checks the FAB itself before Flower installs it:

- every ``*.py`` member lies in a pinned package (``fedbone``, ``sites``,
  ``server``) and is byte-identical to the installed file of the same path;
- every other member is inert data (``.toml``, ``.md``, ``.yaml``, ...): no
  ``.so``, ``.pyc`` or ``.pth`` that Python could load;
- no member path escapes the app folder;
- the FAB's ``pyproject.toml`` names our ClientApp, ``sites.app:app``;
- the zip is no zip bomb: the member count, each member's size and the total
  size once extracted are bounded (:class:`FabLimits`), read from the zip's
  central directory without inflating anything. Python's ``zipfile``, which
  Flower extracts with, never writes more than a member's declared size, so
  the declared sizes bound what the install writes.

:mod:`fedbone.federation.deployment.pinned_clientapp` runs Flower's own
``flwr-clientapp`` with that check in front of the install; ``fedbone site
start`` puts it first on the SuperNode's ``PATH``. A refused FAB raises
inside Flower's task, so Flower replies with its ordinary error message (no
data) and no study code runs.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import io
import logging
import tomllib
import zipfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from fedbone.errors import Problem, ProblemsError

__all__ = [
    "ALLOWED_DATA_SUFFIXES",
    "EXPECTED_CLIENTAPP",
    "PINNED_PACKAGES",
    "AppNotAllowedError",
    "FabLimits",
    "check_fab",
    "fab_problems",
    "installed_package_dirs",
]

logger = logging.getLogger(__name__)

#: Top-level packages whose code a FAB may carry, always as installed here.
PINNED_PACKAGES: tuple[str, ...] = ("fedbone", "sites", "server")
#: The only ClientApp a site runs.
EXPECTED_CLIENTAPP = "sites.app:app"
#: Members Python never imports or executes (configs, documentation).
ALLOWED_DATA_SUFFIXES = frozenset({".toml", ".md", ".yaml", ".yml", ".json", ".txt"})
# Files Flower itself puts in a FAB: its hash manifest (removed before install)
# and the licence text `flwr build` may include.
_FLOWER_MEMBERS = frozenset({".info/CONTENT", "LICENSE"})
_PYPROJECT = "pyproject.toml"
# A real pyproject is a few KiB; refusing a huge one keeps the check cheap.
_MAX_PYPROJECT_BYTES = 1 << 20
_MAX_LISTED_PROBLEMS = 20
_FIX_VERSION = (
    "install the same fedbone version at the site, or ask the centre which "
    "version it runs"
)


@dataclass(frozen=True)
class FabLimits:
    """Bounds on what a FAB may unpack to, checked before Flower extracts it.

    The project's own FAB holds about 200 members and 1.5 MiB; the defaults
    leave ample room while keeping a bomb (a few KiB inflating to GiB) out.

    Parameters
    ----------
    max_members
        Zip entries, directories included.
    max_member_bytes
        Uncompressed size of any one member.
    max_total_bytes
        Uncompressed size of all members together.
    """

    max_members: int = 10_000
    max_member_bytes: int = 8 << 20
    max_total_bytes: int = 64 << 20


class AppNotAllowedError(ProblemsError):
    """A FAB whose code is not the code installed at this site.

    ``problems`` holds every problem found; the message lists the first 20.
    """

    kind = "Flower app bundle"

    def __init__(self, subject: str | Path, problems: Sequence[Problem]) -> None:
        super().__init__(subject, problems)
        hidden = len(self.problems) - _MAX_LISTED_PROBLEMS
        if hidden > 0:
            # Thousands of lines would bury the first, usually telling, problem.
            listed = "\n".join(f"  - {p}" for p in self.problems[:_MAX_LISTED_PROBLEMS])
            self.args = (
                f"{self.kind} {self.subject!r} has {len(self.problems)} problems:"
                f"\n{listed}\n  ... and {hidden} more",
            )


def installed_package_dirs(
    packages: Iterable[str] = PINNED_PACKAGES,
) -> dict[str, Path]:
    """Find the folders of the pinned packages installed in this environment.

    Only the import specs are looked up: no package body is imported.

    Parameters
    ----------
    packages
        Top-level package names.

    Returns
    -------
    dict[str, Path]
        Package name -> its folder; packages that are not installed are left
        out (a FAB carrying their code is then refused as ``unknown-code``).
    """
    found: dict[str, Path] = {}
    for name in packages:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        locations = list(spec.submodule_search_locations or []) if spec else []
        if locations:
            found[name] = Path(locations[0])
    return found


def _unsafe(name: str) -> bool:
    path = PurePosixPath(name)
    return (
        name.startswith(("/", "\\"))
        or "\\" in name
        or "\x00" in name
        or ".." in path.parts
        or (bool(path.parts) and ":" in path.parts[0])
    )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> bytes | None:
    """Return a member's bytes, or None if they cannot be inflated."""
    try:
        return archive.read(member)
    except (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError):
        return None


def _table(table: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = table.get(key, {})
    return value if isinstance(value, dict) else {}


def _code_problem(
    archive: zipfile.ZipFile,
    member: zipfile.ZipInfo,
    installed: Mapping[str, Path],
    study_label: str,
) -> Problem | None:
    parts = PurePosixPath(member.filename).parts
    package_dir = installed.get(parts[0]) if len(parts) > 1 else None
    if len(parts) < 2 or parts[0] not in PINNED_PACKAGES:
        return Problem(
            "foreign-code",
            f"{study_label} carries Python code outside the packages "
            f"{', '.join(PINNED_PACKAGES)}; at the top of the app folder it could "
            "shadow an installed library. Ask the centre to build the FAB with "
            "`fab-include` limited to fedbone/, sites/, server/ and configs/",
            member.filename,
        )
    local = package_dir.joinpath(*parts[1:]) if package_dir else None
    if local is None or not local.is_file():
        return Problem(
            "unknown-code",
            f"the study's fedbone differs from the one installed here "
            f"({study_label} carries a module this site's {parts[0]} does not "
            f"have): {_FIX_VERSION}",
            member.filename,
        )
    local_bytes = local.read_bytes()
    # Sizes first: a module of another size is never inflated (nor a zip bomb).
    if member.file_size != len(local_bytes) or _read(archive, member) != local_bytes:
        return Problem(
            "changed-code",
            f"the study's fedbone differs from the one installed here "
            f"({study_label} carries another version of this file): {_FIX_VERSION}",
            member.filename,
        )
    return None


def _pyproject_problems(
    archive: zipfile.ZipFile, member: zipfile.ZipInfo | None
) -> tuple[list[Problem], Mapping[str, Any]]:
    rebuild = "build the FAB with `flwr build` from the fedbone project folder"
    if member is None:
        missing = (
            f"the FAB has no pyproject.toml, so its ClientApp is unknown; {rebuild}"
        )
        return [Problem("missing-pyproject", missing, _PYPROJECT)], {}
    content = None
    if member.file_size <= _MAX_PYPROJECT_BYTES:
        content = _read(archive, member)
    try:
        if content is None:
            raise ValueError("too large or corrupt in the zip")
        config = tomllib.loads(content.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        unreadable = f"the FAB's pyproject.toml cannot be read ({error}); {rebuild}"
        return [Problem("bad-pyproject", unreadable, _PYPROJECT)], {}
    app = _table(_table(_table(config, "tool"), "flwr"), "app")
    clientapp = _table(app, "components").get("clientapp")
    if clientapp != EXPECTED_CLIENTAPP:
        other = (
            f"[tool.flwr.app.components].clientapp is {clientapp!r}; a fedbone "
            f"site runs only {EXPECTED_CLIENTAPP!r}. Ask the centre to submit the "
            "fedbone project unchanged"
        )
        return [Problem("other-clientapp", other, _PYPROJECT)], config
    return [], config


def _study_label(config: Mapping[str, Any]) -> str:
    project = config.get("project", {})
    if isinstance(project, dict) and project.get("version"):
        return f"the FAB ({project.get('name', '?')} {project['version']})"
    return "the FAB"


def _size_problems(
    infos: Sequence[zipfile.ZipInfo], limits: FabLimits
) -> list[Problem]:
    """Refuse a zip bomb from its central directory, inflating nothing."""
    bomb = "refuse this FAB and tell the centre, `flwr build` makes no such bundle"
    if len(infos) > limits.max_members:
        return [
            Problem(
                "too-many-members",
                f"the FAB holds {len(infos)} members, more than "
                f"{limits.max_members}; {bomb}",
            )
        ]
    problems = [
        Problem(
            "member-too-large",
            f"the member unpacks to {info.file_size} bytes, more than "
            f"{limits.max_member_bytes} ({info.compress_size} bytes packed); {bomb}",
            info.filename,
        )
        for info in infos
        if info.file_size > limits.max_member_bytes
    ]
    total = sum(info.file_size for info in infos)
    if total > limits.max_total_bytes:
        problems.append(
            Problem(
                "fab-too-large",
                f"the FAB unpacks to {total} bytes, more than "
                f"{limits.max_total_bytes}; {bomb}",
            )
        )
    return problems


def fab_problems(
    fab_content: bytes,
    installed: Mapping[str, Path],
    limits: FabLimits | None = None,
) -> list[Problem]:
    """List every reason not to run a FAB at this site.

    Parameters
    ----------
    fab_content
        The FAB (zip) as Flower's SuperNode hands it to ``flwr-clientapp``.
    installed
        Pinned package name -> its installed folder
        (:func:`installed_package_dirs`).
    limits
        Bounds on the unpacked size; default :class:`FabLimits`.

    Returns
    -------
    list[Problem]
        Empty when the FAB holds only installed code and inert data. Codes:
        ``bad-fab``, ``too-many-members``, ``member-too-large``,
        ``fab-too-large`` (a zip bomb: then nothing else is checked),
        ``unsafe-path``, ``foreign-code``, ``unknown-code``, ``changed-code``,
        ``foreign-file``, ``missing-pyproject``, ``bad-pyproject``,
        ``other-clientapp``; ``where`` is the member path.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(fab_content))
    except zipfile.BadZipFile as error:
        return [
            Problem(
                "bad-fab",
                f"the FAB is not a zip archive ({error}); ask the centre to rebuild "
                "it with `flwr build`",
            )
        ]
    with archive:
        infos = archive.infolist()
        too_large = _size_problems(infos, limits or FabLimits())
        if too_large:
            return too_large
        # The last entry of a name is the one extracted and the one read.
        pyproject = {info.filename: info for info in infos}.get(_PYPROJECT)
        problems, config = _pyproject_problems(archive, pyproject)
        label = _study_label(config)
        for info in infos:
            name = info.filename
            if _unsafe(name):
                problems.append(
                    Problem(
                        "unsafe-path",
                        "the member would be written outside the app folder; "
                        "refuse this FAB and tell the centre, it was not made by "
                        "`flwr build`",
                        name,
                    )
                )
            elif info.is_dir() or name in _FLOWER_MEMBERS or name == _PYPROJECT:
                continue
            elif name.endswith(".py"):
                problem = _code_problem(archive, info, installed, label)
                if problem is not None:
                    problems.append(problem)
            elif PurePosixPath(name).suffix.lower() not in ALLOWED_DATA_SUFFIXES:
                problems.append(
                    Problem(
                        "foreign-file",
                        f"{label} carries a file Python could load or run (only "
                        f"{', '.join(sorted(ALLOWED_DATA_SUFFIXES))} are allowed "
                        "besides the installed code); ask the centre to remove it "
                        "from the FAB",
                        name,
                    )
                )
    return problems


def check_fab(
    fab_content: bytes,
    installed: Mapping[str, Path] | None = None,
    limits: FabLimits | None = None,
) -> None:
    """Refuse a FAB whose code is not the code installed at this site.

    Parameters
    ----------
    fab_content
        The FAB (zip) bytes.
    installed
        Pinned package folders; default :func:`installed_package_dirs`.
    limits
        Bounds on the unpacked size; default :class:`FabLimits`.

    Raises
    ------
    AppNotAllowedError
        Listing every problem :func:`fab_problems` found.
    """
    folders = installed_package_dirs() if installed is None else installed
    subject = f"sha256 {_sha256(fab_content)[:12]}"
    AppNotAllowedError.raise_if_any(subject, fab_problems(fab_content, folders, limits))
