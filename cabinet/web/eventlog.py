"""The ledger's event log for technicians: filters (type, slot, battery, time) and export.

Reads through its own read-only SQLite connection on a worker thread (WAL readers never block
the ledger's writer), so a long export does not hold up rent or return.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cabinet.ledger.events import Event
from cabinet.ledger.files import connect
from cabinet.ledger.replay import EVENT_COLUMNS, event_from_row

EXPORT_FORMATS = ("csv", "jsonl")


class FilterError(ValueError):
    """A filter value could not be understood (the message names the field)."""


@dataclass(frozen=True)
class EventFilter:
    """Which events to show; every field is optional and they all must hold."""

    types: tuple[str, ...] = ()
    slot: int | None = None
    sn: str | None = None
    since: float | None = None  # wall time, seconds
    until: float | None = None
    limit: int = 200

    @classmethod
    def from_query(cls, q: Any, max_limit: int = 100_000, default_limit: int = 200) -> EventFilter:
        """From URL query parameters: type (comma list), slot, sn, since/until (ISO or epoch), limit."""
        types = tuple(t for t in (q.get("type") or "").replace(" ", "").split(",") if t)
        try:
            slot = int(q["slot"]) if q.get("slot") else None
        except ValueError:
            raise FilterError(f"slot: {q.get('slot')!r} is not a slot number") from None
        try:
            limit = max(1, min(max_limit, int(q.get("limit") or default_limit)))
        except ValueError:
            raise FilterError(f"limit: {q.get('limit')!r} is not a number") from None
        return cls(
            types, slot, (q.get("sn") or "").strip() or None, _time(q, "since"), _time(q, "until"), limit
        )

    def matches(self, e: Event) -> bool:
        b = e.body
        if (
            self.slot is not None
            and self.slot not in (b.get("slot"), b.get("end_slot"))
            and not (e.type == "tech_action" and f"slot {self.slot}:" in str(b.get("detail", "")))
        ):
            return False
        return not (
            self.sn is not None and b.get("sn") != self.sn and self.sn not in str(b.get("detail", ""))
        )


def _time(q: Any, name: str) -> float | None:
    text = (q.get(name) or "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise FilterError(
            f"{name}: {text!r} is neither an ISO time (2026-11-22T10:00) nor epoch seconds"
        ) from None
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


def select(conn: sqlite3.Connection, f: EventFilter, newest_first: bool = True) -> Iterator[Event]:
    """Events matching ``f``; type and time are filtered in SQL, slot and battery on the decoded body."""
    where: list[str] = []
    args: list[Any] = []
    if f.types:
        where.append(f"type IN ({','.join('?' * len(f.types))})")
        args += list(f.types)
    if f.since is not None:
        where.append("at_wall >= ?")
        args.append(f.since)
    if f.until is not None:
        where.append("at_wall <= ?")
        args.append(f.until)
    sql = f"SELECT {EVENT_COLUMNS} FROM events"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY seq " + ("DESC" if newest_first else "ASC")
    n = 0
    for row in conn.execute(sql, args):
        e = event_from_row(row)
        if f.matches(e):
            yield e
            n += 1
            if n >= f.limit:
                return


def query(ledger_path: Path, f: EventFilter, newest_first: bool = True) -> list[Event]:
    """Run a filter on the ledger file (blocking: call it in a thread)."""
    conn = connect(ledger_path, readonly=True)
    try:
        return list(select(conn, f, newest_first))
    finally:
        conn.close()


def iso(at_wall: float) -> str:
    return datetime.fromtimestamp(at_wall, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _default(v: Any) -> Any:
    if isinstance(v, bytes | bytearray):
        return v.hex()
    return str(v)


def export(events: list[Event], fmt: str) -> str:
    """The events as CSV (seq, time, type, body JSON) or JSON lines."""
    if fmt not in EXPORT_FORMATS:
        raise FilterError(f"format: {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")
    out = io.StringIO()
    if fmt == "csv":
        w = csv.writer(out)
        w.writerow(("seq", "time_utc", "type", "id", "boot_id", "at_mono", "body"))
        for e in events:
            body = json.dumps(e.body, sort_keys=True, default=_default, ensure_ascii=False)
            w.writerow((e.seq, iso(e.at_wall), e.type, e.id, e.boot_id, e.at_mono, body))
    else:
        for e in events:
            out.write(
                json.dumps(
                    {**e.to_dict(), "time_utc": iso(e.at_wall)},
                    sort_keys=True,
                    default=_default,
                    ensure_ascii=False,
                )
                + "\n"
            )
    return out.getvalue()


def event_json(e: Event) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(
        json.dumps({**e.to_dict(), "time_utc": iso(e.at_wall)}, default=_default)
    )
    return out
