"""Writes one benchmark's section of BENCHMARKS.md, replacing that section if it is there."""

from __future__ import annotations

import platform
import re
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILE = ROOT / "BENCHMARKS.md"
HEADER = (
    "# Benchmarks\n\n"
    "Measured with `./dev bench` (each section names its own command). Every number is compared\n"
    "with a baseline measured in the same run; ratios matter more than absolute values.\n"
)


def write_section(title: str, body: str, path: Path = FILE) -> None:
    """Put ``## title`` with ``body`` into BENCHMARKS.md (machine and date added)."""
    stamp = f"_{time.strftime('%Y-%m-%d')}, {platform.machine()}, Python {platform.python_version()}_\n\n"
    section = f"## {title}\n\n{stamp}{body.rstrip()}\n"
    text = path.read_text() if path.exists() else HEADER
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text)
