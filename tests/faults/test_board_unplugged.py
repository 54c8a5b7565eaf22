"""A slot board unplugged for hours: its slots read unknown (never empty), the rest of the cabinet
keeps renting, the board is retried with a capped backoff, and it comes back by itself.

The simulator's ``silent_board`` fault drops every reply of board 2 (slots 5-8). Hours pass in
seconds: the bus's monotonic clock is sped up 3600 times, so the real backoff policy (2 s
doubling to 60 s) runs through about three bus hours while the test waits about three seconds.
"""

from __future__ import annotations

import asyncio
import time

from hardware_sim.faults import Fault

SPEED = 3600.0  # bus seconds per real second


async def test_unplugged_board_for_hours_reads_unknown_keeps_renting_and_comes_back(
    fault_rig, cloud_keys
) -> None:
    rig = await fault_rig()
    bus = rig.cab.bus
    t0 = time.monotonic()
    bus._clock = lambda: t0 + (time.monotonic() - t0) * SPEED  # hours of backoff in seconds
    before = {e.seq for e in await rig.events()}

    fault = rig.simcab.inject(Fault("silent_board", board=2))
    await rig.until(lambda: bus.health()[1].isolated, what="board 2 to be isolated")
    await rig.until(lambda: all(not rig.controller.observed[s].known for s in (5, 6, 7, 8)),
                    what="slots 5-8 to read unknown")  # fmt: skip
    assert rig.cab.status_summary()["counts"]["unknown_slots"] == 4

    # while it is gone: a pack pushed into slot 6 cannot be seen yet; slot 1's board still rents
    rig.simcab.insert(6, sn="PB000006", soc=0.9)
    task = asyncio.create_task(rig.cab.passes.submit(cloud_keys.offline_pass("P-1")))
    await rig.until(lambda: rig.simcab.slot(1).presented, what="slot 1 (board 1) to present")
    rig.simcab.take(1)
    assert (await asyncio.wait_for(task, 10)).status == "started"

    requests_then = bus.health()[1].requests
    await asyncio.sleep(3.0)  # ~3 bus hours unplugged
    h = bus.health()[1]
    retries = h.requests - requests_then
    assert 5 <= retries <= 3 * SPEED / bus.backoff_max_s * 1.2, f"{retries} retries in ~3 bus hours"
    assert h.backoff_s == bus.backoff_max_s and h.isolated and h.timeouts >= 3
    assert rig.cab._health_problem() is None  # the poller kept scanning; the watchdog stays fed

    rig.simcab.clear(fault)  # plugged back in
    await rig.until(lambda: not bus.health()[1].isolated, timeout=10, what="board 2 to come back by itself")
    await rig.until(lambda: rig.ledger.slot(6), what="the pack pushed into slot 6 meanwhile to be recorded")

    new = [e for e in await rig.events() if e.seq not in before]
    assert not [e for e in new if e.type == "battery_removed_unexpected"], "unknown was taken as empty"
    # recorded once, when the board is back (as stock or as a return, per the controller's rules)
    placed = [(e.body["slot"], e.body["sn"]) for e in new if e.type in ("battery_seen", "battery_returned")]
    assert placed == [(6, "PB000006")]
    assert (await rig.ledger.slot(5)).sn == "PB000005"  # never lost its battery
    assert rig.controller.observed[5].sn == "PB000005"
