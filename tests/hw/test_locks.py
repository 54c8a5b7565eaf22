"""LockBank on gpiozero pins wired to the simulated lock mechanics (in-process and over the GPIO link)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest
from hw_fixtures import eventually, make_cabinet

from drivers.locks import LockBank, OpenOutcome
from hardware_sim.faults import parse_fault
from hardware_sim.gpio_link import GpioLinkServer
from hardware_sim.pins import SimLinkFactory, SimMockFactory, lock_pin, seat_pin, wire_to_cabinet


@pytest.fixture
def wired():
    cab = make_cabinet(slots=16, per_board=4, fill=0.5)
    factory = SimMockFactory()
    unwire = wire_to_cabinet(factory, cab)
    n = len(cab.slots)
    bank = LockBank(
        [lock_pin(k) for k in range(1, n + 1)],
        [seat_pin(k) for k in range(1, n + 1)],
        pin_factory=factory,
        pulse_s=0.05,
    )
    yield cab, bank
    bank.close()
    unwire()
    factory.reset()


def seated_slot(cab) -> int:
    return next(s.number for s in cab.slots if s.seated)


async def test_lock_pulse_opens_and_pack_pops_out(wired) -> None:
    cab, bank = wired
    bank.start()
    events: list[tuple[int, bool]] = []
    bank.add_listener(lambda slot, seated: events.append((slot, seated)))
    k = seated_slot(cab)
    assert bank.is_seated(k)
    result = await bank.open(k, timeout=1.0)
    assert result.outcome is OpenOutcome.OPENED and result.opened
    assert result.seconds < 0.5  # seen at once, long before the timeout
    assert cab.slot(k).presented and not bank.is_seated(k)
    assert not bank.is_energised(k) and not cab.slot(k).lock_energised  # pulse ended
    assert (k, False) in events
    sn = cab.take(k)
    assert sn in cab.out


async def test_jammed_lock_is_detected(wired) -> None:
    cab, bank = wired
    bank.start()
    k = seated_slot(cab)
    cab.inject(parse_fault({"kind": "lock_jam", "slot": k}))
    result = await bank.open(k, timeout=0.2)
    assert result.outcome is OpenOutcome.JAMMED
    assert cab.slot(k).seated and bank.is_seated(k)


async def test_opening_an_empty_slot_reports_empty(wired) -> None:
    cab, bank = wired
    bank.start()
    k = next(s.number for s in cab.slots if s.battery is None)
    result = await bank.open(k, timeout=0.2)
    assert result.outcome is OpenOutcome.EMPTY


async def test_presented_pack_not_taken_is_reseated_and_reported(wired) -> None:
    cab, bank = wired
    bank.start()
    seen: list[tuple[int, bool]] = []
    bank.add_listener(lambda slot, seated: seen.append((slot, seated)))
    k = seated_slot(cab)
    assert (await bank.open(k)).opened

    def reseated() -> bool:
        cab.step(0.1)  # the sim clock re-seats a presented pack after reseat_after_s real seconds
        return (k, True) in seen

    await eventually(reseated, within=3)
    assert bank.is_seated(k) and cab.slot(k).seated


async def test_inserting_a_pack_fires_a_seat_event(wired) -> None:
    cab, bank = wired
    bank.start()
    got: asyncio.Queue[tuple[int, bool]] = asyncio.Queue()
    bank.add_listener(lambda slot, seated: got.put_nowait((slot, seated)))
    k = next(s.number for s in cab.slots if s.battery is None)
    cab.insert(k, "PBRETURN")
    assert await asyncio.wait_for(got.get(), 1) == (k, True)
    assert bank.is_seated(k)


async def test_stuck_seat_sensor_makes_an_open_look_jammed(wired) -> None:
    cab, bank = wired
    bank.start()
    k = seated_slot(cab)
    cab.inject(parse_fault({"kind": "stuck_seat", "slot": k, "seated": True}))
    result = await bank.open(k, timeout=0.2)
    assert result.outcome is OpenOutcome.JAMMED
    assert cab.slot(k).presented  # the pack did come out; only the sensor lies


def test_expander_pins_cover_48_slots_and_j8_still_works() -> None:
    f = SimMockFactory()
    try:
        assert f.pin("LOCK48").info.name == "LOCK48"
        assert f.pin("EXP:96").info.name == "SEAT48"
        assert f.pin("GPIO17").info.name == "GPIO17"
        with pytest.raises(Exception, match="LOCK49"):
            f.pin("LOCK49")
    finally:
        f.close()


async def test_link_factory_drives_a_simulator_across_the_socket() -> None:
    cab = make_cabinet(slots=8, per_board=4, fill=1.0)
    link = GpioLinkServer(cab)
    await link.start()
    factory = await asyncio.to_thread(SimLinkFactory, link.address)
    bank = LockBank(
        [lock_pin(k) for k in range(1, 9)],
        [seat_pin(k) for k in range(1, 9)],
        pin_factory=factory,
        pulse_s=0.05,
    )
    try:
        bank.start()
        assert all(bank.is_seated(k) for k in range(1, 9))
        result = await bank.open(4, timeout=2)
        assert result.opened and cab.slot(4).presented
        cab.take(4)
        cab.insert(4, "PBBACK01")
        await eventually(lambda: bank.is_seated(4), within=2)
    finally:
        bank.close()
        factory.close()
        await link.close()


async def test_gpiozero_loads_cabinetsim_factory_by_name_in_another_process() -> None:
    cab = make_cabinet(slots=8, per_board=4, fill=1.0)
    link = GpioLinkServer(cab)
    await link.start()
    code = textwrap.dedent(
        """
        import time
        from gpiozero import Device, OutputDevice, DigitalInputDevice
        seat = DigitalInputDevice("SEAT2", pull_up=None, active_state=True)
        lock = OutputDevice("LOCK2")
        print(type(Device.pin_factory).__name__, seat.is_active, flush=True)
        lock.on(); time.sleep(0.1); lock.off()
        deadline = time.monotonic() + 3
        while seat.is_active and time.monotonic() < deadline:
            time.sleep(0.01)
        print(seat.is_active, flush=True)
        """
    )
    env = {"GPIOZERO_PIN_FACTORY": "cabinetsim", "CABINET_SIM_GPIO": link.address, "PATH": "/usr/bin:/bin"}
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        await link.close()
    assert proc.returncode == 0, err.decode()
    assert out.decode().split() == ["SimLinkFactory", "True", "False"]
    assert cab.slot(2).presented
