"""Crash safety: the cabinet process SIGKILLed during rent and return, restarted, checked.

The simulator runs as its own process and keeps the physical truth; the cabinet is a real
``Cabinet`` in another process (tests/crash/workload.py). The first tests script one crash
each around an eject, to exercise ``Controller.recover()`` path by path; the last one kills
the cabinet at random points a hundred times while a renter takes and returns batteries.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cabinet.ledger import Ledger
from tests.conftest import until as poll_until
from tests.crash.checks import CABINET_ID, requested_rentals, verify_cli
from tests.crash.conftest import CrashRig
from tests.crash.harness import EJECT_TIMEOUT_S, run_crash

pytestmark = pytest.mark.timeout(300)


async def until(pred: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll an (a)sync predicate until it is truthy."""
    return await poll_until(pred, timeout, what)


async def presented_slot(rig: CrashRig) -> tuple[int, str] | None:
    st = await rig.renter.state()
    return next(((s["slot"], s["battery"]["sn"]) for s in st["slots"] if s["presented"]), None)


async def spawn_and_wait(rig: CrashRig, mode: str, kind: str) -> tuple[int, list[str]]:
    """Fork a cabinet (``run`` or ``idle``) and wait for its first ``kind`` line."""
    q: asyncio.Queue[list[str]] = asyncio.Queue()
    rig.launcher.listeners.append(q)
    try:
        pid = await rig.launcher.spawn(mode, 1)
        while True:
            words = await asyncio.wait_for(q.get(), 20)
            if words[0] == kind and words[1] == str(pid):
                return pid, words
    finally:
        rig.launcher.listeners.remove(q)


async def kill_during_eject(rig: CrashRig) -> tuple[str, int, str]:
    """Start a renting cabinet, SIGKILL it while a pack is presented; (rental id, slot, sn)."""
    pid, _ = await spawn_and_wait(rig, "run", "ready")
    slot, sn = await until(lambda: presented_slot(rig), what="a pack to be presented")
    os.kill(pid, signal.SIGKILL)
    assert (await rig.launcher.expect("exit"))[2] == "-9"
    (rental_id,) = requested_rentals(rig.ledger_path)  # the rent the crash left open
    return rental_id, slot, sn


async def stop(rig: CrashRig, pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    assert (await rig.launcher.expect("exit"))[1:] == [str(pid), "0"]
    rc, out = await verify_cli(rig.ledger_path)
    assert rc == 0, out


def ledger_facts(path: Path) -> tuple[dict[str, Any], list[Any]]:
    with Ledger.open(path, CABINET_ID, create=False) as lg:
        events = lg.events_after(0, limit=100000, max_bytes=1 << 30)
        rentals = {
            e.body["rental_id"]: lg.rental(e.body["rental_id"])
            for e in events
            if e.type == "rental_requested"
        }
    return rentals, events


async def test_battery_taken_while_the_cabinet_is_down_is_rented_at_restart(make_crash_rig) -> None:
    rig = await make_crash_rig(reseat_s=5.0)
    rental_id, slot, sn = await kill_during_eject(rig)
    assert (await rig.post("/take", slot=slot))[0] == 200
    pid, _ = await spawn_and_wait(rig, "idle", "ready")
    await stop(rig, pid)
    rentals, events = ledger_facts(rig.ledger_path)
    r = rentals[rental_id]
    assert (r.state, r.slot, r.sn) == ("open", slot, sn)
    assert not [e for e in events if e.type == "battery_removed_unexpected"]


async def test_battery_still_presented_at_restart_is_rented_when_taken_after(make_crash_rig) -> None:
    rig = await make_crash_rig(reseat_s=5.0)
    rental_id, slot, sn = await kill_during_eject(rig)
    pid, _ = await spawn_and_wait(rig, "idle", "ready")
    assert requested_rentals(rig.ledger_path) == [rental_id]  # recovery waits: the pack is still out
    assert (await rig.post("/take", slot=slot))[0] == 200
    await until(lambda: not requested_rentals(rig.ledger_path), what="the rental to be settled")
    await stop(rig, pid)
    rentals, events = ledger_facts(rig.ledger_path)
    assert (rentals[rental_id].state, rentals[rental_id].slot, rentals[rental_id].sn) == ("open", slot, sn)
    assert not [e for e in events if e.type == "battery_removed_unexpected"]


async def test_battery_presented_at_restart_and_never_taken_aborts_as_interrupted(make_crash_rig) -> None:
    rig = await make_crash_rig(reseat_s=5.0)
    rental_id, slot, sn = await kill_during_eject(rig)
    t0 = time.monotonic()
    pid, _ = await spawn_and_wait(rig, "idle", "ready")
    await until(lambda: not requested_rentals(rig.ledger_path), timeout=EJECT_TIMEOUT_S + 5, what="the abort")
    assert time.monotonic() - t0 >= EJECT_TIMEOUT_S * 0.9  # it waited for the renter first
    await stop(rig, pid)
    rentals, _ = ledger_facts(rig.ledger_path)
    assert (rentals[rental_id].state, rentals[rental_id].end_reason) == ("aborted", "interrupted")
    with Ledger.open(rig.ledger_path, CABINET_ID, create=False) as lg:
        assert (lg.battery(sn).place, lg.battery(sn).slot) == ("slot", slot)


async def test_pack_pushed_back_while_the_cabinet_is_down_aborts_as_interrupted(make_crash_rig) -> None:
    rig = await make_crash_rig(reseat_s=0.3)
    rental_id, slot, sn = await kill_during_eject(rig)
    await until(lambda: _not(presented_slot(rig)), what="the pack to be pushed back")
    pid, _ = await spawn_and_wait(rig, "idle", "ready")
    await until(lambda: not requested_rentals(rig.ledger_path), what="the abort")
    await stop(rig, pid)
    rentals, _ = ledger_facts(rig.ledger_path)
    assert (rentals[rental_id].state, rentals[rental_id].end_reason) == ("aborted", "interrupted")
    with Ledger.open(rig.ledger_path, CABINET_ID, create=False) as lg:
        assert (lg.battery(sn).place, lg.battery(sn).slot) == ("slot", slot)


async def _not(aw: Any) -> bool:
    return not await aw


@pytest.mark.slow
async def test_sigkill_at_random_points_of_rent_and_return_loses_no_battery_and_no_rental(
    tmp_path: Path,
) -> None:
    kills = int(os.environ.get("CRASH_KILLS", "100"))
    seed = int(os.environ.get("CRASH_SEED", random.randrange(100_000)))
    res = await run_crash(tmp_path, kills=kills, seed=seed)
    s = res.stats
    print(f"seed {seed}: {s.summary()} {res.recovery}")
    assert res.verify_rc == 0, f"seed {seed}: cabinet ledger verify failed:\n{res.verify_out}"
    assert res.problems == [], f"seed {seed}: " + "\n".join(res.problems[:30])
    assert s.kills == kills
    # the run must have exercised what it claims to: rents, returns and recovery
    assert len(s.takes) >= kills // 4 and len(s.inserts) >= kills // 5, s.summary()
    assert set(s.kill_points) == {"start", "req", "take", "insert", "out"}, s.summary()
    assert res.recovery["starts_without_ack"] > 0, res.recovery  # rentals that only recovery or a crash saw
