"""Damaged Modbus replies: the battery bus never crashes and never reports a wrong battery as known.

Three levels: any register contents a board could send (decoded without a wire); the simulator's
own ``garbled_replies`` fault on a real RTU pty; and a proxy on a real RTU-over-TCP link that
flips, drops, inserts and cuts bytes of the boards' replies at random. The property each time:
a slot reads either *unknown* or exactly what the simulated slot holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.framer import FramerType

from drivers import register_map as rm
from drivers.battery_bus import BatteryBus
from hardware_sim.cabinet import SimCabinet, SimConfig
from hardware_sim.faults import Fault
from hardware_sim.modbus import SimTcpServer
from hardware_sim.server import SimServer

SEEDS = [int(s) for s in os.environ.get("FUZZ_BUS_SEEDS", "1,2,3").split(",")]
PACKS = {1: "PB000001", 2: "PB000002", 5: "PB000005", 6: "PB000006", 7: "PB000007"}


_BUSES: dict[int, BatteryBus] = {}


def idle_bus(slots: int) -> BatteryBus:
    """A bus that is never connected (decoding only); pymodbus wants a loop to construct one."""

    async def make() -> BatteryBus:
        return BatteryBus("socket://127.0.0.1:9", [(1, slots)])

    if slots not in _BUSES:
        _BUSES[slots] = asyncio.run(make())
    return _BUSES[slots]


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 8), st.data())
def test_any_register_contents_decode_to_readings_without_error(slots: int, data) -> None:
    bus = idle_bus(slots)
    h = bus.health()[0]
    regs = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=rm.board_read_count(slots),
                              max_size=rm.board_read_count(slots)))  # fmt: skip
    readings = bus._decode(h, regs)
    assert [r.slot for r in readings] == list(range(1, slots + 1))
    for r in readings:
        assert r.known and isinstance(r.sn, str)
        assert r.sn == "" or r.pack_comm_ok
        assert 0 <= (r.soc or 0) <= 0xFFFF


def truth(cab: SimCabinet, slot: int) -> str:
    """What a correct reading of ``slot`` says its serial is ("" for no pack)."""
    b = cab.slot(slot).battery
    return b.sn if b is not None else ""


def fill(cab: SimCabinet) -> None:
    for slot, sn in PACKS.items():
        cab.insert(slot, sn=sn, soc=0.9)


async def scan_and_check(bus: BatteryBus, cab: SimCabinet, scans: int) -> tuple[int, int]:
    """Scan ``scans`` times; every known slot must match the simulator. Returns (known, unknown)."""
    known = unknown = 0
    for _ in range(scans):
        for r in await bus.scan():
            if not r.known:
                unknown += 1
                assert r.sn is None and r.present is None, r
                continue
            known += 1
            assert r.sn == truth(cab, r.slot), f"slot {r.slot}: read {r.sn!r}, holds {truth(cab, r.slot)!r}"
            assert r.present == (cab.slot(r.slot).battery is not None)
    return known, unknown


async def test_simulator_garbled_replies_make_slots_unknown_never_wrong() -> None:
    async with SimServer(SimConfig(slots=8, slots_per_board=4, seed=1, fill=0.0), pty=True,
                         gpio_port=None, control_port=None) as sim:  # fmt: skip
        fill(sim.cabinet)
        sim.cabinet.inject(Fault("garbled_replies", board=2, params={"probability": 0.5}))
        bus = BatteryBus(sim.pty_path, [(1, 4), (2, 4)], timeout_s=0.1, backoff_initial_s=0.05,
                         backoff_max_s=0.1)  # fmt: skip
        async with bus:
            known, unknown = await scan_and_check(bus, sim.cabinet, 40)
        stats = {h.unit_id: h for h in bus.health()}
    assert stats[1].crc_errors == stats[1].timeouts == 0 and stats[1].ok >= 40
    assert stats[2].crc_errors > 0 and stats[2].ok > 0  # both kinds of reply really happened
    assert known >= 40 * 4 and unknown > 0


class ManglingProxy:
    """TCP proxy in front of the simulated boards that damages bytes on the way back to the cabinet."""

    def __init__(self, target_port: int, seed: int, rate: float) -> None:
        self.target_port = target_port
        self.rng = random.Random(seed)
        self.rate = rate
        self.mangled = 0
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.server:
            self.server.close()
            await self.server.wait_closed()

    def mangle(self, chunk: bytes) -> bytes:
        if self.rng.random() >= self.rate:
            return chunk
        self.mangled += 1
        b = bytearray(chunk)
        i = self.rng.randrange(len(b))
        match self.rng.choice(["flip", "drop", "insert", "cut", "double", "noise"]):
            case "flip":
                b[i] ^= 1 << self.rng.randrange(8)
            case "drop":
                del b[i]
            case "insert":
                b[i:i] = self.rng.randbytes(self.rng.randint(1, 4))
            case "cut":
                del b[i:]
            case "double":
                b += chunk
            case "noise":
                b = bytearray(self.rng.randbytes(len(b)))
        return bytes(b)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, damage: bool) -> None:
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                while chunk := await src.read(4096):
                    dst.write(self.mangle(chunk) if damage else chunk)
                    await dst.drain()
            dst.close()

        for t in (pump(reader, up_writer, False), pump(up_reader, writer, True)):
            task = asyncio.create_task(t)
            self.tasks.add(task)


@pytest.mark.parametrize("seed", SEEDS)
async def test_randomly_damaged_rtu_replies_make_slots_unknown_never_wrong(seed: int) -> None:
    cab = SimCabinet(SimConfig(slots=8, slots_per_board=4, seed=seed, fill=0.0))
    fill(cab)
    server = SimTcpServer(cab, "127.0.0.1", 0, framer=FramerType.RTU)  # RTU frames over TCP
    await server.serve_forever(background=True)
    proxy = ManglingProxy(server.bound_port, seed, rate=0.3)
    try:
        port = await proxy.start()
        bus = BatteryBus(f"socket://127.0.0.1:{port}", [(1, 4), (2, 4)], timeout_s=0.05,
                         backoff_initial_s=0.05, backoff_max_s=0.1)  # fmt: skip
        async with bus:
            known, unknown = await scan_and_check(bus, cab, 40)
    finally:
        await proxy.close()
        await server.shutdown()
    assert proxy.mangled > 0 and known > 0 and unknown > 0
