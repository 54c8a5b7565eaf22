"""BatteryBus against the simulated slot boards, over a real pty (RTU) and over Modbus TCP."""

from __future__ import annotations

import asyncio
import time

import pytest
from hw_fixtures import ServedCabinet, make_cabinet, serve

from drivers import register_map as rm
from drivers.battery_bus import BatteryBus, BusError, SlotReading
from hardware_sim.faults import parse_fault


def bus_for(served: ServedCabinet, **kw: object) -> BatteryBus:
    kw.setdefault("timeout_s", 0.3)  # generous: a loaded CI box must not turn a reply into a timeout
    return BatteryBus(served.port, served.boards(), **kw)  # type: ignore[arg-type]


async def test_scan_reads_every_register_of_every_slot(served: ServedCabinet) -> None:
    cab = served.cabinet
    cab.step(120)  # some current, heat and latched state to read
    cab.slot(3).faults |= rm.SlotFault.CONTACT
    async with bus_for(served) as bus:
        readings = await bus.scan()
        health = {h.unit_id: h for h in bus.health()}
    assert [r.slot for r in readings] == list(range(1, 17))
    for r in readings:
        s = cab.slot(r.slot)
        assert r.known and r.board == s.board
        assert r.present == (s.battery is not None)
        assert r.seated == s.seated
        assert r.slot_faults == s.faults
        assert r.charge_enabled == s.charge_enabled
        if s.battery is None:
            assert r.sn == "" and r.soc is None and r.voltage_v is None
            continue
        b = s.battery
        assert r.sn == b.sn
        assert r.soc == round(b.gauge_soc * 100)
        assert r.voltage_v == pytest.approx(b.terminal_v, abs=0.001)
        assert r.current_a == pytest.approx(b.current_a, abs=0.001)
        assert r.temp_c == pytest.approx(b.temp_c, abs=0.05)
        assert r.cycles == int(b.cycles)
        assert r.pack_firmware == b.firmware
    assert any(r.present for r in readings) and any(not r.present for r in readings)
    assert health[1].firmware == 0x0103 and health[1].reported_slots == 4
    assert health[1].uptime_s == 120
    assert readings[2].slot_faults & rm.SlotFault.CONTACT


async def test_charge_enable_write_takes_effect_and_charges(served: ServedCabinet) -> None:
    cab = served.cabinet
    slot = next(s for s in cab.slots if s.battery is not None and s.board == 2)
    slot.battery.soc = 0.3
    async with bus_for(served) as bus:
        await bus.set_charge(slot.number, True)
        await bus.set_charge_current(slot.number, 1.5)
        assert slot.charge_enabled and slot.charge_limit_ma == 1500
        assert not any(s.charge_enabled for s in cab.slots if s is not slot)
        cab.step(30)
        r = (await bus.scan())[slot.number - 1]
        assert r.charging and r.charge_enabled
        assert r.current_a == pytest.approx(1.5, abs=0.01)
        await bus.set_charge_many({slot.number: False, 1: True})
        assert not slot.charge_enabled and cab.slot(1).charge_enabled
        with pytest.raises(BusError, match="slot 99"):
            await bus.set_charge(99, True)


async def test_fault_clear_unlatches_slot_faults(served: ServedCabinet) -> None:
    cab = served.cabinet
    cab.slot(5).faults |= rm.SlotFault.OVER_TEMP
    async with bus_for(served) as bus:
        await bus.clear_faults([2])
        assert cab.slot(5).faults == rm.SlotFault(0)


async def test_silent_board_is_isolated_while_others_keep_their_poll_rate(served: ServedCabinet) -> None:
    cab = served.cabinet
    cab.inject(parse_fault({"kind": "silent_board", "board": 3}))
    async with bus_for(served, fail_threshold=2, backoff_initial_s=30) as bus:
        first = await bus.scan()
        second = await bus.scan()
        isolated = {h.unit_id: h for h in bus.health()}[3]
        assert isolated.isolated and isolated.timeouts == 2
        # unknown, not empty: the cabinet must not think those batteries are gone
        assert all(not r.known and r.present is None for r in second if r.board == 3)
        assert all(r.known for r in first if r.board != 3)
        t0 = time.perf_counter()
        for _ in range(5):
            readings = await bus.scan()
        per_scan = (time.perf_counter() - t0) / 5
        assert per_scan < 0.2, f"an isolated board still costs {per_scan:.3f} s per scan (timeout 0.3 s)"
        assert all(r.known for r in readings if r.board != 3)
        stats = bus.stats()
        assert stats["boards_isolated"] == 1 and stats["timeouts"] == 2
        assert {h.unit_id: h for h in bus.health()}[3].requests == 2  # skipped while isolated


async def test_isolated_board_comes_back_after_backoff(served: ServedCabinet) -> None:
    cab = served.cabinet
    fid = cab.inject(parse_fault({"kind": "silent_board", "board": 1}))
    now = [0.0]
    async with bus_for(served, fail_threshold=1, backoff_initial_s=10, jitter=0, clock=lambda: now[0]) as bus:
        await bus.scan()
        await bus.scan()
        h = bus.health()[0]
        assert h.isolated and h.requests == 1 and h.retry_at == 10
        now[0] = 10.5
        await bus.scan()  # retried, still silent: backoff doubles
        h = bus.health()[0]
        assert h.requests == 2 and h.backoff_s == 20
        cab.clear(fid)
        now[0] = 40
        readings = await bus.scan()
        h = bus.health()[0]
        assert h.online and not h.isolated and h.consecutive_failures == 0
        assert all(r.known for r in readings)


async def test_garbled_replies_are_counted_and_survived(served: ServedCabinet) -> None:
    cab = served.cabinet
    fid = cab.inject(parse_fault({"kind": "garbled_replies", "board": 2}))
    async with bus_for(served, fail_threshold=10) as bus:
        for _ in range(3):
            readings = await bus.scan()
        h = {h.unit_id: h for h in bus.health()}
        assert h[2].crc_errors == 3 and h[2].timeouts == 0
        assert all(r.known for r in readings if r.board != 2)
        cab.clear(fid)
        readings = await bus.scan()
        assert all(r.known for r in readings)
        assert bus.stats()["crc_errors"] == 3


async def test_slow_replies_time_out_without_confusing_other_boards(served: ServedCabinet) -> None:
    cab = served.cabinet
    cab.inject(parse_fault({"kind": "slow_replies", "board": 1, "delay_s": 0.25}))

    def own_serials(r: SlotReading) -> bool:
        s = cab.slot(r.slot)
        return r.sn == (s.battery.sn if s.battery else "")

    async with bus_for(served, fail_threshold=100, timeout_s=0.15) as bus:
        # back to back: board 1's late replies arrive while other boards are being read
        for _ in range(4):
            readings = await bus.scan()
            assert all(r.known and own_serials(r) for r in readings if r.board != 1)
            # RTU has no transaction id: a late reply may land in board 1's next window and be
            # taken; it is board 1's own data (one scan old), never another board's.
            assert all(own_serials(r) for r in readings if r.board == 1 and r.known)
        before = bus.health()[0].timeouts
        # at a poll period longer than the delay, every request of board 1 times out
        for _ in range(3):
            await asyncio.sleep(0.5)  # the poll period (> delay, with margin), not a wait for an event
            readings = await bus.scan()
            assert not any(r.known for r in readings if r.board == 1)
        assert bus.health()[0].timeouts == before + 3
        assert bus.health()[0].crc_errors == 0


async def test_board_missing_from_the_bus_is_reported_unknown(tmp_path) -> None:
    cab = make_cabinet(slots=8, per_board=4)
    async with serve(cab, "rtu", tmp_path) as s:
        async with BatteryBus(s.port, [(1, 4), (2, 4), (9, 4)], timeout_s=0.3) as bus:
            readings = await bus.scan()
    assert [r.known for r in readings] == [True] * 8 + [False] * 4
    assert bus.health()[2].timeouts == 1


def test_bus_rejects_bad_board_layout() -> None:
    with pytest.raises(ValueError, match="repeated"):
        BatteryBus("/dev/null", [(1, 4), (1, 4)])
    with pytest.raises(ValueError, match=r"1\.\.8"):
        BatteryBus("/dev/null", [(1, 9)])
