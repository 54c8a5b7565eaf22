"""Schema migrations: a ledger written at every earlier version opens, migrates and verifies."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import cbor2
import pytest
from ledger_helpers import CABINET
from sqlite_utils import Database

from cabinet.ledger import SCHEMA_VERSION, Ledger, LedgerMismatch, verify
from cabinet.ledger.schema import MIGRATION_NAMES, migrations

# Events as the v1-era software wrote them (bodies are canonical CBOR maps).
V1_EVENTS = [
    ("ledger_opened", {"boot_id": "b-old", "version": 1, "software": None}),
    ("battery_seen", {"slot": 1, "sn": "PB1", "soc": 90.0, "cycles": 3}),
    ("battery_seen", {"slot": 2, "sn": "PB2", "soc": 80.0, "cycles": None}),
    (
        "rental_started",
        {
            "rental_id": "R1",
            "sn": "PB1",
            "slot": 1,
            "source": "pass",
            "user": "u1",
            "pass_id": "P1",
            "cmd_id": None,
        },
    ),
    ("pass_used", {"pass_id": "P1", "rental_id": "R1"}),
    ("battery_returned", {"slot": 3, "sn": "PB1", "rental_id": "R1", "soc": 30.0, "temp_c": None}),
    ("command_received", {"cmd_id": "c1", "kind": "reboot", "args": None}),
]


def _at_version(path: Path, version: int) -> sqlite3.Connection:
    """A file with exactly the first ``version`` migrations applied."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    db = Database(conn)
    stop = MIGRATION_NAMES[version] if version < len(MIGRATION_NAMES) else None
    migrations.apply(db, stop_before=stop)
    return conn


def write_v1(path: Path) -> None:
    """What v1 software left on disk: events, its projections (no pass_uses, no risk), acks."""
    conn = _at_version(path, 1)
    for seq, (type_, body) in enumerate(V1_EVENTS, start=1):
        conn.execute(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)",
            (seq, f"id-{seq}", type_, 1.7e9 + seq, 10.0 + seq, "b-old", cbor2.dumps(body, canonical=True)),
        )
    conn.executemany(
        "INSERT INTO slots (slot, sn, updated_seq) VALUES (?, ?, ?)",
        [(1, None, 4), (2, "PB2", 3), (3, "PB1", 6)],
    )
    conn.executemany(
        "INSERT INTO batteries (sn, place, slot, soc, cycles, first_seq, updated_seq) VALUES (?, 'slot', ?, ?, ?, ?, ?)",
        [("PB1", 3, 30.0, 3, 2, 6), ("PB2", 2, 80.0, None, 3, 3)],
    )
    conn.execute(
        "INSERT INTO rentals (rental_id, state, sn, slot, source, user, pass_id, started_seq, ended_seq, end_type,"
        " end_slot) VALUES ('R1', 'returned', 'PB1', 1, 'pass', 'u1', 'P1', 4, 6, 'battery_returned', 3)"
    )
    conn.execute("INSERT INTO commands_seen (cmd_id, kind, received_seq) VALUES ('c1', 'reboot', 7)")
    conn.execute("UPDATE sync_state SET acked_seq = 5")
    conn.executemany(
        "INSERT INTO meta VALUES (?, ?)",
        [("cabinet_id", CABINET), ("created_at", "2026-01-01T00:00:00Z"), ("projections_version", "1")],
    )
    conn.commit()
    conn.close()


def write_v2(path: Path) -> None:
    """v2 software: the v1 data, migrated, plus a replay-guard window it kept."""
    write_v1(path)
    conn = _at_version(path, 2)
    conn.execute(
        "INSERT INTO replay_guard VALUES ('cloud-key-1', 41, ?, 1.7e9)", ((0b1011).to_bytes(8, "big"),)
    )
    conn.commit()
    conn.close()


OLD_WRITERS: dict[int, Callable[[Path], None]] = {1: write_v1, 2: write_v2}


def test_there_is_a_data_writer_for_every_earlier_version() -> None:
    assert set(OLD_WRITERS) == set(range(1, SCHEMA_VERSION))


@pytest.mark.parametrize("version", sorted(OLD_WRITERS))
def test_ledger_from_every_earlier_version_migrates_and_verifies(ledger_path: Path, version: int) -> None:
    OLD_WRITERS[version](ledger_path)
    with Ledger.open(ledger_path, CABINET) as lg:
        assert [m for m in lg.db["_sqlite_migrations"].rows] and lg.meta()["projections_version"] == "2"
        # events kept, in order, with their ids; the open appended the next seq
        assert [(e.seq, e.id) for e in lg.events_after(0, limit=7)] == [(s, f"id-{s}") for s in range(1, 8)]
        assert lg.last_seq == 8 and lg.events_after(7)[0].type == "ledger_opened"
        assert lg.acked_seq == 5
        # projections rebuilt by replay: the v3 pass_uses table now knows the v1-era pass use
        assert lg.db.execute("SELECT pass_id, rental_id, seq FROM pass_uses").fetchall() == [("P1", "R1", 5)]
        assert lg.battery("PB1").slot == 3 and lg.battery("PB1").risk is None
        assert lg.rental("R1").state == "returned"
        assert lg.command_seen("c1").kind == "reboot"
        if version >= 2:  # the replay state written at v2 is kept as it was
            assert lg.conn.execute("SELECT high FROM replay_guard WHERE key = 'cloud-key-1'").fetchone() == (
                41,
            )
        lg.record("battery_quarantined", sn="PB2", reason="swollen", risk=0.8)
    report = verify(ledger_path)
    assert report.ok, report.summary()
    kept = ledger_path.with_name(f"{ledger_path.name}.pre-v{version}")
    old = sqlite3.connect(kept)
    assert old.execute("SELECT count(*) FROM _sqlite_migrations").fetchone()[0] == version
    assert old.execute("SELECT count(*) FROM events").fetchone()[0] == len(V1_EVENTS)
    old.close()


def test_current_version_needs_no_migration_and_keeps_no_copy(ledger_path: Path) -> None:
    Ledger.open(ledger_path, CABINET).close()
    Ledger.open(ledger_path, CABINET).close()
    assert sorted(p.name for p in ledger_path.parent.iterdir() if ".pre-v" in p.name) == []


def test_ledger_from_newer_software_is_refused_untouched(ledger_path: Path) -> None:
    Ledger.open(ledger_path, CABINET).close()
    conn = sqlite3.connect(ledger_path)
    conn.execute(
        "INSERT INTO _sqlite_migrations (migration_set, name, applied_at) VALUES ('cabinet_ledger', 'v9_future', 'x')"
    )
    conn.commit()
    conn.close()
    before = ledger_path.read_bytes()
    with pytest.raises(LedgerMismatch, match="v9_future"):
        Ledger.open(ledger_path, CABINET)
    assert ledger_path.read_bytes() == before


def test_another_cabinets_ledger_is_refused(ledger_path: Path) -> None:
    Ledger.open(ledger_path, CABINET).close()
    with pytest.raises(LedgerMismatch, match="belongs to cabinet 'cab-test-01', not 'cab-other'"):
        Ledger.open(ledger_path, "cab-other")


def test_file_is_wal_strict_and_every_connection_is_synchronous_full(ledger: Ledger) -> None:
    assert ledger.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert ledger.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    tables = ledger.conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_%' ESCAPE '\\'"
    ).fetchall()
    assert {n for n, _ in tables} >= {
        "events",
        "slots",
        "batteries",
        "rentals",
        "commands_seen",
        "replay_guard",
    }
    assert all(sql.rstrip().endswith("STRICT") for _, sql in tables), tables
