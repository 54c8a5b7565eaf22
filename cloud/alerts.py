"""Alert rows: raised once per key, whoever raises them (fleet ingest, alert checks, billing).

The lowest layer of the fleet's alerts: it imports only the tables, so rentals, the fleet view
and the periodic checks (``cloud.fleet.alerting``) all raise alerts the same way without
importing each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite

from cloud.db import fleet_alerts


def insert_ignore(conn: Connection, table: Table, values: Mapping[str, Any]) -> None:
    """INSERT unless a row with the same key exists (concurrent workers may race to create it)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(dialect.insert(table).values(**values).on_conflict_do_nothing())


def add_alert(
    conn: Connection,
    cabinet: str,
    kind: str,
    severity: str,
    detail: str,
    *,
    at: float,
    seq: int | None = None,
    event_id: str | None = None,
) -> None:
    """Raise an alert once (redelivered events do not repeat it)."""
    key = f"{cabinet}:{kind}:{event_id or seq or detail[:120]}"
    insert_ignore(
        conn,
        fleet_alerts,
        {
            "cabinet_id": cabinet,
            "kind": kind[:64],
            "severity": severity,
            "detail": detail[:2000],
            "seq": seq,
            "event_id": event_id,
            "dedupe_key": key[:200],
            "at": at,
        },
    )
