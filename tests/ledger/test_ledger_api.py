"""The API the controller and the sync agent call: outbox, acks, replay guard, async facade."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from ledger_helpers import CABINET, stock

from cabinet.ledger import AsyncLedger, Ledger, LedgerError, LedgerRuleError, verify_db


def test_outbox_is_events_after_the_ack_in_order(ledger: Ledger) -> None:
    stock(ledger, 5)
    assert [e.seq for e in ledger.events_after(0)] == [1, 2, 3, 4, 5, 6]
    assert [e.seq for e in ledger.events_after(2, limit=2)] == [3, 4]
    assert ledger.events_after(6) == []
    ev = ledger.events_after(1, limit=1)[0]
    assert (ev.type, ev.body["slot"], ev.body["sn"]) == ("battery_seen", 1, "PB000001")


def test_outbox_batch_respects_max_bytes_but_never_stalls(ledger: Ledger) -> None:
    big = "x" * 1500
    for i in range(4):
        ledger.record("tech_action", technician="ana", action=f"a{i}", detail=big)
    batch = ledger.events_after(1, limit=100, max_bytes=4000)
    assert [e.seq for e in batch] == [2, 3]
    assert [e.seq for e in ledger.events_after(1, limit=100, max_bytes=10)] == [2]


def test_ack_moves_forward_only(ledger: Ledger) -> None:
    stock(ledger, 3)
    assert ledger.acked_seq == 0 and ledger.outbox_size() == 4
    assert ledger.set_acked(3) == 3
    assert ledger.set_acked(2) == 3  # a stale, redelivered ack changes nothing
    assert ledger.acked_seq == 3 and ledger.outbox_size() == 1
    with pytest.raises(LedgerRuleError, match="ack for seq 9 but the ledger ends at seq 4"):
        ledger.set_acked(9)


def test_ack_survives_reopen(ledger_path: Path) -> None:
    with Ledger.open(ledger_path, CABINET) as lg:
        stock(lg, 2)
        lg.set_acked(2)
    with Ledger.open(ledger_path, CABINET) as lg:
        assert lg.acked_seq == 2
        assert [e.type for e in lg.events_after(lg.acked_seq)] == ["battery_seen", "ledger_opened"]


def test_second_writer_process_is_refused(ledger_path: Path, ledger: Ledger) -> None:
    import subprocess
    import sys

    code = (
        "import sys; from cabinet.ledger import Ledger, LedgerError\n"
        "try:\n    Ledger.open(sys.argv[1], 'cab-test-01')\nexcept LedgerError as e:\n"
        "    print(e); sys.exit(3)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(ledger_path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 3, out.stderr
    assert "already open by another process" in out.stdout


def test_second_open_in_the_same_process_is_refused_until_closed(ledger_path: Path) -> None:
    first = Ledger.open(ledger_path, CABINET)
    with pytest.raises(LedgerError, match="already open"):
        Ledger.open(ledger_path, CABINET)
    first.close()
    Ledger.open(ledger_path, CABINET).close()


async def test_async_ledger_runs_every_call_on_one_writer_thread(ledger_path: Path) -> None:
    lg = await AsyncLedger.open(ledger_path, CABINET)
    try:
        threads = set(await asyncio.gather(*(lg.run(lambda _: threading.get_ident()) for _ in range(5))))
        assert len(threads) == 1 and threading.get_ident() not in threads
        events = await asyncio.gather(
            *(lg.record("battery_seen", slot=i, sn=f"PB{i}") for i in range(1, 21)),
        )
        assert sorted(e.seq for e in events) == list(range(2, 22))
        assert len(await lg.slots()) == 20
        assert (await lg.battery("PB3")).slot == 3
        assert await lg.set_acked(10) == 10 and await lg.acked_seq() == 10
        assert [e.seq for e in await lg.events_after(20)] == [21]
        with pytest.raises(LedgerRuleError):
            await lg.record("battery_seen", slot=1, sn="PB99")
    finally:
        await lg.close()
    Ledger.open(ledger_path, CABINET).close()  # the lock was released


def test_record_inside_an_outer_transaction_rolls_back_without_a_gap(ledger: Ledger) -> None:
    stock(ledger, 1)
    seq = ledger.last_seq
    with pytest.raises(RuntimeError), ledger.db.atomic():
        ledger.record("command_received", cmd_id="c1", kind="eject")
        ledger.record("security_event", kind="late_check_failed")
        assert ledger.last_seq == seq + 2
        raise RuntimeError("refused after recording")
    assert ledger.last_seq == seq and ledger.command_seen("c1") is None
    assert ledger.record("command_received", cmd_id="c1", kind="eject").seq == seq + 1
    assert verify_db(ledger.conn).ok
