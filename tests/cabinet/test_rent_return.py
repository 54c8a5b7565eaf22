"""Rent and return through the simulator: real RTU over a pty, locks over the GPIO link."""

from __future__ import annotations

import asyncio

from cabinet.controller import RentRequest


async def test_first_scan_records_every_battery_in_its_slot(rig) -> None:
    seen = {(e.body["slot"], e.body["sn"]) for e in await rig.events("battery_seen")}
    assert seen == {(1, "PB000001"), (2, "PB000002"), (3, "PB000003"), (5, "PB000005")}


async def test_rent_ejects_the_fullest_battery_and_records_the_start(rig) -> None:
    task = asyncio.create_task(rig.controller.rent(RentRequest("R-1", "cloud", user="u1")))
    await rig.until(lambda: rig.simcab.slot(1).presented, what="slot 1 to present its pack")
    assert rig.simcab.take(1) == "PB000001"
    out = await asyncio.wait_for(task, 5)
    assert (out.status, out.slot, out.sn) == ("started", 1, "PB000001")
    started = await rig.events("rental_started")
    assert [(e.body["rental_id"], e.body["slot"], e.body["sn"]) for e in started] == [("R-1", 1, "PB000001")]
    battery = await rig.ledger.battery("PB000001")
    assert (battery.place, battery.rental_id) == ("rental", "R-1")


async def test_same_rent_request_twice_ejects_one_battery(rig) -> None:
    task = asyncio.create_task(rig.controller.rent(RentRequest("R-2", "cloud", user="u1")))
    await rig.until(lambda: rig.simcab.slot(1).presented, what="slot 1 to present")
    rig.simcab.take(1)
    await task
    again = await rig.controller.rent(RentRequest("R-2", "cloud", user="u1"))
    assert again.status == "duplicate"
    assert not any(s.presented for s in rig.simcab.slots)
    assert len(await rig.events("rental_started")) == 1


async def test_battery_not_taken_aborts_the_rental_and_stays_in_the_cabinet(rig) -> None:
    out = await rig.controller.rent(RentRequest("R-3", "cloud", user="u1"))
    assert (out.status, out.reason, out.slot) == ("aborted", "not_taken", 1)
    aborted = await rig.events("rental_aborted")
    assert [(e.body["rental_id"], e.body["reason"]) for e in aborted] == [("R-3", "not_taken")]
    assert (await rig.ledger.battery("PB000001")).place == "slot"


async def test_jammed_lock_marks_the_slot_faulty_and_tries_another_slot(rig) -> None:
    rig.simcab.slot(1).jammed = True
    task = asyncio.create_task(rig.controller.rent(RentRequest("R-4", "cloud", user="u1")))
    await rig.until(lambda: rig.simcab.slot(2).presented, what="slot 2 to present")
    rig.simcab.take(2)
    out = await asyncio.wait_for(task, 5)
    assert (out.status, out.slot) == ("started", 2)
    faults = await rig.events("slot_fault")
    assert [(e.body["slot"], e.body["kind"]) for e in faults] == [(1, "lock_jam")]
    assert (await rig.ledger.slot(1)).fault_kind == "lock_jam"


async def test_no_rentable_battery_is_a_clear_refusal(rig) -> None:
    # only slot 3 (50 %) would be left: raise the bar above every pack
    rig.controller.settings = type(rig.controller.settings)(min_soc=99, eject_timeout_s=1, jam_timeout_s=0.5)
    out = await rig.controller.rent(RentRequest("R-5", "cloud", user="u1"))
    assert (out.status, out.reason) == ("aborted", "no_rentable_battery")
    assert not any(s.presented for s in rig.simcab.slots)


async def test_return_into_an_empty_slot_ends_the_rental(rig) -> None:
    task = asyncio.create_task(rig.controller.rent(RentRequest("R-6", "cloud", user="u1")))
    await rig.until(lambda: rig.simcab.slot(1).presented, what="slot 1 to present")
    rig.simcab.take(1)
    await task
    rig.simcab.insert(4, sn="PB000001")
    await rig.until(lambda: rig.events("battery_returned"), what="the return")
    ret = (await rig.events("battery_returned"))[0]
    assert (ret.body["slot"], ret.body["sn"], ret.body["rental_id"]) == (4, "PB000001", "R-6")
    assert (await rig.ledger.rental("R-6")).state in ("returned", "closed")
    assert (await rig.ledger.battery("PB000001")).slot == 4


async def test_battery_pulled_without_an_eject_is_recorded_as_removed(rig) -> None:
    rig.simcab.set_lock(5, True)  # a broken latch: the pack pops without a command
    rig.simcab.set_lock(5, False)
    rig.simcab.take(5)
    await rig.until(lambda: rig.events("battery_removed_unexpected"), what="the removal")
    ev = (await rig.events("battery_removed_unexpected"))[0]
    assert (ev.body["slot"], ev.body["sn"]) == (5, "PB000005")
