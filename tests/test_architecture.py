"""The layout's rules, checked on the source: who may import whom, and docs.

- ``fedbone/`` imports neither ``server`` nor ``sites``;
- only ``fedbone/federation/`` knows Flower (``flwr``);
- no import cycle between fedbone's packages (``fedbone.<package>``);
- every public function with three or more parameters documents them in a
  numpydoc ``Parameters`` section.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = sorted((ROOT / "fedbone").rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Return every module ``path`` imports (absolute names, any nesting)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def _package(module: str) -> str:
    return ".".join(module.split(".")[:2])


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: _module_name(p))
def test_library_module_imports_neither_server_nor_sites(path: Path) -> None:
    imported = _imports(path)

    forbidden = {m for m in imported if m.split(".")[0] in {"server", "sites"}}

    assert not forbidden, f"{path.relative_to(ROOT)} imports {sorted(forbidden)}"


def test_only_the_federation_package_imports_flower() -> None:
    outside = [p for p in LIBRARY if "federation" not in p.relative_to(ROOT).parts]

    flower_users = [
        str(p.relative_to(ROOT))
        for p in outside
        if any(m.split(".")[0] == "flwr" for m in _imports(p))
    ]

    assert flower_users == []


def test_fedbone_packages_form_no_import_cycle() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in LIBRARY:
        source = _package(_module_name(path))
        for target in _imports(path):
            if target.startswith("fedbone.") and _package(target) != source:
                graph[source].add(_package(target))

    cycles = []
    for start in sorted(graph):
        seen, stack = set(), list(graph[start])
        while stack:
            node = stack.pop()
            if node == start:
                cycles.append(start)
                break
            if node not in seen:
                seen.add(node)
                stack.extend(graph.get(node, ()))

    assert cycles == [], f"packages on an import cycle: {cycles}"


def _undocumented(path: Path) -> list[str]:
    missing: list[str] = []

    def visit(node: ast.AST, owner: str, private: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                hidden = private or child.name.startswith("_")
                visit(child, f"{child.name}.", hidden)
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                if private or child.name.startswith("_"):
                    continue
                args = child.args
                named = args.posonlyargs + args.args + args.kwonlyargs
                count = len([a for a in named if a.arg not in {"self", "cls"}])
                count += bool(args.vararg) + bool(args.kwarg)
                docstring = ast.get_docstring(child) or ""
                if count >= 3 and "Parameters\n" not in docstring:
                    missing.append(f"{owner}{child.name} (line {child.lineno})")

    visit(ast.parse(path.read_text()), "", False)
    return missing


def test_public_functions_with_three_parameters_document_them() -> None:
    code = LIBRARY + sorted((ROOT / "sites").rglob("*.py"))
    code += sorted((ROOT / "server").rglob("*.py"))

    missing = {
        str(p.relative_to(ROOT)): names for p in code if (names := _undocumented(p))
    }

    assert missing == {}
