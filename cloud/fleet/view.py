"""The fleet view: each cabinet's online state, last contact, backlog, slot inventory and alerts.

Written from three sources: retained ``state`` messages (online / offline last will), ``tm``
telemetry (live slot readings) and the ordered events (returns, rentals, quarantines...).
Slot rows keep the cabinet's own time of the information (``updated_at``), so a backlog of
old events drained after days offline never overwrites a fresher telemetry reading.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, func, select, update

from cloud.alerts import insert_ignore
from cloud.db import cabinet_events, cabinets, commands, fleet_alerts, fleet_cabinets, fleet_slots
from cloud.fleet import alerting
from sync.events import EventType
from sync.messages import State, Telemetry


def ensure_cabinet(conn: Connection, cabinet: str) -> None:
    insert_ignore(conn, fleet_cabinets, {"cabinet_id": cabinet, "applied_seq": 0})


# --- slot inventory ------------------------------------------------------------------------


@dataclass
class SlotChanges:
    """Slot changes implied by a run of events, in order: (slot or sn, values, cabinet time)."""

    ops: list[tuple[int | None, str | None, dict[str, Any], float]] = field(default_factory=list)

    def add(self, type_: str, body: Mapping[str, Any], at: float) -> None:
        slot = body.get("slot")
        match type_:
            case EventType.BATTERY_SEEN | EventType.BATTERY_RETURNED:
                values = {"battery_sn": body.get("sn"), "soc": body.get("soc"), "fault_kind": None}
                self.ops.append((slot, None, values, at))
            case EventType.RENTAL_STARTED | EventType.BATTERY_REMOVED_UNEXPECTED:
                values = {
                    "battery_sn": None,
                    "soc": None,
                    "temp_dc": None,
                    "voltage_mv": None,
                    "current_ma": None,
                }
                self.ops.append((slot, None, values, at))
            case EventType.BATTERY_GONE:
                self.ops.append((None, body.get("sn"), {"battery_sn": None, "soc": None}, at))
            case EventType.SLOT_QUARANTINED:
                self.ops.append((slot, None, {"quarantined": True}, at))
            case EventType.SLOT_RELEASED:
                self.ops.append((slot, None, {"quarantined": False}, at))
            case EventType.SLOT_FAULT:
                self.ops.append((slot, None, {"fault_kind": str(body.get("kind"))[:64]}, at))
            case EventType.SLOT_FAULT_CLEARED:
                self.ops.append((slot, None, {"fault_kind": None}, at))


def _touch_slot(conn: Connection, cabinet: str, slot: int) -> None:
    insert_ignore(conn, fleet_slots, {"cabinet_id": cabinet, "slot": slot, "updated_at": 0.0})


def apply_slot_changes(conn: Connection, cabinet: str, changes: SlotChanges) -> None:
    """Apply event-derived slot changes, never over fresher information."""
    for slot, sn, values, at in changes.ops:
        if slot is not None:
            _touch_slot(conn, cabinet, int(slot))
            where = [fleet_slots.c.cabinet_id == cabinet, fleet_slots.c.slot == int(slot)]
        elif sn:
            where = [fleet_slots.c.cabinet_id == cabinet, fleet_slots.c.battery_sn == sn]
        else:
            continue
        if set(values) <= {"quarantined", "fault_kind"}:
            conn.execute(update(fleet_slots).where(*where).values(**values))  # flags: always, in order
        else:
            conn.execute(
                update(fleet_slots)
                .where(*where, fleet_slots.c.updated_at <= at)
                .values(**values, updated_at=at)
            )


def apply_state(engine: Engine, state: State, received_at: float) -> None:
    """A cabinet's retained state (or its last will); the latest message received wins."""
    with engine.begin() as conn:
        ensure_cabinet(conn, state.cabinet)
        values: dict[str, Any] = {"online": state.online, "state_at": state.at, "last_seen": received_at}
        if state.online:
            values |= {
                "backlog": state.backlog,
                "versions": json.dumps(dict(state.versions)),
                "counts": json.dumps(dict(state.counts)),
            }
        conn.execute(
            update(fleet_cabinets).where(fleet_cabinets.c.cabinet_id == state.cabinet).values(**values)
        )
        alerting.on_state(conn, state.cabinet, state.online, received_at)


def apply_telemetry(engine: Engine, tm: Telemetry, received_at: float) -> None:
    """Live slot readings; each slot keeps the newest reading (by the cabinet's clock)."""
    with engine.begin() as conn:
        ensure_cabinet(conn, tm.cabinet)
        conn.execute(
            update(fleet_cabinets)
            .where(fleet_cabinets.c.cabinet_id == tm.cabinet)
            .values(last_seen=received_at, telemetry_at=tm.at)
        )
        alerting.on_heard(conn, tm.cabinet, received_at)
        for s in tm.samples:
            _touch_slot(conn, tm.cabinet, s.slot)
            conn.execute(
                update(fleet_slots)
                .where(
                    fleet_slots.c.cabinet_id == tm.cabinet,
                    fleet_slots.c.slot == s.slot,
                    fleet_slots.c.updated_at <= s.at,
                )
                .values(
                    battery_sn=s.battery,
                    soc=s.soc,
                    temp_dc=s.temp_dc,
                    voltage_mv=s.voltage_mv,
                    current_ma=s.current_ma,
                    faults=s.faults,
                    updated_at=s.at,
                )
            )


# --- reading (operator API) ----------------------------------------------------------------


def _cabinet_json(
    row: Mapping[str, Any], open_alerts: int, now: float, online_grace_s: float
) -> dict[str, Any]:
    return {
        "id": row["cabinet_id"],
        "name": row.get("name"),
        "registered": row.get("registered", True),
        "online": bool(row["online"]),
        "last_seen": row["last_seen"],
        "seconds_since_seen": None if row["last_seen"] is None else max(0.0, now - row["last_seen"]),
        "stale": row["last_seen"] is None or now - row["last_seen"] > online_grace_s,
        "state_at": row["state_at"],
        "backlog": row["backlog"],
        "applied_seq": row["applied_seq"],
        "versions": json.loads(row["versions"]) if row["versions"] else {},
        "counts": json.loads(row["counts"]) if row["counts"] else {},
        "telemetry_at": row["telemetry_at"],
        "open_alerts": open_alerts,
    }


def list_cabinets(engine: Engine, now: float, online_grace_s: float = 180.0) -> list[dict[str, Any]]:
    """Every cabinet that is registered or ever talked to the cloud, with its online state."""
    with engine.connect() as conn:
        rows = {r["cabinet_id"]: dict(r) for r in conn.execute(select(fleet_cabinets)).mappings()}
        names = {r.id: r.name for r in conn.execute(select(cabinets.c.id, cabinets.c.name))}
        alerts: dict[str, int] = {
            r[0]: int(r[1])
            for r in conn.execute(
                select(fleet_alerts.c.cabinet_id, func.count())
                .where(fleet_alerts.c.cleared_at.is_(None))
                .group_by(fleet_alerts.c.cabinet_id)
            )
        }
    blank = {"online": None, "last_seen": None, "state_at": None, "backlog": None, "applied_seq": 0,
             "versions": None, "counts": None, "telemetry_at": None}  # fmt: skip
    out = []
    for cab in sorted(set(rows) | set(names)):
        row = rows.get(cab) or {"cabinet_id": cab, **blank}
        row["name"] = names.get(cab)
        row["registered"] = cab in names
        out.append(_cabinet_json(row, alerts.get(cab, 0), now, online_grace_s))
    return out


def cabinet_detail(
    engine: Engine, cabinet: str, now: float, online_grace_s: float = 180.0
) -> dict[str, Any] | None:
    """One cabinet with its slot inventory; None if the cloud has never heard of it."""
    found = [c for c in list_cabinets(engine, now, online_grace_s) if c["id"] == cabinet]
    if not found:
        return None
    with engine.connect() as conn:
        slots = conn.execute(
            select(fleet_slots).where(fleet_slots.c.cabinet_id == cabinet).order_by(fleet_slots.c.slot)
        ).mappings()
        found[0]["slots"] = [
            {k: v for k, v in dict(s).items() if k != "cabinet_id"} | {"info_at": s["updated_at"]}
            for s in slots
        ]
    return found[0]


def alerts(
    engine: Engine,
    cabinet: str | None = None,
    open_only: bool = True,
    limit: int = 200,
    *,
    state: str | None = None,
    acknowledged: bool | None = None,
    kind: str | None = None,
) -> list[dict[str, Any]]:
    """Alerts, newest first. ``state``: ``open`` (not cleared) or ``cleared``; ``acknowledged``:
    True/False; ``open_only`` (the old default) is "not acknowledged" when neither is given."""
    q = select(fleet_alerts).order_by(fleet_alerts.c.id.desc()).limit(limit)
    if cabinet:
        q = q.where(fleet_alerts.c.cabinet_id == cabinet)
    if kind:
        q = q.where(fleet_alerts.c.kind == kind)
    if state == "open":
        q = q.where(fleet_alerts.c.cleared_at.is_(None))
    elif state == "cleared":
        q = q.where(fleet_alerts.c.cleared_at.is_not(None))
    if acknowledged is None and state is None and open_only:
        acknowledged = False
    if acknowledged is not None:
        ack = fleet_alerts.c.acknowledged_at
        q = q.where(ack.is_not(None) if acknowledged else ack.is_(None))
    with engine.connect() as conn:
        return [_alert_json(dict(r)) for r in conn.execute(q).mappings()]


def _alert_json(r: dict[str, Any]) -> dict[str, Any]:
    r["key"] = r.pop("alert_key")
    r["open"] = r["cleared_at"] is None
    return r


def acknowledge_alert(engine: Engine, alert_id: int, now: float) -> bool:
    """An operator has seen it. A point alert (no key) ends with that; a condition alert stays
    open until its condition ends (``alerting.clear_alert``)."""
    with engine.begin() as conn:
        done = conn.execute(
            update(fleet_alerts)
            .where(fleet_alerts.c.id == alert_id, fleet_alerts.c.acknowledged_at.is_(None))
            .values(acknowledged_at=now)
        ).rowcount
        conn.execute(
            update(fleet_alerts)
            .where(
                fleet_alerts.c.id == alert_id,
                fleet_alerts.c.alert_key.is_(None),
                fleet_alerts.c.cleared_at.is_(None),
            )
            .values(cleared_at=now)
        )
        return bool(done)


def events(
    engine: Engine, cabinet: str, after: int = 0, limit: int = 500, type_: str | None = None
) -> list[dict[str, Any]]:
    """A cabinet's stored events in seq order."""
    q = (
        select(cabinet_events)
        .where(cabinet_events.c.cabinet_id == cabinet, cabinet_events.c.seq > after)
        .order_by(cabinet_events.c.seq)
        .limit(limit)
    )
    if type_:
        q = q.where(cabinet_events.c.type == type_)
    with engine.connect() as conn:
        rows = conn.execute(q).mappings().all()
    return [
        {
            "seq": r["seq"],
            "id": r["event_id"],
            "type": r["type"],
            "at_wall": r["at_wall"],
            "at_mono": r["at_mono"],
            "boot_id": r["boot_id"],
            "body": json.loads(r["body"]),
            "received_at": r["received_at"],
        }
        for r in rows
    ]


def command(engine: Engine, cmd_id: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        r = conn.execute(select(commands).where(commands.c.cmd_id == cmd_id)).mappings().first()
    if r is None:
        return None
    return {
        "cmd_id": r["cmd_id"],
        "cabinet": r["cabinet_id"],
        "counter": r["counter"],
        "kind": r["kind"],
        "args": json.loads(r["args"]),
        "created_at": r["created_at"],
        "expires_at": r["expires_at"],
        "sent_at": r["sent_at"],
        "status": r["status"],
        "result": r["result"],
        "finished_at": r["finished_at"],
    }


def open_alert_count(engine: Engine, kind: str | None = None) -> int:
    q = select(func.count()).select_from(fleet_alerts).where(fleet_alerts.c.cleared_at.is_(None))
    if kind:
        q = q.where(fleet_alerts.c.kind == kind)
    with engine.connect() as conn:
        return int(conn.execute(q).scalar_one())
