"""The layering of DESIGN.md, checked on the source: who may import whom."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = {"cabinet", "drivers", "sync", "cloud", "models", "hardware_sim", "tests", "bench"}
ALLOWED = {
    "cabinet": {"cabinet", "drivers", "sync", "models"},
    "cloud": {"cloud", "sync"},
    "sync": {"sync"},
    "drivers": {"drivers"},
    "models": {"models"},
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return out


def violations(package: str) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT)
        for line, mod in imported_modules(path):
            top = mod.split(".")[0]
            if top not in PROJECT:
                continue
            if package == "hardware_sim":
                ok = top == "hardware_sim" or mod == "drivers.register_map" or mod == "drivers"
            elif package == "models" and rel.parts[:2] == ("models", "training"):
                ok = top in {"models", "hardware_sim"}
            else:
                ok = top in ALLOWED[package]
            if not ok:
                found.append(f"{rel}:{line} imports {mod}")
    return found


@pytest.mark.parametrize("package", [*sorted(ALLOWED), "hardware_sim"])
def test_package_imports_only_what_the_design_allows(package: str) -> None:
    assert violations(package) == []


def test_the_checker_catches_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("import cloud.app\nfrom cabinet import ledger\n")
    assert [m for _, m in imported_modules(bad)] == ["cloud.app", "cabinet"]


OUTSIDE = "../" + "shared"  # spelled in two parts so this file does not match itself
SKIP_DIRS = {".git", ".venv", "node_modules", "var", "__pycache__"}


def files_pointing_outside(root: Path) -> list[str]:
    """Text files of the repository that refer to documents outside it."""
    found = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or SKIP_DIRS & set(rel.parts) or rel.parts[0].endswith(".egg-info"):
            continue
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        if OUTSIDE in text:
            found.append(str(rel))
    return found


def test_the_repository_stands_alone_no_file_points_outside_it() -> None:
    assert files_pointing_outside(ROOT) == []


def test_the_outside_pointer_check_finds_one(tmp_path: Path) -> None:
    (tmp_path / "doc.md").write_text(f"see {OUTSIDE}/DESIGN.md\n")
    (tmp_path / "ok.md").write_text("see docs/architecture.md\n")
    assert files_pointing_outside(tmp_path) == ["doc.md"]


def test_architecture_doc_states_the_rules_the_checker_enforces() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    for package, allowed in ALLOWED.items():
        line = next((ln for ln in doc.splitlines() if ln.startswith(package + " ") and "──►" in ln), "")
        assert line, f"docs/architecture.md has no import rule for {package}"
        assert set(line.split("──►")[1].split("(")[0].replace(",", " ").split()) == allowed, line


# --- no import circles ----------------------------------------------------------------------

CYCLE_PACKAGES = ("cabinet", "drivers", "sync", "cloud", "models", "hardware_sim")


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path, packages: tuple[str, ...] = CYCLE_PACKAGES) -> dict[str, set[str]]:
    """Module -> project modules it imports anywhere (top level, in functions, under
    TYPE_CHECKING: each is a dependency a reader must follow), relative imports resolved.
    ``from pkg import name`` counts as an import of ``pkg.name`` when that is a module."""
    files = {module_name(root, p): p for pkg in packages for p in (root / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        here = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                for a in node.names:
                    name = a.name
                    while name and name not in files:
                        name = name.rpartition(".")[0]
                    if name:
                        edges.add(name)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base_parts = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                    base = ".".join([*base_parts, *([node.module] if node.module else [])])
                else:
                    base = node.module or ""
                for a in node.names:
                    if f"{base}.{a.name}" in files:
                        edges.add(f"{base}.{a.name}")
                    elif base in files:
                        edges.add(base)
        edges.discard(mod)
        graph[mod] = edges
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    cycles.append(sorted(comp))
    return cycles


def test_no_module_imports_itself_back_through_others() -> None:
    cycles = import_cycles(import_graph(ROOT))
    detail = []
    graph = import_graph(ROOT)
    for comp in cycles:
        detail += [f"{m} -> {sorted(graph[m] & set(comp))}" for m in comp]
    assert cycles == [], "import circles:\n" + "\n".join(detail)


def test_the_cycle_checker_finds_a_circle_through_a_function_body_import(tmp_path: Path) -> None:
    pkg = tmp_path / "cabinet"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "service.py").write_text("def start():\n    from cabinet.assemble import build\n")
    (pkg / "assemble.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import service\n"
    )
    (pkg / "other.py").write_text("from cabinet import service\n")
    assert import_cycles(import_graph(tmp_path, ("cabinet",))) == [["cabinet.assemble", "cabinet.service"]]
