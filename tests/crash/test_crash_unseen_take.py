"""The chaos test's stuck rental (issue 12.1), scripted: a take the cabinet could not see.

Under load a slot board can miss its 0.2 s Modbus deadline; the bus then reads the board as
*unknown* and retries it only after a backoff. If that happens right after a restart that
interrupted an eject, the cabinet cannot check the ejected slot: recovery aborts the rental
(nothing is billed) and the ledger still places the pack in its old slot, although the
renter took it. When the renter brings the pack back into a slot on another board, the old
code recorded ``battery_returned`` for a battery the ledger placed in a slot, the ledger
refused that (LedgerRuleError), and the exception ended the bus poller for good: the cabinet
kept running but recorded no return and no take again, so every open rental stayed open
and the chaos run never drained.

Here the board is silenced with the simulator's own fault (the same "unknown" a timeout
gives), with the real simulator process and a real cabinet process, SIGKILLed mid-eject.
"""

from __future__ import annotations

import contextlib
import os
import signal

import pytest

from tests.conftest import until
from tests.crash.checks import _read_only, requested_rentals
from tests.crash.conftest import CrashRig
from tests.crash.test_crash_safety import kill_during_eject, ledger_facts, spawn_and_wait, stop

pytestmark = pytest.mark.timeout(120)


def _board(slot: int) -> int:
    return (slot - 1) // 4 + 1  # the crash rig: 4 slots per board


def _battery_at(rig: CrashRig, sn: str) -> tuple[str, int | None]:
    """Where the ledger places ``sn`` now (read-only: the cabinet holds the writer lock)."""
    rows = _read_only(rig.ledger_path, f"SELECT place, slot FROM batteries WHERE sn = '{sn}'")
    return (str(rows[0][0]), rows[0][1]) if rows else ("", None)


async def test_pack_taken_while_down_is_started_once_the_silent_board_answers(make_crash_rig) -> None:
    """The crash soak's 7 failures: killed mid-eject, the pack taken while the cabinet is down,
    and the ejected slot's board unreadable at the restart. Recovery now guards the unreadable
    slots, waits for their board and then records the rental as started (the bus and the seat
    switch agree the slot is empty). Before, it aborted the rental and the take became an
    unexpected removal: a pack out on no rental."""
    rig = await make_crash_rig(reseat_s=5.0)
    rental_id, slot, sn = await kill_during_eject(rig)
    assert (await rig.post("/take", slot=slot))[0] == 200  # the renter takes it while the cabinet is down
    status, fault = await rig.post("/inject", kind="silent_board", board=_board(slot))
    assert status == 200, fault
    pid, _ = await spawn_and_wait(rig, "idle", "ready")  # recovery: the ejected slot reads unknown
    try:
        assert requested_rentals(rig.ledger_path)  # not decided while the slot cannot be read
        assert (await rig.post("/clear", id=fault["id"]))[0] == 200
        await until(lambda: not requested_rentals(rig.ledger_path), what="recovery to settle the rental")
        rental = _read_only(
            rig.ledger_path, f"SELECT state, slot, sn FROM rentals WHERE rental_id = '{rental_id}'"
        )
        assert rental == [("open", slot, sn)]
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        raise
    await stop(rig, pid)  # ledger verify passes
    _, events = ledger_facts(rig.ledger_path)
    assert not [e for e in events if e.type == "battery_removed_unexpected"]


async def test_pack_taken_unseen_and_returned_elsewhere_keeps_the_cabinet_scanning(make_crash_rig) -> None:
    rig = await make_crash_rig(reseat_s=5.0)
    rental_id, slot, sn = await kill_during_eject(rig)
    assert (await rig.post("/take", slot=slot))[0] == 200  # the renter takes it while the cabinet is down
    status, fault = await rig.post("/inject", kind="silent_board", board=_board(slot))
    assert status == 200, fault
    state = await rig.renter.state()
    elsewhere = next(
        s["slot"] for s in state["slots"] if s["battery"] is None and _board(s["slot"]) != _board(slot)
    )
    pid, _ = await spawn_and_wait(rig, "idle", "ready")  # recovery: the ejected slot reads unknown
    try:
        # recovery waits rent.unreadable_wait_s (10 s) for the board, which stays silent here
        await until(
            lambda: not requested_rentals(rig.ledger_path), timeout=25, what="recovery to settle the rental"
        )
        rental = _read_only(
            rig.ledger_path, f"SELECT state, end_reason FROM rentals WHERE rental_id = '{rental_id}'"
        )
        # the slot could not be checked, so the take is not confirmed: never billed as taken
        assert rental == [("aborted", "interrupted")]

        # the pack comes back into a slot on the board that answers, while the other is still silent
        assert (await rig.post("/insert", slot=elsewhere, sn=sn))[0] == 200
        await until(
            lambda: _battery_at(rig, sn) == ("slot", elsewhere), what=f"{sn} recorded in slot {elsewhere}"
        )
        assert (await rig.post("/clear", id=fault["id"]))[0] == 200
        assert rig.stats.unhealthy == [], rig.stats.unhealthy  # the bus poller is still running
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # a failed check must not leave the cabinet running
        raise
    await stop(rig, pid)  # ledger verify passes
    _, events = ledger_facts(rig.ledger_path)
    kinds = [(e.type, e.body.get("sn"), e.body.get("slot")) for e in events if e.body.get("sn") == sn]
    assert kinds[-2:] == [
        ("battery_removed_unexpected", sn, slot),  # it left its slot without an eject the cabinet saw
        ("battery_returned", sn, elsewhere),
    ], kinds
