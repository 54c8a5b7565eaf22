"""docs/register-map.md must describe drivers/register_map.py exactly (names and addresses)."""

from __future__ import annotations

import re
from pathlib import Path

from drivers import register_map as rm

DOC = Path(__file__).resolve().parents[2] / "docs" / "register-map.md"


def _rows(section: str) -> list[tuple[str, str]]:
    text = DOC.read_text()
    part = text.split(section, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| (\+?\d+(?:\.\.\+?\d+)?) \| `(\w+)` \|", part, re.M)


def _span(base: str, r: rm.Register, plus: bool = False) -> str:
    p = "+" if plus else ""
    return f"{p}{r.offset}" + (f"..{p}{r.offset + r.count - 1}" if r.count > 1 else "")


def test_register_map_doc_matches_the_code() -> None:
    assert _rows("## Board header") == [(_span("", r), r.name) for r in rm.HEADER]
    assert _rows("## Slot block") == [(_span("+", r, plus=True), r.name) for r in rm.SLOT_BLOCK]
    assert _rows("## Holding registers") == [(_span("", r), r.name) for r in rm.HOLDING]
    text = DOC.read_text()
    for flag in (*rm.SlotStatus, *rm.SlotFault, *rm.BoardFault):
        assert f"`{flag.name}` 0x{flag.value:04X}" in text, flag
