"""Ledger schema: versioned migrations (sqlite-utils Migrations) and connection settings.

Versions (one migration each, applied in order at every open):

- v1 ``v1_initial``: events (append-only, enforced by triggers), slots, batteries,
  rentals, commands_seen, sync_state, meta.
- v2 ``v2_replay_guard``: replay_guard (signed-message counters: high-water mark + window).
- v3 ``v3_pass_uses_and_risk``: pass_uses projection and batteries.risk; the projections
  are rebuilt from the events afterwards (``PROJECTIONS_VERSION`` 1 -> 2).

To add a version: append a migration here, never edit an applied one; if it changes what
a projection holds, bump ``PROJECTIONS_VERSION`` so projections are rebuilt by replay.
"""

from __future__ import annotations

import sqlite3

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

MIGRATION_SET = "cabinet_ledger"

#: Bump when the meaning of projections changes: the next open replays every event.
PROJECTIONS_VERSION = 2

#: Tables that are a pure function of the events (compared against a replay by verify).
PROJECTION_TABLES: dict[str, tuple[str, ...]] = {
    "slots": ("slot",),
    "batteries": ("sn",),
    "rentals": ("rental_id",),
    "commands_seen": ("cmd_id",),
    "pass_uses": ("pass_id", "rental_id"),
}

migrations = Migrations(MIGRATION_SET)


def _run(db: Database, *statements: str) -> None:
    """Run DDL inside the migration's transaction (executescript would COMMIT first)."""
    for sql in statements:
        db.execute(sql)


@migrations(name="v1_initial")
def _v1_initial(db: Database) -> None:
    _run(
        db,
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            type TEXT NOT NULL,
            at_wall REAL NOT NULL,
            at_mono REAL NOT NULL,
            boot_id TEXT NOT NULL,
            body BLOB NOT NULL
        ) STRICT""",
        """CREATE TRIGGER events_no_update BEFORE UPDATE ON events
            BEGIN SELECT RAISE(ABORT, 'ledger events are append-only'); END""",
        """CREATE TRIGGER events_no_delete BEFORE DELETE ON events
            BEGIN SELECT RAISE(ABORT, 'ledger events are append-only'); END""",
        """CREATE TABLE slots (
            slot INTEGER PRIMARY KEY,
            sn TEXT,
            fault_kind TEXT,
            fault_detail TEXT,
            quarantined INTEGER NOT NULL DEFAULT 0,
            quarantine_reason TEXT,
            updated_seq INTEGER NOT NULL
        ) STRICT""",
        """CREATE TABLE batteries (
            sn TEXT PRIMARY KEY,
            place TEXT NOT NULL CHECK (place IN ('slot', 'rental', 'gone')),
            slot INTEGER,
            rental_id TEXT,
            soc REAL,
            cycles INTEGER,
            quarantined INTEGER NOT NULL DEFAULT 0,
            quarantine_reason TEXT,
            gone_reason TEXT,
            first_seq INTEGER NOT NULL,
            updated_seq INTEGER NOT NULL
        ) STRICT""",
        """CREATE TABLE rentals (
            rental_id TEXT PRIMARY KEY,
            state TEXT NOT NULL
                CHECK (state IN ('requested', 'open', 'returned', 'aborted', 'closed')),
            sn TEXT,
            slot INTEGER,
            source TEXT,
            user TEXT,
            pass_id TEXT,
            cmd_id TEXT,
            requested_seq INTEGER,
            started_seq INTEGER,
            ended_seq INTEGER,
            end_type TEXT,
            end_slot INTEGER,
            end_reason TEXT
        ) STRICT""",
        "CREATE INDEX rentals_open ON rentals(state) WHERE state IN ('requested', 'open')",
        """CREATE TABLE commands_seen (
            cmd_id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            received_seq INTEGER NOT NULL,
            result_ok INTEGER,
            result_detail TEXT,
            result_seq INTEGER
        ) STRICT""",
        """CREATE TABLE sync_state (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            acked_seq INTEGER NOT NULL
        ) STRICT""",
        "INSERT INTO sync_state (id, acked_seq) VALUES (1, 0)",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT",
    )


@migrations(name="v2_replay_guard")
def _v2_replay_guard(db: Database) -> None:
    _run(
        db,
        """CREATE TABLE replay_guard (
            key TEXT PRIMARY KEY,
            high INTEGER NOT NULL,
            window BLOB NOT NULL,
            updated_at REAL NOT NULL
        ) STRICT""",
    )


@migrations(name="v3_pass_uses_and_risk")
def _v3_pass_uses_and_risk(db: Database) -> None:
    _run(
        db,
        """CREATE TABLE pass_uses (
            pass_id TEXT NOT NULL,
            rental_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            PRIMARY KEY (pass_id, rental_id)
        ) STRICT""",
        "ALTER TABLE batteries ADD COLUMN risk REAL",
    )


MIGRATION_NAMES: tuple[str, ...] = tuple(m.name for m in migrations._migrations)
SCHEMA_VERSION = len(MIGRATION_NAMES)


def configure(conn: sqlite3.Connection) -> None:
    """Per-connection settings; synchronous=FULL must be set at every open (it is not stored)."""
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA synchronous = FULL")


def applied_versions(db: Database) -> list[str]:
    """Names of the migrations already applied to this file, oldest first."""
    return [m.name for m in migrations.applied(db)]


def schema_version(db: Database) -> int:
    """The file's schema version (number of known migrations applied, in order)."""
    names = applied_versions(db)
    return len(names)


def create_schema(db: Database) -> None:
    """Bring a fresh (e.g. in-memory) database to the current schema."""
    migrations.apply(db)
