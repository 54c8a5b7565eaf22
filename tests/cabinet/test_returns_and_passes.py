"""Foreign and unwell returns; offline passes at the kiosk, good and bad."""

from __future__ import annotations

import asyncio


async def test_foreign_battery_is_given_back_and_recorded(rig) -> None:
    rig.simcab.insert(4, sn="XX123")  # not of the fleet's PB###### format
    await rig.until(lambda: rig.simcab.slot(4).presented, what="slot 4 to give the pack back")
    rig.simcab.take(4)
    events = await rig.events("security_event")
    assert [(e.body["kind"], "XX123" in e.body["detail"]) for e in events] == [("foreign_battery", True)]
    assert await rig.ledger.battery("XX123") is None
    await asyncio.sleep(0.3)  # a few scans: nothing else may happen to the slot
    assert not (await rig.ledger.slot(4) or type("S", (), {"quarantined": False})).quarantined
    assert await rig.events("battery_removed_unexpected") == []


async def test_foreign_battery_left_in_place_quarantines_the_slot(make_rig) -> None:
    # the pack stays out: the give-back waits unreadable_wait_s past the eject timeout for a late take
    rig = await make_rig(rent={"eject_timeout_s": 1.0, "unreadable_wait_s": 0.5})
    rig.simcab.insert(6, sn="ZZ9")
    await rig.until(lambda: rig.ledger.slot(6), what="slot 6 to be recorded")
    await rig.until(lambda: _quarantined(rig, 6), what="slot 6 quarantined")
    assert 6 not in rig.cab.charging_now


async def _quarantined(rig, slot: int) -> bool:
    s = await rig.ledger.slot(slot)
    return bool(s and s.quarantined)


async def test_hot_return_is_kept_quarantined_and_never_charged(rig) -> None:
    rig.simcab.insert(7, sn="PB00AA07", soc=0.3)
    rig.simcab.find_battery("PB00AA07")[0].temp_c = 58.0
    await rig.until(lambda: rig.events("battery_quarantined"), what="the quarantine")
    q = (await rig.events("battery_quarantined"))[0]
    assert q.body["sn"] == "PB00AA07" and "hot" in q.body["reason"]
    assert (await rig.ledger.slot(7)).quarantined
    await rig.until(lambda: rig.cab.last_scan_at, what="a scan")
    assert 7 not in rig.cab.charging_now
    assert not rig.simcab.slot(7).charge_enabled


async def test_good_offline_pass_rents_a_battery(rig, cloud_keys) -> None:
    text = cloud_keys.offline_pass("PASS-1")
    task = asyncio.create_task(rig.cab.passes.submit(text))
    await rig.until(lambda: rig.simcab.slot(1).presented, what="slot 1 to present")
    rig.simcab.take(1)
    out = await asyncio.wait_for(task, 5)
    assert out.status == "started"
    started = (await rig.events("rental_started"))[0]
    assert (started.body["source"], started.body["pass_id"], started.body["user"]) == (
        "pass",
        "PASS-1",
        "u-pass",
    )
    assert [e.body["pass_id"] for e in await rig.events("pass_used")] == ["PASS-1"]


async def test_reused_pass_is_refused_while_its_battery_is_out(rig, cloud_keys) -> None:
    text = cloud_keys.offline_pass("PASS-2")
    task = asyncio.create_task(rig.cab.passes.submit(text))
    await rig.until(lambda: rig.simcab.slot(1).presented, what="slot 1 to present")
    rig.simcab.take(1)
    await task
    again = await rig.cab.passes.submit(text)
    assert (again.status, again.reason) == ("refused", "pass_in_use")
    assert [e.body["kind"] for e in await rig.events("security_event")] == ["pass_reused"]
    assert not any(s.presented for s in rig.simcab.slots)


async def test_forged_expired_and_revoked_passes_are_refused_and_recorded(rig, cloud_keys) -> None:
    from tests.rigs import CloudKeys

    forged = CloudKeys()  # same key id, another key: the signature does not verify
    forged_text = forged.offline_pass("PASS-F")
    expired_text = cloud_keys.offline_pass("PASS-E", ttl=3600, age=7200)  # expired an hour ago, skew 600 s
    revoked_text = cloud_keys.offline_pass("PASS-R")
    rig.cab.passes.revoked = lambda: {"PASS-R"}
    results = [await rig.cab.passes.submit(t) for t in (forged_text, expired_text, revoked_text, "garbage")]
    assert [(r.status, r.reason) for r in results] == [
        ("refused", "pass_forged"),
        ("refused", "pass_expired"),
        ("refused", "pass_revoked"),
        ("refused", "pass_unreadable"),
    ]
    kinds = [e.body["kind"] for e in await rig.events("security_event")]
    assert kinds == ["pass_forged", "pass_expired", "pass_revoked", "pass_malformed"]
    assert await rig.events("rental_requested") == []
