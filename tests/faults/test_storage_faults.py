"""The cabinet's card fills up: renting is refused with a clear reason, nothing is half-written,
and it rents again by itself once space is back.

The cabinet's data directory (ledger, telemetry, backups) is a 4 MB tmpfs filled to the last
byte by a ballast file, as a runaway log would fill a real SD card.
"""

from __future__ import annotations

import asyncio

import pytest

from cabinet.controller import RentRequest
from cabinet.ledger import Ledger, LedgerUnwritable, verify
from cabinet.observations import Observation
from cabinet.telemetry import TelemetryStore


async def rent_by_pass(rig, keys, pass_id: str):
    return await rig.cab.passes.submit(keys.offline_pass(pass_id))


def nothing_presented(rig) -> bool:
    return not any(s.presented for s in rig.simcab.slots)


async def test_full_card_refuses_a_pass_rental_with_a_reason_then_rents_once_space_is_back(
    fault_rig, small_disk, cloud_keys
) -> None:
    rig = await fault_rig(small_disk.path)
    seq = await rig.ledger.run(lambda lg: lg.last_seq)
    ballast = small_disk.fill()

    out = await rent_by_pass(rig, cloud_keys, "P-full")
    assert (out.status, out.reason) == ("refused", "storage_unwritable")
    assert nothing_presented(rig)  # no lock was pulsed
    assert await rig.ledger.run(lambda lg: lg.last_seq) == seq  # and nothing was written

    ballast.unlink()
    task = asyncio.create_task(rent_by_pass(rig, cloud_keys, "P-back"))
    await rig.until(lambda: rig.simcab.slot(1).presented, what="slot 1 to present once space is back")
    rig.simcab.take(1)
    out = await asyncio.wait_for(task, 10)
    assert (out.status, out.slot) == ("started", 1)
    report = await asyncio.to_thread(verify, rig.data_dir / "ledger.db")
    assert report.ok, report.summary()


async def test_nearly_full_card_refuses_new_rentals_but_still_records_returns(
    fault_rig, small_disk, cloud_keys
) -> None:
    rig = await fault_rig(small_disk.path)
    ballast = small_disk.fill()
    small_disk.give_back(ballast, 512 * 1024)  # below the rental reserve, room for events
    assert 0 < small_disk.free_bytes() < Ledger.reserve_bytes

    out = await rent_by_pass(rig, cloud_keys, "P-low")
    assert (out.status, out.reason) == ("refused", "storage_unwritable")
    assert nothing_presented(rig)

    rig.simcab.insert(4, sn="PB000004", soc=0.9)  # a battery put into the cabinet meanwhile
    await rig.until(lambda: rig.ledger.slot(4), what="the new battery to be recorded")
    assert (await rig.ledger.slot(4)).sn == "PB000004"
    problem = await rig.ledger.run(lambda lg: lg.storage_problem())
    assert problem and "reserve" in problem


async def test_cloud_eject_on_a_full_card_is_not_acted_on_and_nothing_crashes(
    fault_rig, small_disk, cloud_keys
) -> None:
    from cabinet.commands import CommandHandler

    rig = await fault_rig(small_disk.path)
    handler = CommandHandler(rig.ledger, rig.controller, rig.cab.trust)
    ballast = small_disk.fill()
    assert await handler.handle(cloud_keys.command("eject", rental_id="R-full", user="u1")) is None
    assert nothing_presented(rig)
    assert await rig.ledger.command_seen("C1") is None

    # below the reserve but not empty: accepted and recorded, the rent refused with the reason
    small_disk.give_back(ballast, 512 * 1024)
    cmd = await handler.handle(cloud_keys.command("eject", rental_id="R-low", user="u1"))
    assert cmd is not None and nothing_presented(rig)
    results = [e for e in await rig.events("command_result") if e.body["cmd_id"] == cmd.cmd_id]
    assert [(e.body["ok"], e.body["detail"].split(" (")[0]) for e in results] == [
        (False, "refused: storage_unwritable")
    ]
    assert await rig.ledger.rental("R-low") is None  # no half-made rental


async def test_controller_refuses_to_rent_on_a_full_card_with_a_reason(fault_rig, small_disk) -> None:
    rig = await fault_rig(small_disk.path)
    small_disk.fill()
    out = await rig.controller.rent(RentRequest("R-1", "cloud", user="u1"))
    assert (out.status, out.reason) == ("refused", "storage_unwritable")


async def test_bus_poller_survives_a_full_card_and_records_the_return_once_space_is_back(
    fault_rig, small_disk
) -> None:
    rig = await fault_rig(small_disk.path)
    ballast = small_disk.fill()
    rig.simcab.insert(4, sn="PB000004", soc=0.9)
    scans = rig.cab.bus.stats()["scans"]
    await rig.until(lambda: rig.cab.bus.stats()["scans"] >= scans + 10, timeout=3, what="ten more scans")
    assert rig.cab._health_problem() is None, rig.cab._health_problem()
    ballast.unlink()
    await rig.until(lambda: rig.ledger.slot(4), what="the return to be recorded")


def test_ledger_on_a_full_card_refuses_writes_cleanly_and_resumes_when_space_is_back(small_disk) -> None:
    path = small_disk.path / "ledger.db"
    with Ledger.open(path, "CAB-T1") as lg:
        last = lg.last_seq
        ballast = small_disk.fill()
        with pytest.raises(LedgerUnwritable) as err:
            lg.record("battery_seen", slot=1, sn="PB000001")
        assert "write refused" in str(err.value) and lg.last_seq == last
        ballast.unlink()
        ev = lg.record("battery_seen", slot=1, sn="PB000001")
        assert ev.seq == last + 1  # gapless: the refused write used no seq
    report = verify(path)
    assert report.ok, report.summary()


def test_ledger_opened_on_a_full_card_is_unwritable_not_corrupt(small_disk) -> None:
    path = small_disk.path / "ledger.db"
    Ledger.open(path, "CAB-T1").close()
    ballast = small_disk.fill()
    with pytest.raises(LedgerUnwritable):  # a restart on a full card: "cannot write", never "corrupt"
        Ledger.open(path, "CAB-T1")
    assert not list(small_disk.path.glob("*.corrupt-*"))
    ballast.unlink()
    with Ledger.open(path, "CAB-T1") as lg:
        assert lg.last_seq == 2  # both starts' ledger_opened; nothing lost, nothing half-written
    assert verify(path).ok


def test_telemetry_on_a_full_card_drops_samples_instead_of_failing(small_disk) -> None:
    store = TelemetryStore(small_disk.path / "telemetry.db")
    ob = Observation(slot=1, known=True, present=True, seated=True, sn="PB000001", soc=90, voltage_v=4.1,
                     current_a=1.0, temp_c=25.0, cycles=3, faults=0, charging=True)  # fmt: skip
    assert store.add([ob], now=1000.0) == 1
    ballast = small_disk.fill()
    t = 2000.0
    while store.dropped == 0 and t < 200_000:  # SQLite may fit a few rows into pages it already has
        assert store.add([ob], now=t) in (0, 1)
        t += 60
    assert store.dropped > 0 and store.problem
    ballast.unlink()
    assert store.add([ob], now=t + 60) == 1 and store.problem is None
    store.close()
