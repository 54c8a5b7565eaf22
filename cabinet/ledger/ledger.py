"""The Ledger: the cabinet's durable source of truth (one SQLite file, one writer).

Every state change is ``record(type, **body)``: ONE transaction that appends the event
(next gapless seq, uuid, wall/boot/monotonic time) and applies it to the projections.
When ``record`` returns, the event is on disk (WAL, synchronous=FULL).

Threading: a Ledger is used from one thread only (SQLite connections are bound to their
thread). Calls are short (a commit is one fsync), but an SD card fsync can take tens of
milliseconds, so asyncio code should use ``AsyncLedger`` (cabinet/ledger/aio.py), which
runs every call on a single dedicated writer thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from . import clock
from .errors import LedgerCorrupt, LedgerError, LedgerMismatch, LedgerRuleError, LedgerUnwritable
from .events import Event, EventType, decode_body, encode_body, validate_body
from .files import (
    WriterLock,
    check_header,
    connect,
    free_bytes,
    fsync_path,
    is_corruption,
    is_write_refused,
    keep_aside,
)
from .projections import apply
from .replay import EVENT_COLUMNS, event_from_row, rebuild_projections
from .schema import MIGRATION_NAMES, PROJECTIONS_VERSION, SCHEMA_VERSION, applied_versions, migrations
from .views import OPEN_STATES_SQL, BatteryState, CommandSeen, RentalState, SlotState

#: Bytes counted per event on top of its body when sizing an outbox batch.
EVENT_OVERHEAD = 96

#: Event types that start something the cabinet must then be able to finish and record (a
#: rental: eject, then started or aborted). They need ``Ledger.reserve_bytes`` free on the card.
STARTS = frozenset({EventType.RENTAL_REQUESTED})

log = logging.getLogger(__name__)


class Ledger:
    """Append events, read projections, track what the cloud acknowledged."""

    #: Free bytes a rental needs on the card before it starts: enough for the events that
    #: finish it (and the returns meanwhile) even if the card then fills up. ~1 KB per event
    #: with WAL pages, so 2 MiB leaves room for well over a thousand.
    reserve_bytes: int = 2 << 20

    def __init__(
        self, db: Database, path: Path | None, cabinet_id: str, lock: WriterLock | None = None
    ) -> None:
        self.db = db
        self.conn: sqlite3.Connection = db.conn
        self.path = path
        self.cabinet_id = cabinet_id
        self._lock = lock

    # ---- opening -------------------------------------------------------------------

    @classmethod
    def open(
        cls, path: str | Path, cabinet_id: str, *, create: bool = True, software: str | None = None
    ) -> Ledger:
        """Open (or, if absent and ``create``, create) the ledger and migrate it.

        Raises LedgerCorrupt for a damaged, empty, foreign or missing file (the file is
        kept, a copy put aside; the caller must refuse to rent and say so loudly),
        LedgerMismatch for another cabinet's ledger or a newer schema, LedgerError if
        another process has it open.
        """
        path = Path(path)
        lock = WriterLock(path).acquire()
        try:
            if not path.exists():
                if not create:
                    raise LedgerCorrupt(path, "the file is missing (and create=False)")
                _create(path, cabinet_id)
            check_header(path)
            _precheck(path)
            conn: sqlite3.Connection | None = None
            try:
                conn = connect(path)
                db = Database(conn)
                _prepare(db, path, cabinet_id)
                ledger = cls(db, path, cabinet_id, lock)
            except sqlite3.DatabaseError as exc:
                if conn is not None:
                    conn.close()
                if is_write_refused(exc):
                    raise LedgerUnwritable(path, f"SQLite says: {exc}") from exc
                if is_corruption(exc):
                    raise LedgerCorrupt(path, f"SQLite says: {exc}", keep_aside(path)) from exc
                raise LedgerError(f"cannot open ledger {path}: {exc}") from exc
            except BaseException:
                if conn is not None:
                    conn.close()
                raise
            try:
                ledger.record(
                    EventType.LEDGER_OPENED,
                    boot_id=clock.boot_id(),
                    version=SCHEMA_VERSION,
                    software=software,
                )
            except LedgerUnwritable as exc:
                # still readable and sound: open it, so the cabinet runs (and refuses to rent) and
                # writes resume by themselves once the card has room again
                log.error("ledger opened without its ledger_opened event: %s", exc)
            return ledger
        except BaseException:
            lock.release()
            raise

    @classmethod
    def in_memory(cls, cabinet_id: str) -> Ledger:
        """A throw-away ledger (tests, property checks): same schema and rules, no file."""
        db = Database(memory=True)
        migrations.apply(db)
        _init_meta(db, cabinet_id)
        return cls(db, None, cabinet_id)

    def close(self) -> None:
        """Checkpoint and close; the writer lock is released."""
        try:
            self.conn.close()
        finally:
            if self._lock:
                self._lock.release()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- writing -------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """Seq of the newest event (0 for an empty ledger); includes an open outer transaction."""
        seq: int = self.conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
        return seq

    def record(self, type_: str, /, **body: Any) -> Event:
        """Append one event and apply it, in one transaction; durable when this returns.

        ``type_`` is an ``EventType`` (``sync.events``; its plain text is accepted too) and
        ``body`` that type's fields. Raises EventBodyError (bad body) or LedgerRuleError (forbidden transition);
        in both cases nothing was written. Called inside an outer ``ledger.db.atomic()``
        it joins that transaction (as a savepoint): durable when the outer one commits,
        and gone without a seq gap if it rolls back (seq is read inside the transaction).
        """
        return self._record(type_, body)

    def _record(self, type_: str, body: dict[str, Any]) -> Event:
        clean = validate_body(type_, body)
        type_ = str(type_)  # an EventType member is stored and handed out as its plain text
        blob = encode_body(clean)
        decoded = decode_body(blob)  # what replay will see, exactly
        if type_ in STARTS:
            self._check_reserve(type_)
        stamp = clock.now()
        with self.atomic():
            seq = self.conn.execute("SELECT coalesce(max(seq), 0) + 1 FROM events").fetchone()[0]
            event = Event(seq, str(uuid.uuid4()), type_, stamp.at_wall, stamp.at_mono, stamp.boot_id, decoded)
            self.conn.execute(
                f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (seq, event.id, type_, event.at_wall, event.at_mono, event.boot_id, blob),
            )
            apply(self.conn, event)
        return event

    def _check_reserve(self, type_: str) -> None:
        if self.path is None:
            return
        free = free_bytes(self.path.parent)
        if free < self.reserve_bytes:
            raise LedgerUnwritable(
                self.path,
                f"{type_} refused: only {free} bytes free on the card, and starting needs"
                f" {self.reserve_bytes} in reserve so that what it starts can be finished and recorded",
            )

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        """One transaction (a savepoint when nested): use it instead of ``db.atomic()`` so that a
        full or read-only card raises LedgerUnwritable (with the transaction rolled back) and a
        damaged file LedgerCorrupt, whether the failure comes at a write or at the COMMIT."""
        outer = not self.conn.in_transaction
        with self._writing():
            try:
                with self.db.atomic():
                    yield
            except BaseException:
                if outer and self.conn.in_transaction:  # SQLite "may or may not" roll back by itself
                    with contextlib.suppress(sqlite3.Error):
                        self.conn.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Turn SQLite write failures into LedgerUnwritable (full or read-only card: retry
        later) or LedgerCorrupt (the file cannot be trusted)."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            if is_write_refused(exc):
                raise LedgerUnwritable(self.path, f"write refused: {exc} ({exc.sqlite_errorname})") from exc
            if is_corruption(exc):
                raise LedgerCorrupt(self.path or Path(":memory:"), f"write failed: {exc}") from exc
            raise

    def storage_problem(self) -> str | None:
        """None if a rental may start now; otherwise why not (card full or mounted read-only).

        Cheap (one statvfs, no write), for status pages; a card that went read-only without the
        mount saying so is only found by the next write, which raises LedgerUnwritable.
        """
        if self.path is None:
            return None
        if os.statvfs(self.path.parent).f_flag & os.ST_RDONLY:
            return f"the card holding {self.path} is mounted read-only"
        try:
            self._check_reserve("a rental")
        except LedgerUnwritable as exc:
            return exc.reason
        return None

    # ---- projections ---------------------------------------------------------------

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        cur = self.conn.execute(sql, args)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def slots(self) -> list[SlotState]:
        """Every slot the ledger has heard of, by number."""
        return [SlotState.from_row(r) for r in self._rows("SELECT * FROM slots ORDER BY slot")]

    def slot(self, n: int) -> SlotState | None:
        rows = self._rows("SELECT * FROM slots WHERE slot = ?", (n,))
        return SlotState.from_row(rows[0]) if rows else None

    def batteries(self) -> list[BatteryState]:
        return [BatteryState.from_row(r) for r in self._rows("SELECT * FROM batteries ORDER BY sn")]

    def battery(self, sn: str) -> BatteryState | None:
        rows = self._rows("SELECT * FROM batteries WHERE sn = ?", (sn,))
        return BatteryState.from_row(rows[0]) if rows else None

    def rental(self, rental_id: str) -> RentalState | None:
        rows = self._rows("SELECT * FROM rentals WHERE rental_id = ?", (rental_id,))
        return RentalState.from_row(rows[0]) if rows else None

    def open_rentals(self) -> list[RentalState]:
        """Rentals requested (eject in flight) or running (battery out), oldest first."""
        rows = self._rows(
            f"SELECT * FROM rentals WHERE state IN {OPEN_STATES_SQL}"
            " ORDER BY coalesce(requested_seq, started_seq)"
        )
        return [RentalState.from_row(r) for r in rows]

    def open_rentals_for_pass(self, pass_id: str) -> list[RentalState]:
        """Open rentals opened with this offline pass (one pass, one rental at a time)."""
        rows = self._rows(
            f"SELECT * FROM rentals WHERE pass_id = ? AND state IN {OPEN_STATES_SQL}", (pass_id,)
        )
        return [RentalState.from_row(r) for r in rows]

    def command_seen(self, cmd_id: str) -> CommandSeen | None:
        """The command if it was already received (so it is never acted on twice)."""
        rows = self._rows("SELECT * FROM commands_seen WHERE cmd_id = ?", (cmd_id,))
        return CommandSeen.from_row(rows[0]) if rows else None

    # ---- outbox and acks -----------------------------------------------------------

    def events_after(self, seq: int, limit: int = 100, max_bytes: int = 64 * 1024) -> list[Event]:
        """The outbox: events with seq > ``seq`` in order, at most ``limit`` and about
        ``max_bytes`` (always at least one event, so a big event never stalls sync)."""
        rows = self.conn.execute(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
        ).fetchall()
        out: list[Event] = []
        size = 0
        for row in rows:
            size += len(row[6]) + EVENT_OVERHEAD
            if out and size > max_bytes:
                break
            out.append(event_from_row(row))
        return out

    @property
    def acked_seq(self) -> int:
        """Highest contiguous seq the cloud has acknowledged."""
        acked: int = self.conn.execute("SELECT acked_seq FROM sync_state WHERE id = 1").fetchone()[0]
        return acked

    def set_acked(self, seq: int) -> int:
        """Move the ack forward (a stale or repeated ack is ignored); returns the new value.

        Raises LedgerRuleError for an ack beyond the last event (the cloud cannot have it).
        """
        last = self.last_seq
        if seq > last:
            raise LedgerRuleError(f"ack for seq {seq} but the ledger ends at seq {last}")
        with self.atomic():
            self.conn.execute("UPDATE sync_state SET acked_seq = max(acked_seq, ?) WHERE id = 1", (seq,))
        return self.acked_seq

    def outbox_size(self) -> int:
        """Events not yet acknowledged by the cloud."""
        return self.last_seq - self.acked_seq

    # Signed-message replay state lives in the replay_guard table, written by the cabinet's
    # LedgerReplayStore (cabinet/trust.py) inside the same transaction as the command it guards.

    def meta(self) -> dict[str, str]:
        """The file's meta keys (cabinet_id, created_at, projections_version)."""
        return dict(self.conn.execute("SELECT key, value FROM meta").fetchall())


def _init_meta(db: Database, cabinet_id: str) -> None:
    with db.atomic():
        for key, value in (
            ("cabinet_id", cabinet_id),
            ("created_at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
            ("projections_version", str(PROJECTIONS_VERSION)),
        ):
            db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", [key, value])


def _create(path: Path, cabinet_id: str) -> None:
    """Build a new ledger beside the target and rename it into place, so a crash never
    leaves a half-made (or empty) file under the real name."""
    tmp = path.with_name(path.name + ".new")
    for leftover in (tmp, *(Path(f"{tmp}{s}") for s in ("-wal", "-shm", "-journal"))):
        leftover.unlink(missing_ok=True)
    conn = connect(tmp)
    try:
        db = Database(conn)
        if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] != "wal":
            raise LedgerError(f"cannot put {tmp} in WAL mode")
        migrations.apply(db)
        _init_meta(db, cabinet_id)
    finally:
        conn.close()
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_path(path.parent)


def _precheck(path: Path) -> None:
    """Check the file on a read-only connection first: closing it never checkpoints a WAL
    into a damaged file, so the copy kept aside is exactly what was found."""
    problems: list[str] = []
    conn = None
    try:
        conn = connect(path, readonly=True)
        problems = [r[0] for r in conn.execute("PRAGMA quick_check(5)").fetchall()]
        if problems != ["ok"]:
            problems = ["quick_check: " + "; ".join(p.replace("\n", "; ") for p in problems)]
        elif not conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlite_migrations'"
        ).fetchone():
            problems = ["not a cabinet ledger (no migrations table)"]
    except sqlite3.DatabaseError as exc:
        if is_write_refused(exc):
            raise LedgerUnwritable(path, f"cannot even read it, the card refuses writes: {exc}") from exc
        if not is_corruption(exc):
            raise LedgerError(f"cannot read ledger {path}: {exc}") from exc
        problems = [f"SQLite says: {exc} ({getattr(exc, 'sqlite_errorname', '?')})"]
    finally:
        if conn is not None:
            conn.close()
    if problems != ["ok"]:
        raise LedgerCorrupt(path, "; ".join(problems), keep_aside(path))


def _prepare(db: Database, path: Path, cabinet_id: str) -> None:
    """Check an existing file, migrate it and rebuild projections if their meaning changed."""
    conn = db.conn
    if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] != "wal":
        raise LedgerError(f"cannot put {path} in WAL mode")
    applied = applied_versions(db)
    if applied != list(MIGRATION_NAMES[: len(applied)]):
        raise LedgerMismatch(
            f"ledger {path} has schema migrations {applied}; this software knows {list(MIGRATION_NAMES)}"
            " (written by newer software? do not downgrade, restore a backup instead)"
        )
    if len(applied) < SCHEMA_VERSION:
        _copy_before_migration(db, path, len(applied))
        migrations.apply(db)
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    if "cabinet_id" not in meta:
        raise LedgerCorrupt(path, "meta has no cabinet_id", keep_aside(path))
    if meta["cabinet_id"] != cabinet_id:
        raise LedgerMismatch(f"ledger {path} belongs to cabinet {meta['cabinet_id']!r}, not {cabinet_id!r}")
    if meta.get("projections_version") != str(PROJECTIONS_VERSION):
        with db.atomic():
            rebuild_projections(conn)
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('projections_version', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(PROJECTIONS_VERSION),),
            )


def _copy_before_migration(db: Database, path: Path, version: int) -> None:
    """Keep ``<name>.pre-v<N>`` (the file as it was at schema vN) before migrating it."""
    target = path.with_name(f"{path.name}.pre-v{version}")
    if target.exists():
        return
    dest = sqlite3.connect(str(target))
    try:
        db.conn.backup(dest)
    finally:
        dest.close()
    fsync_path(target)
