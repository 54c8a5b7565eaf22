"""Projections: how each event changes slots, batteries, rentals, commands and pass uses.

``apply(conn, event)`` is the ONLY code that writes projections. The live write path
(``Ledger.record``) and the verify/replay path call it alike, so projections equal a
replay of the events by construction, and ``verify`` checks that for real.

A transition the domain forbids raises ``LedgerRuleError`` (the caller's transaction
is then rolled back, so nothing is written).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from .errors import LedgerRuleError
from .events import Event, EventType, LedgerRentalState

Row = dict[str, Any]


def _one(conn: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> Row | None:
    cur = conn.execute(sql, args)
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in cur.description], row, strict=True))


def _slot(conn: sqlite3.Connection, slot: int) -> Row | None:
    return _one(conn, "SELECT * FROM slots WHERE slot = ?", (slot,))


def _battery(conn: sqlite3.Connection, sn: str) -> Row | None:
    return _one(conn, "SELECT * FROM batteries WHERE sn = ?", (sn,))


def _rental(conn: sqlite3.Connection, rental_id: str) -> Row | None:
    return _one(conn, "SELECT * FROM rentals WHERE rental_id = ?", (rental_id,))


def _where(b: Row) -> str:
    if b["place"] == "slot":
        return f"in slot {b['slot']}"
    if b["place"] == "rental":
        return f"out on rental {b['rental_id']}"
    return f"gone ({b['gone_reason']})"


def _ensure_slot(conn: sqlite3.Connection, slot: int, seq: int) -> Row:
    conn.execute(
        "INSERT INTO slots (slot, updated_seq) VALUES (?, ?) ON CONFLICT (slot) DO NOTHING", (slot, seq)
    )
    row = _slot(conn, slot)
    assert row is not None
    return row


def _set_slot(conn: sqlite3.Connection, slot: int, seq: int, **cols: Any) -> None:
    sets = ", ".join(f"{c} = ?" for c in cols)
    conn.execute(f"UPDATE slots SET {sets}, updated_seq = ? WHERE slot = ?", (*cols.values(), seq, slot))


def _set_battery(conn: sqlite3.Connection, sn: str, seq: int, **cols: Any) -> None:
    sets = ", ".join(f"{c} = ?" for c in cols)
    conn.execute(f"UPDATE batteries SET {sets}, updated_seq = ? WHERE sn = ?", (*cols.values(), seq, sn))


def _end_rental(
    conn: sqlite3.Connection, rental_id: str, seq: int, state: LedgerRentalState, **cols: Any
) -> None:
    sets = "".join(f", {c} = ?" for c in cols)
    conn.execute(
        f"UPDATE rentals SET state = ?, ended_seq = ?{sets} WHERE rental_id = ?",
        (state, seq, *cols.values(), rental_id),
    )


def _empty_slot(conn: sqlite3.Connection, slot: int, seq: int, what: str) -> None:
    s = _ensure_slot(conn, slot, seq)
    if s["sn"] is not None:
        raise LedgerRuleError(f"{what}: slot {slot} already holds battery {s['sn']}")


def _seat(conn: sqlite3.Connection, e: Event, b: Row | None, **extra: Any) -> None:
    """Put battery body.sn into body.slot (creating the battery row if new)."""
    sn, slot, seq = e.body["sn"], e.body["slot"], e.seq
    if b is None:
        conn.execute(
            "INSERT INTO batteries (sn, place, slot, first_seq, updated_seq) VALUES (?, 'slot', ?, ?, ?)",
            (sn, slot, seq, seq),
        )
        if extra:
            _set_battery(conn, sn, seq, **extra)
    else:
        _set_battery(conn, sn, seq, place="slot", slot=slot, rental_id=None, gone_reason=None, **extra)
    _set_slot(conn, slot, seq, sn=sn)


def _battery_seen(conn: sqlite3.Connection, e: Event) -> None:
    sn, slot = e.body["sn"], e.body["slot"]
    _empty_slot(conn, slot, e.seq, f"battery_seen {sn}")
    b = _battery(conn, sn)
    if b is not None and b["place"] != "gone":
        raise LedgerRuleError(
            f"battery_seen: battery {sn} is already {_where(b)}, cannot appear in slot {slot}"
        )
    extra = {k: e.body[k] for k in ("soc", "cycles") if e.body.get(k) is not None}
    _seat(conn, e, b, **extra)


def _battery_returned(conn: sqlite3.Connection, e: Event) -> None:
    sn, slot, rid = e.body["sn"], e.body["slot"], e.body.get("rental_id")
    _empty_slot(conn, slot, e.seq, f"battery_returned {sn}")
    b = _battery(conn, sn)
    if b is not None and b["place"] == "slot":
        raise LedgerRuleError(f"battery_returned: battery {sn} is already in slot {b['slot']}")
    local = b["rental_id"] if b is not None and b["place"] == "rental" else None
    if rid is not None:
        r = _rental(conn, rid)
        if r is not None and r["state"] != LedgerRentalState.OPEN:
            raise LedgerRuleError(
                f"battery_returned: rental {rid} already ended ({r['state']} at seq {r['ended_seq']})"
            )
        if r is not None and r["sn"] != sn:
            raise LedgerRuleError(f"battery_returned: rental {rid} is for battery {r['sn']}, not {sn}")
        if local is not None and local != rid:
            raise LedgerRuleError(f"battery_returned: battery {sn} is out on rental {local}, not {rid}")
    if local is not None:
        _end_rental(conn, local, e.seq, LedgerRentalState.RETURNED, end_type=e.type, end_slot=slot)
    extra = {"soc": e.body["soc"]} if e.body.get("soc") is not None else {}
    _seat(conn, e, b, **extra)


def _battery_removed_unexpected(conn: sqlite3.Connection, e: Event) -> None:
    sn, slot = e.body["sn"], e.body["slot"]
    s = _slot(conn, slot)
    if s is None or s["sn"] != sn:
        held = s["sn"] if s else None
        raise LedgerRuleError(f"battery_removed_unexpected: slot {slot} holds {held}, not battery {sn}")
    _set_slot(conn, slot, e.seq, sn=None)
    _set_battery(conn, sn, e.seq, place="gone", slot=None, gone_reason="missing")


def _known_battery(conn: sqlite3.Connection, e: Event) -> Row:
    b = _battery(conn, e.body["sn"])
    if b is None:
        raise LedgerRuleError(f"{e.type}: battery {e.body['sn']} is not known to this cabinet")
    return b


def _battery_quarantined(conn: sqlite3.Connection, e: Event) -> None:
    b = _known_battery(conn, e)
    if b["quarantined"]:
        raise LedgerRuleError(f"battery_quarantined: battery {b['sn']} is already quarantined")
    if b["place"] == "gone":
        raise LedgerRuleError(f"battery_quarantined: battery {b['sn']} is {_where(b)}")
    _set_battery(conn, b["sn"], e.seq, quarantined=1, quarantine_reason=e.body["reason"], risk=e.body["risk"])


def _battery_released(conn: sqlite3.Connection, e: Event) -> None:
    b = _known_battery(conn, e)
    if not b["quarantined"]:
        raise LedgerRuleError(f"battery_released: battery {b['sn']} is not quarantined")
    _set_battery(conn, b["sn"], e.seq, quarantined=0, quarantine_reason=None, risk=e.body["risk"])


def _battery_gone(conn: sqlite3.Connection, e: Event) -> None:
    b = _known_battery(conn, e)
    if b["place"] == "gone":
        raise LedgerRuleError(f"battery_gone: battery {b['sn']} is already {_where(b)}")
    if b["place"] == "slot":
        _set_slot(conn, b["slot"], e.seq, sn=None)
    elif b["place"] == "rental":
        _end_rental(
            conn,
            b["rental_id"],
            e.seq,
            LedgerRentalState.CLOSED,
            end_type=e.type,
            end_reason=e.body["reason"],
        )
    _set_battery(conn, b["sn"], e.seq, place="gone", slot=None, rental_id=None, gone_reason=e.body["reason"])


def _rental_requested(conn: sqlite3.Connection, e: Event) -> None:
    b = e.body
    r = _rental(conn, b["rental_id"])
    if r is not None:
        raise LedgerRuleError(f"rental_requested: rental {b['rental_id']} already exists ({r['state']})")
    conn.execute(
        "INSERT INTO rentals (rental_id, state, source, user, pass_id, cmd_id, requested_seq)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            b["rental_id"],
            LedgerRentalState.REQUESTED,
            b["source"],
            b["user"],
            b["pass_id"],
            b["cmd_id"],
            e.seq,
        ),
    )


def _rental_started(conn: sqlite3.Connection, e: Event) -> None:
    b = e.body
    rid, sn, slot = b["rental_id"], b["sn"], b["slot"]
    r = _rental(conn, rid)
    if r is not None and r["state"] != LedgerRentalState.REQUESTED:
        raise LedgerRuleError(f"rental_started: rental {rid} is already {r['state']}")
    s = _slot(conn, slot)
    if s is None or s["sn"] != sn:
        raise LedgerRuleError(
            f"rental_started: battery {sn} is not in slot {slot} (slot holds {s['sn'] if s else None})"
        )
    if s["quarantined"]:
        raise LedgerRuleError(f"rental_started: slot {slot} is quarantined")
    bat = _battery(conn, sn)
    if bat is not None and bat["quarantined"]:
        raise LedgerRuleError(f"rental_started: battery {sn} is quarantined")
    cols = (b["source"], b["user"], b["pass_id"], b["cmd_id"])
    if r is None:
        conn.execute(
            "INSERT INTO rentals (rental_id, state, sn, slot, source, user, pass_id, cmd_id, started_seq)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (rid, LedgerRentalState.OPEN, sn, slot, *cols, e.seq),
        )
    else:
        conn.execute(
            "UPDATE rentals SET state = ?, sn = ?, slot = ?, source = ?, user = ?, pass_id = ?,"
            " cmd_id = ?, started_seq = ? WHERE rental_id = ?",
            (LedgerRentalState.OPEN, sn, slot, *cols, e.seq, rid),
        )
    _set_slot(conn, slot, e.seq, sn=None)
    _set_battery(conn, sn, e.seq, place="rental", slot=None, rental_id=rid)


def _rental_aborted(conn: sqlite3.Connection, e: Event) -> None:
    rid = e.body["rental_id"]
    r = _rental(conn, rid)
    if r is not None and r["state"] != LedgerRentalState.REQUESTED:
        raise LedgerRuleError(f"rental_aborted: rental {rid} is already {r['state']}")
    if r is None:
        conn.execute(
            "INSERT INTO rentals (rental_id, state) VALUES (?, ?)", (rid, LedgerRentalState.REQUESTED)
        )
    _end_rental(
        conn,
        rid,
        e.seq,
        LedgerRentalState.ABORTED,
        end_type=e.type,
        end_slot=e.body["slot"],
        end_reason=e.body["reason"],
    )


def _slot_fault(conn: sqlite3.Connection, e: Event) -> None:
    _ensure_slot(conn, e.body["slot"], e.seq)
    _set_slot(conn, e.body["slot"], e.seq, fault_kind=e.body["kind"], fault_detail=e.body["detail"])


def _slot_fault_cleared(conn: sqlite3.Connection, e: Event) -> None:
    s = _slot(conn, e.body["slot"])
    if s is None or s["fault_kind"] is None:
        raise LedgerRuleError(f"slot_fault_cleared: slot {e.body['slot']} has no fault")
    _set_slot(conn, e.body["slot"], e.seq, fault_kind=None, fault_detail=None)


def _slot_quarantined(conn: sqlite3.Connection, e: Event) -> None:
    s = _ensure_slot(conn, e.body["slot"], e.seq)
    if s["quarantined"]:
        raise LedgerRuleError(f"slot_quarantined: slot {e.body['slot']} is already quarantined")
    _set_slot(conn, e.body["slot"], e.seq, quarantined=1, quarantine_reason=e.body["reason"])


def _slot_released(conn: sqlite3.Connection, e: Event) -> None:
    s = _slot(conn, e.body["slot"])
    if s is None or not s["quarantined"]:
        raise LedgerRuleError(f"slot_released: slot {e.body['slot']} is not quarantined")
    _set_slot(conn, e.body["slot"], e.seq, quarantined=0, quarantine_reason=None)


def _command_received(conn: sqlite3.Connection, e: Event) -> None:
    cmd = e.body["cmd_id"]
    seen = _one(conn, "SELECT received_seq FROM commands_seen WHERE cmd_id = ?", (cmd,))
    if seen is not None:
        raise LedgerRuleError(
            f"command_received: command {cmd} was already received at seq {seen['received_seq']}"
        )
    conn.execute(
        "INSERT INTO commands_seen (cmd_id, kind, received_seq) VALUES (?, ?, ?)",
        (cmd, e.body["kind"], e.seq),
    )


def _command_result(conn: sqlite3.Connection, e: Event) -> None:
    cmd = e.body["cmd_id"]
    seen = _one(conn, "SELECT result_seq FROM commands_seen WHERE cmd_id = ?", (cmd,))
    if seen is None:
        raise LedgerRuleError(f"command_result: command {cmd} was never received")
    if seen["result_seq"] is not None:
        raise LedgerRuleError(
            f"command_result: command {cmd} already has a result (seq {seen['result_seq']})"
        )
    conn.execute(
        "UPDATE commands_seen SET result_ok = ?, result_detail = ?, result_seq = ? WHERE cmd_id = ?",
        (int(e.body["ok"]), e.body["detail"], e.seq, cmd),
    )


def _pass_used(conn: sqlite3.Connection, e: Event) -> None:
    key = (e.body["pass_id"], e.body["rental_id"])
    if _one(conn, "SELECT seq FROM pass_uses WHERE pass_id = ? AND rental_id = ?", key):
        raise LedgerRuleError(f"pass_used: pass {key[0]} was already used for rental {key[1]}")
    conn.execute("INSERT INTO pass_uses (pass_id, rental_id, seq) VALUES (?, ?, ?)", (*key, e.seq))


def _audit_only(conn: sqlite3.Connection, e: Event) -> None:
    """Events kept for the record and the cloud; they change no projection."""


APPLY: dict[str, Callable[[sqlite3.Connection, Event], None]] = {
    EventType.LEDGER_OPENED: _audit_only,
    EventType.BATTERY_SEEN: _battery_seen,
    EventType.BATTERY_RETURNED: _battery_returned,
    EventType.BATTERY_REMOVED_UNEXPECTED: _battery_removed_unexpected,
    EventType.BATTERY_QUARANTINED: _battery_quarantined,
    EventType.BATTERY_RELEASED: _battery_released,
    EventType.BATTERY_GONE: _battery_gone,
    EventType.RENTAL_REQUESTED: _rental_requested,
    EventType.RENTAL_STARTED: _rental_started,
    EventType.RENTAL_ABORTED: _rental_aborted,
    EventType.SLOT_FAULT: _slot_fault,
    EventType.SLOT_FAULT_CLEARED: _slot_fault_cleared,
    EventType.SLOT_QUARANTINED: _slot_quarantined,
    EventType.SLOT_RELEASED: _slot_released,
    EventType.COMMAND_RECEIVED: _command_received,
    EventType.COMMAND_RESULT: _command_result,
    EventType.SECURITY_EVENT: _audit_only,
    EventType.CONFIG_APPLIED: _audit_only,
    EventType.TECH_ACTION: _audit_only,
    EventType.PASS_USED: _pass_used,
    EventType.BOARD_DOWN: _audit_only,
    EventType.BOARD_UP: _audit_only,
    EventType.STOCK_CHANGED: _audit_only,
    EventType.CERT_EXPIRING: _audit_only,
    EventType.CERT_RENEWED: _audit_only,
}


def apply(conn: sqlite3.Connection, event: Event) -> None:
    """Update the projections for one event, inside the caller's transaction."""
    handler = APPLY.get(event.type)
    if handler is None:
        raise LedgerRuleError(f"seq {event.seq}: no projection rule for event type {event.type!r}")
    handler(conn, event)
