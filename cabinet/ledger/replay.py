"""Reading events back and replaying them through the same ``apply`` as the live path."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

from .events import Event, decode_body
from .projections import apply
from .schema import PROJECTION_TABLES

EVENT_COLUMNS = "seq, id, type, at_wall, at_mono, boot_id, body"


def event_from_row(row: tuple[Any, ...]) -> Event:
    """An Event from a row of ``SELECT EVENT_COLUMNS FROM events``."""
    seq, id_, type_, at_wall, at_mono, boot_id, body = row
    return Event(seq, id_, type_, at_wall, at_mono, boot_id, decode_body(body))


def iter_events(conn: sqlite3.Connection, after: int = 0, chunk: int = 1000) -> Iterator[Event]:
    """Every event with seq > after, in order, read in chunks (bounded memory)."""
    last = after
    while True:
        rows = conn.execute(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (last, chunk)
        ).fetchall()
        if not rows:
            return
        for row in rows:
            yield event_from_row(row)
        last = rows[-1][0]


def clear_projections(conn: sqlite3.Connection) -> None:
    """Empty every projection table (inside the caller's transaction)."""
    for table in PROJECTION_TABLES:
        conn.execute(f"DELETE FROM {table}")


def rebuild_projections(conn: sqlite3.Connection) -> int:
    """Recompute every projection from the events (inside the caller's transaction).

    Used after a migration changed what projections hold. Returns the events replayed.
    """
    clear_projections(conn)
    n = 0
    for event in iter_events(conn):
        apply(conn, event)
        n += 1
    return n
