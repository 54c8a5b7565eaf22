"""``cabinet ledger verify``: prove the file is sound, or say exactly what is wrong and where.

Checks, in order: SQLite integrity; schema version and append-only triggers; seq gapless
from 1; every body decodes, validates and is canonical; a replay of all events through
``projections.apply`` into a fresh in-memory database succeeds and equals the file's
projections; the domain invariants hold on the file's projections (each battery in
exactly one place; each rental one start and at most one end; ack not beyond the end).
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from .errors import LedgerError
from .events import EventType, LedgerRentalState, encode_body, validate_body
from .files import connect
from .projections import apply
from .replay import iter_events
from .schema import MIGRATION_NAMES, PROJECTION_TABLES, create_schema

MAX_PER_CHECK = 20


@dataclass(frozen=True)
class Problem:
    """One failed check, with where it is (any of seq, slot, battery sn, rental)."""

    check: str
    message: str
    seq: int | None = None
    slot: int | None = None
    sn: str | None = None
    rental_id: str | None = None

    def __str__(self) -> str:
        where = [
            f"{k} {v}"
            for k, v in (
                ("seq", self.seq),
                ("slot", self.slot),
                ("battery", self.sn),
                ("rental", self.rental_id),
            )
            if v is not None
        ]
        return f"[{self.check}] {self.message}" + (f" ({', '.join(where)})" if where else "")


@dataclass
class VerifyReport:
    """Outcome of a verification: ``ok`` only when there is no problem at all."""

    events: int = 0
    last_seq: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: Problem) -> None:
        same = sum(1 for p in self.problems if p.check == problem.check)
        if same < MAX_PER_CHECK:
            self.problems.append(problem)
        elif same == MAX_PER_CHECK:
            self.problems.append(Problem(problem.check, "more problems of this kind not shown"))

    def summary(self) -> str:
        head = f"{self.events} events, last seq {self.last_seq}: "
        if self.ok:
            return head + "OK (integrity, seq, bodies, replay = projections, invariants)"
        return head + f"{len(self.problems)} problem(s)\n" + "\n".join(f"  {p}" for p in self.problems)


def verify(path: str | Path) -> VerifyReport:
    """Verify a ledger file, read-only (safe while the cabinet is running: WAL readers)."""
    path = Path(path)
    if not path.exists():
        raise LedgerError(f"no ledger at {path}")
    try:
        conn = connect(path, readonly=True)
    except sqlite3.DatabaseError as exc:
        return VerifyReport(problems=[Problem("integrity", f"SQLite cannot read the file: {exc}")])
    try:
        return verify_db(conn)
    finally:
        conn.close()


def verify_db(conn: sqlite3.Connection) -> VerifyReport:
    """Verify an open ledger connection (also used on in-memory ledgers in tests)."""
    report = VerifyReport()
    try:
        result = [r[0] for r in conn.execute("PRAGMA integrity_check(20)").fetchall()]
    except sqlite3.DatabaseError as exc:
        report.add(Problem("integrity", f"SQLite cannot read the file: {exc}"))
        return report
    if result != ["ok"]:
        for line in result:
            report.add(Problem("integrity", line))
        return report
    if not _schema_ok(conn, report):
        return report
    _check_seq(conn, report)
    _check_bodies(conn, report)
    replayed = _replay(conn, report)
    _compare(conn, replayed, report)
    replayed.close()
    _check_invariants(conn, report)
    return report


def _schema_ok(conn: sqlite3.Connection, report: VerifyReport) -> bool:
    try:
        applied = [r[0] for r in conn.execute("SELECT name FROM _sqlite_migrations ORDER BY rowid")]
    except sqlite3.DatabaseError:
        report.add(Problem("schema", "not a cabinet ledger: no _sqlite_migrations table"))
        return False
    if applied != list(MIGRATION_NAMES):
        report.add(
            Problem(
                "schema",
                f"file has migrations {applied}, this software {list(MIGRATION_NAMES)}; "
                "open it once with the cabinet to migrate, or use matching software",
            )
        )
        return False
    triggers = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    for name in ("events_no_update", "events_no_delete"):
        if name not in triggers:
            report.add(
                Problem("schema", f"trigger {name} is missing: events are not protected as append-only")
            )
    return True


def _check_seq(conn: sqlite3.Connection, report: VerifyReport) -> None:
    expected = 1
    for (seq,) in conn.execute("SELECT seq FROM events ORDER BY seq"):
        if seq != expected:
            missing = seq - expected
            report.add(
                Problem(
                    "seq",
                    f"events jump from seq {expected - 1} to seq {seq} ({missing} missing)",
                    seq=expected,
                )
            )
        expected = seq + 1
        report.events += 1
    report.last_seq = expected - 1
    acked = conn.execute("SELECT acked_seq FROM sync_state WHERE id = 1").fetchone()
    if acked is None:
        report.add(Problem("sync", "sync_state row is missing"))
    elif not 0 <= acked[0] <= report.last_seq:
        report.add(Problem("sync", f"acked_seq {acked[0]} is beyond the last event {report.last_seq}"))


def _check_bodies(conn: sqlite3.Connection, report: VerifyReport) -> None:
    import cbor2

    for seq, type_, blob in conn.execute("SELECT seq, type, body FROM events ORDER BY seq"):
        try:
            body = cbor2.loads(blob, allow_duplicate_keys=False, max_depth=16)
            validate_body(type_, body)
            if encode_body(body) != blob:
                report.add(Problem("body", f"{type_} body is not in canonical form (altered?)", seq=seq))
        except (LedgerError, ValueError, cbor2.CBORError) as exc:
            report.add(Problem("body", f"{type_} body is invalid: {exc}", seq=seq))


def _replay(conn: sqlite3.Connection, report: VerifyReport) -> Database:
    """Replay every readable event into a fresh in-memory ledger with the live apply()."""
    fresh = Database(memory=True)
    create_schema(fresh)
    events = iter_events(conn)
    with fresh.atomic():
        while True:
            try:
                event = next(events)
            except StopIteration:
                break
            except Exception as exc:  # an undecodable body, already reported by the body check
                report.add(Problem("replay", f"replay stopped: cannot read an event ({exc})"))
                break
            fresh.conn.execute("SAVEPOINT ev")
            try:
                apply(fresh.conn, event)
            except LedgerError as exc:
                fresh.conn.execute("ROLLBACK TO ev")
                report.add(Problem("replay", f"event breaks a rule on replay: {exc}", seq=event.seq))
            fresh.conn.execute("RELEASE ev")
    return fresh


def _rows(
    conn: sqlite3.Connection, table: str, key: tuple[str, ...]
) -> dict[tuple[Any, ...], dict[str, Any]]:
    cur = conn.execute(f"SELECT * FROM {table}")
    names = [d[0] for d in cur.description]
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in cur.fetchall():
        row = dict(zip(names, r, strict=True))
        out[tuple(row[k] for k in key)] = row
    return out


def _label(table: str, key: tuple[str, ...], values: tuple[Any, ...]) -> str:
    return f"{table} row " + ", ".join(f"{c}={v!r}" for c, v in zip(key, values, strict=True))


def _where(key: tuple[str, ...], values: tuple[Any, ...]) -> dict[str, Any]:
    found = dict(zip(key, values, strict=True))
    return {"slot": found.get("slot"), "sn": found.get("sn"), "rental_id": found.get("rental_id")}


def _compare(conn: sqlite3.Connection, replayed: Database, report: VerifyReport) -> None:
    for table, key in PROJECTION_TABLES.items():
        mine, theirs = _rows(conn, table, key), _rows(replayed.conn, table, key)
        for k in sorted(set(mine) | set(theirs), key=repr):
            where, label = _where(key, k), _label(table, key, k)
            if k not in theirs:
                report.add(Problem("projection", f"{label} is in the file but not in a replay", **where))
            elif k not in mine:
                report.add(
                    Problem("projection", f"{label} is missing from the file (replay has it)", **where)
                )
            else:
                for col, want in theirs[k].items():
                    got = mine[k].get(col)
                    if got != want:
                        msg = f"{label}: {col} is {got!r} in the file, {want!r} by replay"
                        report.add(Problem("projection", msg, **where))


def _check_invariants(conn: sqlite3.Connection, report: VerifyReport) -> None:
    """Invariants on the file's own projections (they catch edits made consistently)."""
    slots = _rows(conn, "slots", ("slot",))
    batteries = _rows(conn, "batteries", ("sn",))
    rentals = _rows(conn, "rentals", ("rental_id",))
    in_slots: dict[str, list[int]] = defaultdict(list)
    for (n,), s in slots.items():
        if s["sn"] is not None:
            in_slots[s["sn"]].append(n)
    on_rental: dict[str, list[str]] = defaultdict(list)
    for (rid,), r in rentals.items():
        if r["state"] == LedgerRentalState.OPEN and r["sn"] is not None:
            on_rental[r["sn"]].append(rid)
    for sn in sorted(set(in_slots) | set(on_rental) | {k[0] for k in batteries}):
        locs = [f"slot {n}" for n in in_slots.get(sn, [])] + [f"rental {r}" for r in on_rental.get(sn, [])]
        slot = in_slots[sn][0] if in_slots.get(sn) else None
        b = batteries.get((sn,))
        if b is None:
            report.add(
                Problem("invariant", f"battery {sn} is in {' and '.join(locs)} but unknown", slot=slot, sn=sn)
            )
            continue
        if len(locs) > 1:
            report.add(
                Problem(
                    "invariant",
                    f"battery {sn} is in more than one place: {' and '.join(locs)}",
                    slot=slot,
                    sn=sn,
                )
            )
        if b["place"] == "gone":
            if not b["gone_reason"]:
                report.add(Problem("invariant", f"battery {sn} is gone without a reason", sn=sn))
            if locs:
                report.add(
                    Problem(
                        "invariant",
                        f"battery {sn} is marked gone but is in {' and '.join(locs)}",
                        slot=slot,
                        sn=sn,
                    )
                )
            continue
        declared = f"slot {b['slot']}" if b["place"] == "slot" else f"rental {b['rental_id']}"
        if declared not in locs:
            actual = " and ".join(locs) or "no slot and no open rental"
            report.add(
                Problem(
                    "invariant",
                    f"battery {sn} should be in {declared} but is in {actual}",
                    slot=b["slot"] if b["place"] == "slot" else slot,
                    sn=sn,
                )
            )
    _check_rental_events(conn, rentals, report)


def _check_rental_events(
    conn: sqlite3.Connection, rentals: dict[tuple[Any, ...], dict[str, Any]], report: VerifyReport
) -> None:
    """Each rental: at most one start event and at most one end, in that order."""
    import cbor2

    starts: dict[str, list[int]] = defaultdict(list)
    aborts: dict[str, list[int]] = defaultdict(list)
    started, aborted = EventType.RENTAL_STARTED, EventType.RENTAL_ABORTED
    for seq, type_, blob in conn.execute(
        f"SELECT seq, type, body FROM events WHERE type IN ('{started}', '{aborted}') ORDER BY seq"
    ):
        try:
            rid = cbor2.loads(blob).get("rental_id")
        except (cbor2.CBORError, AttributeError):
            continue  # reported by the body check
        (starts if type_ == started else aborts)[rid].append(seq)
    for rid, seqs in starts.items():
        if len(seqs) > 1:
            report.add(
                Problem(
                    "invariant",
                    f"rental {rid} started {len(seqs)} times (seqs {seqs})",
                    seq=seqs[1],
                    rental_id=rid,
                )
            )
        if aborts.get(rid):
            report.add(
                Problem(
                    "invariant",
                    f"rental {rid} was started and also aborted",
                    seq=aborts[rid][0],
                    rental_id=rid,
                )
            )
    for rid, seqs in aborts.items():
        if len(seqs) > 1:
            report.add(
                Problem("invariant", f"rental {rid} aborted {len(seqs)} times", seq=seqs[1], rental_id=rid)
            )
    for (rid,), r in rentals.items():
        start, ended = r["started_seq"], r["ended_seq"]
        state = r["state"]
        S = LedgerRentalState
        bad = (
            (state == S.OPEN and (start is None or ended is not None))
            or (state in (S.RETURNED, S.CLOSED) and (start is None or ended is None or ended <= start))
            or (state == S.ABORTED and (start is not None or ended is None))
            or (state == S.REQUESTED and (start is not None or ended is not None))
        )
        if bad:
            report.add(
                Problem(
                    "invariant",
                    f"rental {rid} is {state} with start seq {start}, end seq {ended}",
                    rental_id=rid,
                )
            )
