"""A cabinet running in-process against the simulator: Modbus RTU over a real pty, locks on
gpiozero pins linked to the simulator's lock mechanics over its GPIO link socket."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cabinet import config as cfg
from cabinet.service import Cabinet
from hardware_sim.cabinet import SimCabinet, SimConfig
from hardware_sim.server import SimServer


@dataclass
class Rig:
    sim: SimServer
    cab: Cabinet
    data_dir: Path

    @property
    def simcab(self) -> SimCabinet:
        return self.sim.cabinet

    @property
    def ledger(self) -> Any:
        return self.cab.ledger

    @property
    def controller(self) -> Any:
        return self.cab.controller

    async def until(self, pred: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
        """Poll an (a)sync predicate until it is truthy."""
        deadline = time.monotonic() + timeout
        while True:
            r = pred()
            if asyncio.iscoroutine(r):
                r = await r
            if r:
                return r
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            await asyncio.sleep(0.02)

    async def events(self, type_: str | None = None) -> list[Any]:
        evs = await self.ledger.events_after(0, limit=100000, max_bytes=1 << 30)
        return [e for e in evs if type_ is None or e.type == type_]

    async def settle(self) -> None:
        """Wait until the cabinet has recorded every battery the simulator holds."""

        async def known() -> bool:
            slots = {s.slot: s.sn for s in await self.ledger.slots()}
            want = {s.number: s.battery.sn for s in self.simcab.slots if s.battery is not None}
            return all(slots.get(n) == sn for n, sn in want.items())

        await self.until(known, what="the cabinet to know every battery")


def make_config(data_dir: Path, pty: str, slots: int, **over: dict[str, Any]) -> cfg.Config:
    data: dict[str, dict[str, Any]] = {
        "cabinet": {"id": "CAB-T1", "data_dir": str(data_dir), "slots": slots, "backup_interval_s": 3600},
        "bus": {"url": f"serial://{pty}", "slots_per_board": 4, "timeout_s": 0.1, "poll_interval_s": 0.05},
        "locks": {"pin_factory": "cabinetsim", "pulse_s": 0.05, "jam_timeout_s": 0.5},
        "rent": {"min_soc": 80, "eject_timeout_s": 3.0},
        "sync": {"enabled": False},
    }
    for section, values in over.items():
        data.setdefault(section, {}).update(values)
    return cfg.from_dict(data, "<test>")


@pytest.fixture
async def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    """8 slots on 2 boards, half of them holding charged packs, and a running cabinet."""
    async with SimServer(SimConfig(slots=8, slots_per_board=4, seed=7, fill=0.0), speed=1.0) as sim:
        for slot, soc in ((1, 0.95), (2, 0.90), (3, 0.50), (5, 0.85)):
            sim.cabinet.insert(slot, sn=f"PB00000{slot}", soc=soc)
        monkeypatch.setenv("CABINET_SIM_GPIO", sim.gpio_address)
        cab = Cabinet(make_config(tmp_path, sim.pty_path, 8))
        await cab.start()
        rig = Rig(sim, cab, tmp_path)
        try:
            await rig.settle()
            yield rig
        finally:
            await cab.stop()
