"""The tests' one simulator-plus-cabinet rig (a pytest plugin, registered in ``tests/conftest.py``).

A rig is the hardware simulator (``SimServer``: Modbus RTU over a real pty, lock mechanics behind
the GPIO link socket) and the real ``cabinet.service.Cabinet`` running in-process against it, on
one data directory. It can sync to a broker, and be restarted (a power cut: the cabinet and its
hardware stop, and start again on the same data directory).

Fixtures: ``cloud_keys`` (the cloud's signing key, trusted by every rig), ``make_rig`` (``await
make_rig(broker=..., speed=..., batteries=..., data_dir=..., **config overrides)``) and ``rig``
(the standard one). The areas' own rigs are thin uses of it: ``fault_rig`` (tests/faults),
``make_site`` (tests/e2e), ``start_web`` (tests/web).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, cast

import pytest

from cabinet import config as cfg
from cabinet.ledger import Event
from cabinet.service import Cabinet
from hardware_sim.cabinet import SimCabinet, SimConfig
from hardware_sim.server import SimServer
from sync.commands import Command, CommandKind
from sync.passes import OfflinePass
from sync.signing import Signer, generate_private_key, public_key_b64
from tests.helpers import until

CABINET_ID = "CAB-T1"
SLOTS = 8  # on 2 boards of 4

#: (slot, serial number, state of charge) of the packs a rig starts with
Battery = tuple[int, str, float]
DEFAULT_BATTERIES: tuple[Battery, ...] = (
    (1, "PB000001", 0.95),
    (2, "PB000002", 0.90),
    (3, "PB000003", 0.50),
    (5, "PB000005", 0.85),
)

#: config overrides, section -> key -> value (``make_config(..., rent={"min_soc": 50})``)
Overrides = dict[str, dict[str, Any]]


def make_config(data_dir: Path, pty: str, slots: int, **over: dict[str, Any]) -> cfg.Config:
    """The cabinet's config for a test: the simulator's bus on ``pty``, sync and web UI off."""
    data: dict[str, dict[str, Any]] = {
        "cabinet": {"id": CABINET_ID, "data_dir": str(data_dir), "slots": slots, "backup_interval_s": 3600},
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
        cabinet: str = CABINET_ID,
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
            kind=cast(CommandKind, kind),  # Command checks it and makes it a CommandKind
            args=args,
        )
        return self.signer.sign(cmd)

    def offline_pass(
        self, pass_id: str, ttl: float = 3600, max_rentals: int = 1, user: str = "u-pass", age: float = 0.0
    ) -> str:
        now = time.time() - age
        return self.signer.sign_pass(OfflinePass(pass_id, user, now, now + ttl, max_rentals))


async def start_sim(speed: float = 1.0, batteries: Sequence[Battery] = DEFAULT_BATTERIES) -> SimServer:
    """The standard simulator: 8 slots on 2 boards (seed 7, empty), then ``batteries`` inserted."""
    sim = SimServer(SimConfig(slots=SLOTS, slots_per_board=4, seed=7, fill=0.0), speed=speed)
    await sim.__aenter__()
    try:
        for slot, sn, soc in batteries:
            sim.cabinet.insert(slot, sn=sn, soc=soc)
    except BaseException:
        await sim.__aexit__(None, None, None)
        raise
    return sim


class Rig:
    """The simulator and a cabinet on ``data_dir``; :meth:`restart` is a power cut.

    ``on_start`` is called with every cabinet this rig starts (the first and each restart's).
    """

    def __init__(
        self,
        sim: SimServer,
        data_dir: Path,
        over: Overrides,
        *,
        speed: float = 1.0,
        batteries: Sequence[Battery] = DEFAULT_BATTERIES,
        on_start: Callable[[Cabinet], None] | None = None,
    ) -> None:
        self.sim = sim
        self.data_dir = data_dir
        self.over = over
        self.speed = speed
        self.batteries = tuple(batteries)
        self.on_start = on_start
        self._cab: Cabinet | None = None
        self._sim_running = True

    @property
    def cab(self) -> Cabinet:
        assert self._cab is not None, "the rig's cabinet is not running"
        return self._cab

    @property
    def simcab(self) -> SimCabinet:
        return self.sim.cabinet

    @property
    def ledger(self) -> Any:
        return self.cab.ledger

    @property
    def controller(self) -> Any:
        return self.cab.controller

    async def start_cabinet(self) -> None:
        """Start a cabinet on the data dir against the running simulator (its bus and GPIO link)."""
        assert self._cab is None, "the rig's cabinet is already running"
        assert self.sim.pty_path is not None
        over = {**self.over, "locks": {"sim_address": self.sim.gpio_address, **self.over.get("locks", {})}}
        cab = Cabinet(make_config(self.data_dir, self.sim.pty_path, SLOTS, **over))
        await cab.start()  # closes what it opened if it fails
        self._cab = cab
        if self.on_start is not None:
            self.on_start(cab)

    async def stop(self) -> None:
        """Stop the cabinet (``Cabinet.stop()``), then the simulator; safe to call again."""
        cab, self._cab = self._cab, None
        if cab is not None:
            await cab.stop()
        if self._sim_running:
            self._sim_running = False
            await self.sim.__aexit__(None, None, None)

    async def restart(self) -> None:
        """A power cut: the cabinet process and its hardware stop, and start again on the same data dir.

        The simulator restarts too, with the rig's first packs: a cabinet restarted against a
        simulator that kept running can freeze in a blocking pty write.
        """
        await self.stop()
        self.sim = await start_sim(self.speed, self.batteries)
        self._sim_running = True
        await self.start_cabinet()

    async def until(self, pred: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
        """Poll an (a)sync predicate until it is truthy."""
        return await until(pred, timeout, what)

    async def events(self, type_: str | None = None) -> list[Event]:
        """Every event of the ledger (of one type if given)."""
        evs = await self.ledger.events_after(0, limit=1_000_000, max_bytes=1 << 40)
        return [e for e in evs if type_ is None or e.type == type_]

    async def event_keys(self) -> list[tuple[int, str, str]]:
        """(seq, id, type) of every event of the ledger, in order."""
        return [(e.seq, e.id, e.type) for e in await self.events()]

    async def last_seq(self) -> int:
        seq: int = await self.ledger.run(lambda led: led.last_seq)
        return seq

    async def settle(self, timeout: float = 10.0) -> None:
        """Wait until the cabinet has recorded every battery the simulator holds."""

        async def known() -> bool:
            slots = {s.slot: s.sn for s in await self.ledger.slots()}
            want = {s.number: s.battery.sn for s in self.simcab.slots if s.battery is not None}
            return all(slots.get(n) == sn for n, sn in want.items())

        await self.until(known, timeout, what="the cabinet to know every battery")


class MakeRig(Protocol):
    """What the ``make_rig`` fixture returns."""

    async def __call__(
        self,
        broker: Any = None,
        speed: float = 1.0,
        batteries: Sequence[Battery] | None = None,
        data_dir: Path | None = None,
        settle_timeout: float = 10.0,
        on_start: Callable[[Cabinet], None] | None = None,
        **over: dict[str, Any],
    ) -> Rig: ...


@pytest.fixture
def cloud_keys() -> CloudKeys:
    return CloudKeys()


@pytest.fixture
async def make_rig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cloud_keys: CloudKeys
) -> AsyncIterator[MakeRig]:
    """``await make_rig(...)``: start a simulator and a cabinet that trusts ``cloud_keys``, and wait
    until the cabinet knows every pack; every rig made is stopped after the test.

    - ``broker``: sync to it (plain MQTT); otherwise sync is off;
    - ``speed``: the simulator's physics speed; ``batteries``: (slot, sn, soc) instead of the
      standard packs (slots 1, 2, 3 at 50 %, 5);
    - ``data_dir``: the cabinet's data directory (default: the test's ``tmp_path``);
    - ``settle_timeout``: how long to wait for the first scan to be recorded;
    - ``on_start``: called with each cabinet started (the first and every restart's);
    - anything else: config overrides by section, e.g. ``rent={"eject_timeout_s": 1.0}``.
    """
    stack = contextlib.AsyncExitStack()

    async def make(
        broker: Any = None,
        speed: float = 1.0,
        batteries: Sequence[Battery] | None = None,
        data_dir: Path | None = None,
        settle_timeout: float = 10.0,
        on_start: Callable[[Cabinet], None] | None = None,
        **over: dict[str, Any],
    ) -> Rig:
        packs = DEFAULT_BATTERIES if batteries is None else tuple(batteries)
        sync: dict[str, Any] = {"enabled": False, "cloud_keys": [cloud_keys.config_entry]}
        if broker is not None:
            sync.update(enabled=True, broker_host=broker.host, broker_port=broker.port, tls=False)
        over["sync"] = {**sync, **over.get("sync", {})}
        sim = await start_sim(speed, packs)
        rig = Rig(sim, data_dir or tmp_path, over, speed=speed, batteries=packs, on_start=on_start)
        stack.push_async_callback(rig.stop)  # after the test, even if its cabinet fails to start
        await rig.start_cabinet()
        await rig.settle(settle_timeout)
        return rig

    try:
        yield make
    finally:
        await stack.aclose()  # the last rig first; every one even if another fails to stop


@pytest.fixture
async def rig(make_rig: MakeRig) -> Rig:
    """8 slots on 2 boards, packs in slots 1, 2, 3 (50 %) and 5, and a running cabinet without sync."""
    return await make_rig()
