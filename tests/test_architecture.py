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
