"""Helpers shared by the deployment tests: repository paths, unit file parsing, tool lookup."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT_DIR = REPO / "systemd"
UNITS = sorted(p for p in UNIT_DIR.iterdir() if p.suffix in (".service", ".timer", ".socket", ".path"))

_EXEC = re.compile(r"^\s*Exec(?:Start|StartPre|StartPost|Stop|StopPost|Reload|Condition)\s*=\s*(.*)$")


def exec_binaries(unit: Path) -> set[str]:
    """Absolute program paths of every Exec*= line (prefixes like - @ + ! stripped)."""
    found: set[str] = set()
    for line in unit.read_text().splitlines():
        m = _EXEC.match(line)
        if m:
            program = m.group(1).lstrip("-@+!:|").split()[0]
            if program.startswith("/"):
                found.add(program)
    return found


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path
