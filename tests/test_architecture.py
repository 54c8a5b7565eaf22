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
