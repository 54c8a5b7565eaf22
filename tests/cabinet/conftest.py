"""A cabinet running in-process against the simulator: Modbus RTU over a real pty, locks on
gpiozero pins linked to the simulator's lock mechanics over its GPIO link socket."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cabinet import config as cfg
from cabinet.service import Cabinet
from hardware_sim.cabinet import SimCabinet, SimConfig
from hardware_sim.server import SimServer
from sync.commands import Command
from sync.passes import OfflinePass
from sync.signing import Signer, generate_private_key, public_key_b64
from tests.conftest import until


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
        return await until(pred, timeout, what)

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
        "web": {"enabled": False},
    }
    for section, values in over.items():
        data.setdefault(section, {}).update(values)
    return cfg.from_dict(data, "<test>")


class CloudKeys:
    """The cloud's signing key for a test, and the cabinet config line that trusts it."""

    def __init__(self) -> None:
        self.signer = Signer(generate_private_key(), "k1")
        self.config_entry = f"k1:{public_key_b64(self.signer.public_key)}"
        self.counter = 0

    def command(
        self,
        kind: str,
        cabinet: str = "CAB-T1",
        ttl: float = 60,
        counter: int | None = None,
        issued_at: float | None = None,
        **args: Any,
    ) -> bytes:
        self.counter += 1
        now = time.time() if issued_at is None else issued_at
        cmd = Command(
            cmd_id=f"C{self.counter}",
            cabinet=cabinet,
            counter=counter or self.counter,
            issued_at=now,
            expires_at=now + ttl,
            kind=kind,
            args=args,
        )
        return self.signer.sign(cmd)

    def offline_pass(
        self, pass_id: str, ttl: float = 3600, max_rentals: int = 1, user: str = "u-pass", age: float = 0.0
    ) -> str:
        now = time.time() - age
        return self.signer.sign_pass(OfflinePass(pass_id, user, now, now + ttl, max_rentals))


@pytest.fixture
def cloud_keys() -> CloudKeys:
    return CloudKeys()


@pytest.fixture
async def make_rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cloud_keys: CloudKeys):
    """Start a simulator and a cabinet; ``await make_rig(broker=...)`` with sync to a broker."""
    stack = contextlib.AsyncExitStack()

    async def make(
        broker: Any = None, speed: float = 1.0, batteries: Any = None, **over: dict[str, Any]
    ) -> Rig:
        sim = await stack.enter_async_context(
            SimServer(SimConfig(slots=8, slots_per_board=4, seed=7, fill=0.0), speed=speed)
        )
        if batteries is None:
            batteries = [
                (slot, f"PB00000{slot}", soc) for slot, soc in ((1, 0.95), (2, 0.90), (3, 0.50), (5, 0.85))
            ]
        for slot, sn, soc in batteries:
            sim.cabinet.insert(slot, sn=sn, soc=soc)
        over["locks"] = {"sim_address": sim.gpio_address, **over.get("locks", {})}
        sync = {"enabled": False, "cloud_keys": [cloud_keys.config_entry]}
        if broker is not None:
            sync.update(enabled=True, broker_host=broker.host, broker_port=broker.port, tls=False)
        over.setdefault("sync", {})
        over["sync"] = {**sync, **over["sync"]}
        cab = Cabinet(make_config(tmp_path, sim.pty_path, 8, **over))
        await cab.start()
        stack.push_async_callback(cab.stop)
        rig = Rig(sim, cab, tmp_path)
        await rig.settle()
        return rig

    try:
        yield make
    finally:
        await stack.aclose()


@pytest.fixture
async def rig(make_rig) -> Rig:
    """8 slots on 2 boards, packs in slots 1, 2, 3 (50 %) and 5, and a running cabinet without sync."""
    return await make_rig()
