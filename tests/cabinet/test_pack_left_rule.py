"""The one "pack left" rule (issue 12.1, the crash soak's last failures).

A pack has left its slot when the bus reads no pack there **and** the seat switch is open. The
eject, the recovery after a restart and the removal check all use that rule, and each waits
(bounded by ``rent.unreadable_wait_s``) while the two disagree or the pack is still out,
instead of deciding on one of them alone. These tests drive the controller directly with a
real in-memory ledger and hand-made readings, so the disagreement is exact, not a race.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from cabinet.controller import Controller, RentRequest, RentSettings
from cabinet.ledger import Ledger
from cabinet.ledger.aio import AsyncLedger
from cabinet.observations import Observation
from sync.events import EventType

SN = "PB000001"
SEATED = Observation(slot=1, known=True, present=True, seated=True, sn=SN, soc=95)
OUT = Observation(slot=1, known=True, present=True, seated=False, sn=SN, soc=95)
EMPTY = Observation(slot=1, known=True, present=False)


class Switches:
    """Seat switches set by the test; ``open()`` pops the pack (as a lock pulse would)."""

    def __init__(self) -> None:
        self.seated = {1: True}
        self.pulses = 0

    async def open(self, slot: int, timeout: float) -> SimpleNamespace:
        self.pulses += 1
        self.seated[slot] = False
        return SimpleNamespace(opened=True)

    def is_seated(self, slot: int) -> bool:
        return self.seated.get(slot, False)


@pytest.fixture
async def cabinet():
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")
    ledger = AsyncLedger(executor.submit(Ledger.in_memory, "CAB-RULE").result(), executor)
    await ledger.record(EventType.BATTERY_SEEN, slot=1, sn=SN, soc=95, cycles=3)
    switches = Switches()
    controller = Controller(
        ledger, switches, RentSettings(min_soc=80, eject_timeout_s=0.3, unreadable_wait_s=3.0)
    )
    for _ in range(4):  # past the inventory scans
        await controller.on_scan([SEATED])
    yield SimpleNamespace(ledger=ledger, switches=switches, controller=controller)
    await controller.stop()
    await ledger.close()


async def _types(ledger: AsyncLedger) -> list[str]:
    events = await ledger.events_after(0, limit=1000, max_bytes=1 << 20)
    return [e.type for e in events if e.body.get("sn") == SN and e.type != EventType.BATTERY_SEEN]


async def _scan_until(controller: Controller, task: asyncio.Future, ob: Observation, s: float) -> None:
    end = asyncio.get_running_loop().time() + s
    while not task.done() and asyncio.get_running_loop().time() < end:
        await controller.on_scan([ob])
        await asyncio.sleep(0.02)


async def test_a_pack_taken_after_the_eject_timeout_while_still_out_starts_the_rental(cabinet) -> None:
    """The crash soak's first mechanism: the renter's hand came after the timeout, the pack still
    out. Before, the rental was aborted at the timeout and the take became an unexpected removal."""
    c = cabinet.controller
    task = asyncio.create_task(c.rent(RentRequest("R-LATE", "cloud", user="u1")))
    await _scan_until(c, task, OUT, 0.6)  # the timeout (0.3 s) passes with the pack out
    assert not task.done(), "the rental was decided while the pack was still out"
    await _scan_until(c, task, EMPTY, 2.0)  # now the renter takes it
    out = await asyncio.wait_for(task, 1)
    assert (out.status, out.slot, out.sn) == ("started", 1, SN)
    assert EventType.BATTERY_REMOVED_UNEXPECTED not in await _types(cabinet.ledger)


async def test_a_pack_pushed_back_after_the_timeout_aborts_the_rental(cabinet) -> None:
    c = cabinet.controller
    task = asyncio.create_task(c.rent(RentRequest("R-BACK", "cloud", user="u1")))
    await _scan_until(c, task, OUT, 0.5)
    cabinet.switches.seated[1] = True  # not taken: pushed back into its seat
    await _scan_until(c, task, SEATED, 1.0)
    out = await asyncio.wait_for(task, 1)
    assert (out.status, out.reason) == ("aborted", "not_taken")
    assert (await cabinet.ledger.slot(1)).sn == SN


async def test_a_pack_left_out_longer_than_the_wait_aborts_within_the_bound(cabinet) -> None:
    c = cabinet.controller
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    task = asyncio.create_task(c.rent(RentRequest("R-LEFT", "cloud", user="u1")))
    await _scan_until(c, task, OUT, 10.0)
    out = await asyncio.wait_for(task, 1)
    assert (out.status, out.reason) == ("aborted", "not_taken")
    assert loop.time() - t0 < 0.3 + 3.0 + 0.5  # eject timeout + unreadable_wait_s, not longer


async def test_recovery_waits_for_the_bus_and_the_seat_switch_to_agree(cabinet) -> None:
    """The crash soak's second mechanism: at the restart the bus read the slot empty while the
    seat switch still read seated. Recovery aborted the rental and the next scan, on the bus
    alone, recorded an unexpected removal. Now both wait until the two agree."""
    c, ledger = cabinet.controller, cabinet.ledger
    await ledger.record(EventType.RENTAL_REQUESTED, rental_id="R-REC", source="cloud", user="u1")
    restarted = Controller(ledger, cabinet.switches, c.settings)
    await restarted.recover([EMPTY])  # bus: empty; seat switch: still seated
    assert (await ledger.rental("R-REC")).state == "requested"
    await restarted.on_scan([EMPTY])
    assert EventType.BATTERY_REMOVED_UNEXPECTED not in await _types(ledger)
    cabinet.switches.seated[1] = False  # the switch catches up
    for _ in range(50):
        await restarted.on_scan([EMPTY])
        if (await ledger.rental("R-REC")).state != "requested":
            break
        await asyncio.sleep(0.02)
    assert (await ledger.rental("R-REC")).state == "open"
    assert EventType.BATTERY_REMOVED_UNEXPECTED not in await _types(ledger)
    await restarted.stop()


async def test_the_removal_check_waits_for_the_seat_switch(cabinet) -> None:
    c, ledger = cabinet.controller, cabinet.ledger
    await c.on_scan([EMPTY])  # the bus lost the pack, the switch still reads it seated
    assert EventType.BATTERY_REMOVED_UNEXPECTED not in await _types(ledger)
    cabinet.switches.seated[1] = False
    await c.on_scan([EMPTY])
    assert await _types(ledger) == [EventType.BATTERY_REMOVED_UNEXPECTED]


async def test_a_pack_taken_and_another_pushed_in_between_two_scans_starts_the_rental(cabinet) -> None:
    """The crash soak's quick renter: the ejected pack is taken and another one pushed into the
    same slot before a scan saw it empty. Before, the slot read seated at the timeout, the rental
    was aborted and the next scan booked the ejected pack as an unexpected removal."""
    c = cabinet.controller
    other = Observation(slot=1, known=True, present=True, seated=True, sn="PB000009", soc=40)
    task = asyncio.create_task(c.rent(RentRequest("R-SWAP", "cloud", user="u1")))
    await _scan_until(c, task, OUT, 0.1)
    cabinet.switches.seated[1] = True  # the other pack is seated now
    await _scan_until(c, task, other, 2.0)
    out = await asyncio.wait_for(task, 1)
    assert (out.status, out.sn) == ("started", SN)
    for _ in range(3):
        await c.on_scan([other])
    assert EventType.BATTERY_REMOVED_UNEXPECTED not in await _types(cabinet.ledger)
    assert (await cabinet.ledger.slot(1)).sn == "PB000009"  # and the other pack is a return
