"""The web package's structure: nothing imports ``cabinet.web.app`` back, the shared helpers
import nothing of the package, and the slot view and the controller share one rentable rule."""

from __future__ import annotations

import ast
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cabinet import config as cfg
from cabinet.controller import Controller, RentSettings
from cabinet.ledger import BatteryState, RentalState, SlotState
from cabinet.observations import Observation
from cabinet.web.port import CabinetAdapter
from cabinet.web.state import slots_view

WEB = Path(__file__).resolve().parents[2] / "cabinet" / "web"
PACKAGE = "cabinet.web"


def imports_of(path: Path, package: str = PACKAGE) -> set[str]:
    """Every module ``path`` imports, anywhere in it (function bodies included), as absolute
    names; ``from X import y`` counts as importing both ``X`` and ``X.y``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.add(module)
            out.update(f"{module}.{a.name}" for a in node.names)
    return out


def web_modules() -> list[Path]:
    paths = sorted(WEB.glob("*.py"))
    assert len(paths) > 5, f"no web package at {WEB}"
    return paths


def importers_of_app(paths: list[Path]) -> list[str]:
    return [
        p.name
        for p in paths
        if p.name != "__init__.py"  # the package's front door re-exports WebUI from app
        and any(m == f"{PACKAGE}.app" or m.startswith(f"{PACKAGE}.app.") for m in imports_of(p))
    ]


def test_no_module_of_the_web_package_imports_app() -> None:
    assert importers_of_app(web_modules()) == []


@pytest.mark.parametrize("name", ["common.py", "port.py"])
def test_the_shared_helpers_and_the_port_import_nothing_of_the_web_package(name: str) -> None:
    ours = sorted(m for m in imports_of(WEB / name) if m == PACKAGE or m.startswith(PACKAGE + "."))
    assert ours == []


def test_the_import_checker_sees_imports_inside_functions(tmp_path: Path) -> None:
    cases = {
        "body.py": "def f():\n    from .app import ui_of\n    return ui_of\n",
        "plain.py": "from . import app\n",
        "absolute.py": "async def f():\n    import cabinet.web.app\n",
        "named.py": "class C:\n    def m(self):\n        from cabinet.web.app import WebUI\n",
        "fine.py": "from .apply import x\nfrom . import api\nimport cabinet.webapp\n",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
    assert sorted(importers_of_app(sorted(tmp_path.glob("*.py")))) == [
        "absolute.py",
        "body.py",
        "named.py",
        "plain.py",
    ]


# ---- one rentable-slot rule ------------------------------------------------------------


@dataclass
class FakeLedger:
    """The reads the controller's rule and the slot view make of the ledger."""

    slot_rows: list[SlotState] = field(default_factory=list)
    battery_rows: list[BatteryState] = field(default_factory=list)

    async def slots(self) -> list[SlotState]:
        return list(self.slot_rows)

    async def slot(self, n: int) -> SlotState | None:
        return next((s for s in self.slot_rows if s.slot == n), None)

    async def batteries(self) -> list[BatteryState]:
        return list(self.battery_rows)

    async def battery(self, sn: str) -> BatteryState | None:
        return next((b for b in self.battery_rows if b.sn == sn), None)

    async def open_rentals(self) -> list[RentalState]:
        return []


class NoLocks:
    async def open(self, slot: int, timeout: float) -> Any:
        raise AssertionError("the rentable rule must not open a lock")

    def is_seated(self, slot: int) -> bool:
        return False


def sn_of(slot: int, kind: str) -> str:
    """A serial number of its own for each slot: ``kind`` "A1" (ours), "B2" (another), "DD" (denied)."""
    return f"PB{slot:04X}{kind}"


@dataclass(frozen=True)
class Situation:
    """One slot: what the ledger holds there, what the bus reads, and the battery's record."""

    held: str | None = "A1"  # the ledger's battery in the slot, "A1" or "DD" (denied); None: empty
    slot_quarantined: bool = False
    fault: str | None = None
    reading: str = "battery"  # none (never read), unknown, empty, battery, other (another pack)
    soc: int = 95
    faults: int = 0
    battery: str = "ok"  # none (no record), ok, quarantined

    def rows(self, slot: int) -> tuple[SlotState, Observation | None, BatteryState | None]:
        held = sn_of(slot, self.held) if self.held else None
        st = SlotState(
            slot=slot,
            sn=held,
            fault_kind=self.fault,
            fault_detail=self.fault,
            quarantined=self.slot_quarantined,
            quarantine_reason="bent" if self.slot_quarantined else None,
            updated_seq=1,
        )
        ob: Observation | None = None
        if self.reading == "unknown":
            ob = Observation(slot=slot, known=False)
        elif self.reading == "empty":
            ob = Observation(slot=slot, known=True)
        elif self.reading in ("battery", "other"):
            sn = sn_of(slot, "B2" if self.reading == "other" else self.held or "A1")
            ob = Observation(
                slot=slot, known=True, present=True, seated=True, sn=sn, soc=self.soc, faults=self.faults
            )
        b = None
        if self.battery != "none" and held:
            b = BatteryState(
                sn=held,
                place="slot",
                slot=slot,
                rental_id=None,
                soc=self.soc,
                cycles=3,
                quarantined=self.battery == "quarantined",
                quarantine_reason=None,
                risk=None,
                gone_reason=None,
                first_seq=1,
                updated_seq=1,
            )
        return st, ob, b


async def both_rules(situations: list[Situation]) -> tuple[set[int], set[int]]:
    """(slots the controller would rent from, slots the web view shows as rentable)."""
    ledger = FakeLedger()
    observed: dict[int, Observation] = {}
    for slot, sit in enumerate(situations, start=1):
        st, ob, b = sit.rows(slot)
        ledger.slot_rows.append(st)
        if ob is not None:
            observed[slot] = ob
        if b is not None:
            ledger.battery_rows.append(b)
    denied = {sn_of(n, "DD") for n in range(1, len(situations) + 1)}
    controller = Controller(ledger, NoLocks(), RentSettings(min_soc=80), deny_list=lambda: denied)
    controller.observed = observed
    cab = SimpleNamespace(
        config=cfg.from_dict({"cabinet": {"id": "CAB-S1", "slots": len(situations)}}),
        ledger=ledger,
        ledger_problem=None,
        controller=controller,
        charging_now=set(),
        health=None,
    )
    view = await slots_view(CabinetAdapter(cab))
    return set(await controller.rentable_slots()), {v["slot"] for v in view if v["rentable"]}


SITUATIONS = {
    "ready": Situation(),
    "low charge": Situation(soc=50),
    "just at min_soc": Situation(soc=80),
    "slot quarantined": Situation(slot_quarantined=True),
    "slot faulty": Situation(fault="lock_jam"),
    "battery quarantined": Situation(battery="quarantined"),
    "no battery record": Situation(battery="none"),
    "denied battery": Situation(held="DD"),
    "fault bits": Situation(faults=4),
    "another pack than the ledger's": Situation(reading="other"),
    "board not answering": Situation(reading="unknown"),
    "never read": Situation(reading="none"),
    "ledger holds one, bus reads empty": Situation(reading="empty"),
    "bus reads one, ledger holds none": Situation(held=None),
}


@pytest.mark.parametrize("name", list(SITUATIONS))
async def test_the_slot_view_and_the_controller_agree_on_a_slot(name: str) -> None:
    controller, view = await both_rules([SITUATIONS[name]])
    assert view == controller
    assert (controller == {1}) == (name in ("ready", "just at min_soc"))


async def test_the_slot_view_and_the_controller_agree_on_every_combination() -> None:
    combos = [
        Situation(held, q, fault, reading, soc, faults, battery)
        for held, q, fault, reading, soc, faults, battery in itertools.product(
            ("A1", "DD", None),
            (False, True),
            (None, "lock_jam"),
            ("none", "unknown", "empty", "battery", "other"),
            (95, 50),
            (0, 4),
            ("none", "ok", "quarantined"),
        )
    ]
    rentable = 0
    for start in range(0, len(combos), 48):  # at most 48 slots in a cabinet
        batch = combos[start : start + 48]
        controller, view = await both_rules(batch)
        diverging = sorted(controller ^ view)
        assert not diverging, [(n, batch[n - 1]) for n in diverging]
        rentable += len(controller)
    assert rentable > 0  # the combinations include rentable slots, so agreement is not vacuous
