"""Helpers shared by the ledger tests (imported by name: this folder has no __init__.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from cabinet.ledger import Ledger

CABINET = "cab-test-01"


def stock(lg: Ledger, count: int = 4, first_slot: int = 1) -> list[str]:
    """Seat ``count`` new batteries in consecutive slots; returns their serial numbers."""
    sns = []
    for i in range(count):
        sn = f"PB{first_slot + i:06d}"
        lg.record("battery_seen", slot=first_slot + i, sn=sn, soc=90.0, cycles=10 + i)
        sns.append(sn)
    return sns


def tamper(path: Path, *statements: str) -> None:
    """Edit a closed ledger file behind the ledger's back (drops the append-only guards)."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("DROP TRIGGER IF EXISTS events_no_update")
        conn.execute("DROP TRIGGER IF EXISTS events_no_delete")
        for sql in statements:
            conn.execute(sql)
        conn.commit()
    finally:
        conn.close()


def rent_and_return(lg: Ledger, rental_id: str, sn: str, slot: int, back_to: int) -> None:
    """A whole rental through the cloud path: command, start, result, return."""
    cmd = f"cmd-{rental_id}"
    lg.record("command_received", cmd_id=cmd, kind="eject", args={"rental_id": rental_id})
    lg.record("rental_started", rental_id=rental_id, sn=sn, slot=slot, source="cloud", cmd_id=cmd, user="u1")
    lg.record("command_result", cmd_id=cmd, ok=True)
    lg.record("battery_returned", slot=back_to, sn=sn, rental_id=rental_id, soc=35.0, temp_c=27.5)
