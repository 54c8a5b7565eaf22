"""Applies each cabinet's event batches exactly once in effect, in seq order.

One batch, under a per-cabinet guard (a thread lock in this process, plus a PostgreSQL
transaction-scoped advisory lock shared by every cloud worker):

1. store: every event is inserted into ``cabinet_events`` unless (cabinet, seq) is there. The
   same seq with a DIFFERENT event id means the cabinet's ledger went back in time (restored
   from a backup) and reused seqs: the event is kept in ``cabinet_event_conflicts``, a critical
   ``restore_detected`` alert is raised, and its business effect is still applied (it is a real
   rent or return that must not be lost).
2. apply: from ``fleet_cabinets.applied_seq + 1`` along the contiguous stored events: the
   rental life cycle calls (``RentalService``, idempotent, in their own transactions), then in
   ONE transaction: the new ``applied_seq`` (conditional on the old value), command statuses,
   alerts and the slot inventory. A crash between the two only repeats idempotent calls.
3. the caller acks ``applied_seq``: the highest contiguous seq applied.

Batches may arrive out of order, twice, or at another worker (shared subscription): storing
is idempotent, and applying only ever moves along the contiguous prefix under the guard.
"""

from __future__ import annotations

import fcntl
import json
import logging
import threading
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, text, update

from cloud.alerts import add_alert
from cloud.db import cabinet_event_conflicts, cabinet_events, fleet_cabinets
from cloud.errors import CloudError
from cloud.fleet import alerting
from cloud.fleet.claims import ClaimChecks, Refusal, verify_from_events
from cloud.fleet.commands import apply_command_report
from cloud.fleet.view import SlotChanges, apply_slot_changes, ensure_cabinet
from cloud.rentals import CabinetEvent, RentalError, RentalService
from sync.events import EventType
from sync.messages import EventBatch, WireEvent

log = logging.getLogger(__name__)

RENTAL_TYPES = (EventType.RENTAL_STARTED, EventType.RENTAL_ABORTED, EventType.BATTERY_RETURNED)
APPLY_CHUNK = 2000

ALERT_TYPES: dict[str, str] = {
    EventType.SECURITY_EVENT: "critical",
    EventType.BATTERY_REMOVED_UNEXPECTED: "critical",
    EventType.BATTERY_QUARANTINED: "warning",
    EventType.SLOT_QUARANTINED: "warning",
    EventType.SLOT_FAULT: "warning",
}


_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


class IngestConflict(CloudError, RuntimeError):
    """Another worker moved a cabinet's applied seq while this one held the guard (a bug: say so)."""

    status = 500
    code = "ingest_conflict"


@dataclass
class BatchOutcome:
    """What one batch did: the seq to ack and what was new."""

    cabinet: str
    acked_seq: int
    stored: int = 0
    duplicates: int = 0
    conflicts: int = 0
    applied: int = 0
    errors: list[str] = field(default_factory=list)


def _json(body: Mapping[str, Any]) -> str:
    return json.dumps(dict(body), default=str, separators=(",", ":"))


def _cabinet_event(cabinet: str, e: WireEvent | Mapping[str, Any]) -> CabinetEvent:
    if isinstance(e, WireEvent):
        return CabinetEvent(cabinet, e.seq, e.id, e.type, e.at_wall, e.at_mono, e.boot_id, dict(e.body))
    return CabinetEvent(
        cabinet,
        e["seq"],
        e["event_id"],
        e["type"],
        e["at_wall"],
        e["at_mono"],
        e["boot_id"],
        json.loads(e["body"]),
    )


class EventApplier:
    """The exactly-once ingest of cabinet events into the cloud database (blocking: run in a thread)."""

    def __init__(self, engine: Engine, rentals: RentalService, clock: Callable[[], float]) -> None:
        self.engine = engine
        self.rentals = rentals
        self.clock = clock
        self.claims = ClaimChecks(engine, clock)
        self._pg = engine.dialect.name == "postgresql"
        self._db_key = engine.url.render_as_string(hide_password=True)
        db_file = engine.url.database if not self._pg else None
        self._lock_file = Path(f"{db_file}.ingest-lock") if db_file and db_file != ":memory:" else None

    # --- the guard -------------------------------------------------------------------------

    @contextmanager
    def guard(self, cabinet: str) -> Iterator[None]:
        """Only one holder per cabinet: threads of this process, and every other worker process.

        PostgreSQL: a transaction-scoped advisory lock (released if the worker dies). SQLite: a
        byte-range lock on ``<database>.ingest-lock`` at an offset derived from the cabinet id
        (holding SQLite's own write lock instead would block the rental calls made meanwhile).
        """
        with _LOCKS_GUARD:
            lock = _LOCKS.setdefault((self._db_key, cabinet), threading.Lock())
        with lock:
            if self._pg:
                with self.engine.connect() as conn:
                    conn.execute(
                        text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"ingest:{cabinet}"}
                    )
                    try:
                        yield
                    finally:
                        conn.rollback()
            elif self._lock_file is not None:
                offset = zlib.crc32(cabinet.encode()) % (1 << 20)
                with open(self._lock_file, "a+b") as f:
                    fcntl.lockf(f, fcntl.LOCK_EX, 1, offset)
                    try:
                        yield
                    finally:
                        fcntl.lockf(f, fcntl.LOCK_UN, 1, offset)
            else:
                yield

    # --- one batch ---------------------------------------------------------------------------

    def apply_batch(self, batch: EventBatch, received_at: float | None = None) -> BatchOutcome:
        """Store and apply one batch; returns the seq to ack (highest contiguous applied)."""
        now = self.clock() if received_at is None else received_at
        cab = batch.cabinet
        out = BatchOutcome(cab, 0)
        with self.guard(cab):
            fresh_conflicts = self._store(batch, now, out)
            self._anchor_clocks(batch, now)
            for e in fresh_conflicts:
                self._rental_effect(_cabinet_event(cab, e), out)
            self._apply_stored(cab, out)
        return out

    def applied_seq(self, cabinet: str) -> int:
        with self.engine.connect() as conn:
            v = conn.execute(
                select(fleet_cabinets.c.applied_seq).where(fleet_cabinets.c.cabinet_id == cabinet)
            ).scalar_one_or_none()
        return int(v or 0)

    def _store(self, batch: EventBatch, now: float, out: BatchOutcome) -> list[WireEvent]:
        cab = batch.cabinet
        fresh_conflicts: list[WireEvent] = []
        with self.engine.begin() as conn:
            ensure_cabinet(conn, cab)
            conn.execute(
                update(fleet_cabinets).where(fleet_cabinets.c.cabinet_id == cab).values(last_seen=now)
            )
            stored: dict[int, str] = {
                r.seq: r.event_id
                for r in conn.execute(
                    select(cabinet_events.c.seq, cabinet_events.c.event_id).where(
                        cabinet_events.c.cabinet_id == cab,
                        cabinet_events.c.seq.between(batch.first_seq, batch.last_seq),
                    )
                )
            }
            new = [e for e in batch.events if e.seq not in stored]
            clashes: list[tuple[WireEvent, str | None]] = [
                (e, stored[e.seq]) for e in batch.events if e.seq in stored and stored[e.seq] != e.id
            ]
            out.duplicates = len(batch.events) - len(new) - len(clashes)
            if new:  # an id already stored under another seq is a clash too (never a silent drop)
                taken = set(
                    conn.execute(
                        select(cabinet_events.c.event_id).where(
                            cabinet_events.c.event_id.in_([e.id for e in new])
                        )
                    ).scalars()
                )
                clashes += [(e, None) for e in new if e.id in taken]
                new = [e for e in new if e.id not in taken]
            if new:
                conn.execute(
                    insert(cabinet_events),
                    [
                        {
                            "cabinet_id": cab,
                            "seq": e.seq,
                            "event_id": e.id,
                            "type": e.type,
                            "at_wall": e.at_wall,
                            "at_mono": e.at_mono,
                            "boot_id": e.boot_id,
                            "body": _json(e.body),
                            "received_at": now,
                        }
                        for e in new
                    ],
                )
            out.stored = len(new)
            for e, stored_id in clashes:
                if self._record_conflict(conn, cab, e, stored_id, now):
                    fresh_conflicts.append(e)
            out.conflicts = len(clashes)
        return fresh_conflicts

    def _record_conflict(
        self, conn: Connection, cab: str, e: WireEvent, stored_id: str | None, now: float
    ) -> bool:
        """Keep a clashing event and raise the alert once; True when it was not known before."""
        known = conn.execute(
            select(cabinet_event_conflicts.c.id).where(
                cabinet_event_conflicts.c.cabinet_id == cab, cabinet_event_conflicts.c.event_id == e.id
            )
        ).first()
        if known is not None:
            return False
        conn.execute(
            insert(cabinet_event_conflicts).values(
                cabinet_id=cab,
                seq=e.seq,
                event_id=e.id,
                stored_event_id=stored_id,
                type=e.type,
                at_wall=e.at_wall,
                at_mono=e.at_mono,
                boot_id=e.boot_id,
                body=_json(e.body),
                received_at=now,
            )
        )
        what = (
            f"seq {e.seq} arrived as event {e.id} ({e.type}) but the cloud holds {stored_id} there"
            if stored_id
            else f"event {e.id} ({e.type}) at seq {e.seq} is already stored under another seq"
        )
        log.error(
            "RESTORE DETECTED on cabinet %s: %s. Its ledger was restored from a backup and reuses "
            "seqs; the event is kept in cabinet_event_conflicts and its rental effect applied. "
            "Check the cabinet (docs/fleet.md, 'Restore detected').",
            cab,
            what,
        )
        add_alert(
            conn,
            cab,
            "restore_detected",
            "critical",
            f"ledger restored from a backup? {what}",
            seq=e.seq,
            event_id=e.id,
            at=now,
        )
        return True

    def _anchor_clocks(self, batch: EventBatch, now: float) -> None:
        """The newest event of each boot in a batch that just arrived ties that boot's clock to ours."""
        newest: dict[str, WireEvent] = {}
        for e in batch.events:
            if e.boot_id not in newest or e.at_mono > newest[e.boot_id].at_mono:
                newest[e.boot_id] = e
        for boot, e in newest.items():
            self.rentals.record_clock_anchor(batch.cabinet, boot, e.at_mono, now)

    # --- applying in order -------------------------------------------------------------------

    def _apply_stored(self, cab: str, out: BatchOutcome) -> None:
        applied = self.applied_seq(cab)
        while True:
            with self.engine.connect() as conn:
                rows: list[dict[str, Any]] = [
                    dict(r)
                    for r in conn.execute(
                        select(cabinet_events)
                        .where(cabinet_events.c.cabinet_id == cab, cabinet_events.c.seq > applied)
                        .order_by(cabinet_events.c.seq)
                        .limit(APPLY_CHUNK)
                    ).mappings()
                ]
            run: list[Mapping[str, Any]] = []
            for r in rows:
                if r["seq"] != applied + len(run) + 1:
                    break  # a gap: a batch not here yet; the cabinet sends it again
                run.append(r)
            if not run:
                break
            done: list[Mapping[str, Any]] = []
            try:
                for row in run:
                    if row["type"] in RENTAL_TYPES:
                        self._rental_effect(_cabinet_event(cab, row), out)
                    done.append(row)
            finally:
                if done:
                    self._advance(cab, applied, done, out)
                    applied = done[-1]["seq"]
            if len(run) < len(rows) or len(rows) < APPLY_CHUNK:
                break
        out.acked_seq = applied

    def _rental_effect(self, ev: CabinetEvent, out: BatchOutcome) -> None:
        """The rental life cycle call of one event; a refusal becomes an alert, never a stuck stream.

        The cabinet must be allowed to claim it (``cloud.fleet.claims``): a claim that fails the
        checks is kept in ``cabinet_claims`` for a human, not applied, and the stream moves on.
        """
        kept = self.claims.status_of(ev.cabinet, ev.id)
        if kept in ("open", "resolving", "accepted", "rejected"):
            return  # already kept for (or decided by) a human: never applied behind their back
        try:
            if kept is None:
                refusal = self.claims.check(ev)
                if refusal is not None:
                    with self.engine.begin() as conn:
                        self.claims.keep(conn, ev, refusal)
                    out.errors.append(refusal.reason)
                    return
            if ev.type == EventType.RENTAL_STARTED:
                self.rentals.on_rental_started(ev.cabinet, ev)
            elif ev.type == EventType.RENTAL_ABORTED:
                self.rentals.on_rental_aborted(ev.cabinet, ev)
            elif ev.type == EventType.BATTERY_RETURNED:
                closed = self.rentals.on_battery_returned(ev.cabinet, ev)
                if ev.body.get("sn"):
                    self.claims.keep_pending_return(ev, closed)
        except RentalError as e:
            log.warning("cabinet %s seq %d (%s): %s", ev.cabinet, ev.seq, ev.type, e)
            out.errors.append(str(e))
            with self.engine.begin() as conn:
                add_alert(conn, ev.cabinet, "ingest_error", "warning", str(e), seq=ev.seq, event_id=ev.id,
                          at=self.clock())  # fmt: skip

    def _advance(self, cab: str, applied: int, run: list[Mapping[str, Any]], out: BatchOutcome) -> None:
        """Move applied_seq over ``run`` with its bookkeeping, in one transaction."""
        now = self.clock()
        slots = SlotChanges()
        with self.engine.begin() as conn:
            moved = conn.execute(
                update(fleet_cabinets)
                .where(fleet_cabinets.c.cabinet_id == cab, fleet_cabinets.c.applied_seq == applied)
                .values(applied_seq=run[-1]["seq"])
            ).rowcount
            if moved != 1:
                raise IngestConflict(
                    f"cabinet {cab}: applied_seq is no longer {applied} (another worker without the guard?)"
                )
            for r in run:
                body = json.loads(r["body"])
                self._bookkeeping(conn, cab, r, body, now)
                slots.add(r["type"], body, r["at_wall"])
            apply_slot_changes(conn, cab, slots)
            verify_from_events(conn, cab, run, now)
        out.applied += len(run)

    def _bookkeeping(
        self, conn: Connection, cab: str, r: Mapping[str, Any], body: dict[str, Any], now: float
    ) -> None:
        t = r["type"]
        if t in (EventType.COMMAND_RECEIVED, EventType.COMMAND_RESULT):
            sent_to = apply_command_report(conn, cab, t, body, now)
            if sent_to is not None:  # a status of another cabinet's command: kept, never applied
                ev = _cabinet_event(cab, r)
                self.claims.keep(
                    conn, ev, Refusal(f"status of command {body.get('cmd_id')}, sent to {sent_to}")
                )
                return
        if t == EventType.COMMAND_RESULT:
            if not body.get("ok"):
                add_alert(conn, cab, "command_failed", "warning",
                          f"command {body.get('cmd_id')}: {body.get('detail')}", seq=r["seq"],
                          event_id=r["event_id"], at=now)  # fmt: skip
        if t in ALERT_TYPES:
            kind = str(body.get("kind") or t) if t == EventType.SECURITY_EVENT else t
            if kind == "foreign_battery":
                severity = "warning"
            else:
                severity = ALERT_TYPES[t]
            detail = ", ".join(f"{k}={v}" for k, v in body.items() if v is not None)
            add_alert(conn, cab, kind, severity, detail, seq=r["seq"], event_id=r["event_id"], at=now)
        # board down/up, empty/full, certificate expiry: raised once, cleared when it ends
        alerting.on_event(conn, cab, t, body, seq=r["seq"], event_id=r["event_id"], at=now)
