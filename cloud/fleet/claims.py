"""What a cabinet may claim about rentals and commands, and the claims the cloud did not believe.

A cabinet's certificate proves which cabinet speaks, not that what it says is true: a cloned
certificate could close another renter's rental with a back-dated ``battery_returned``, start a
pass rental on someone else's pass, or report the result of a command sent to another cabinet.
Ingest (``cloud.fleet.ingest``) asks :class:`ClaimChecks` before it applies an event:

- ``rental_started`` / ``rental_aborted`` of a rental the cloud knows: only from the cabinet the
  rental was requested at (the app rental's eject command went there), and a pass rental only
  with the pass it was started with;
- ``rental_started`` of a new offline pass rental: the pass exists, and at the event's time
  (its clock-anchored true time) it was issued, not expired and not revoked; the cabinet is
  registered; a ``user`` the cabinet names must be the pass's user (the renter is always the
  pass's user, never one the cabinet names);
- ``battery_returned`` that closes a rental: the returned serial is the rental's battery, and
  the return is not before the take (same boot: the monotonic clocks; else the anchored times,
  ``RETURN_TOLERANCE_S`` of slack). After it is applied, the return stays ``pending``
  verification until that cabinet's inventory shows the serial (a telemetry sample taken at or
  after the return, or a later event of that cabinet with the serial in it); not seen within
  ``RETURN_VERIFY_TIMEOUT_S`` -> ``open`` with a critical alert;
- ``command_received`` / ``command_result``: only from the cabinet the command was sent to
  (``cloud.fleet.commands.apply_command_report``).

A claim that fails is KEPT in ``cabinet_claims`` (status ``open``, not applied) with a critical
``cabinet_claim`` alert naming the cabinet; ingest still acks the event (it is durably kept),
so the cabinet's outbox never stalls on it. An operator resolves it
(``POST /api/claims/{id}/resolve``): ``apply`` runs the original application, ``reject`` keeps
it unapplied. Docs: docs/fleet.md ("What a cabinet may claim"), docs/security.md.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, RowMapping, select, update

from cloud.alerts import add_alert, insert_ignore
from cloud.db import cabinet_claims, cabinets, clock_anchors, commands, passes, rentals
from cloud.errors import CloudError
from cloud.fleet.commands import set_command_status
from cloud.pricing import CabinetTime, ClockAnchor, true_time
from cloud.rentals import CabinetEvent, RentalError, RentalService, rental_for_return
from sync.events import EventType, RentalSource, RentalStatus
from sync.messages import Telemetry

log = logging.getLogger(__name__)

RETURN_TOLERANCE_S = 5.0  # anchored clocks of two cabinets: slack before a return counts as before the take
PASS_CLOCK_SLACK_S = 300.0  # anchored event time vs. a pass's issue / expiry times
RETURN_VERIFY_TIMEOUT_S = 900.0  # a pending return not seen in the inventory by then: open for a human
RENTAL_CLAIMS = (EventType.RENTAL_STARTED, EventType.RENTAL_ABORTED, EventType.BATTERY_RETURNED)
COMMAND_CLAIMS = (EventType.COMMAND_RECEIVED, EventType.COMMAND_RESULT)
# later events of the same cabinet that put a serial in one of its slots (or take it out of one)
INVENTORY_EVIDENCE = (
    EventType.BATTERY_SEEN,
    EventType.RENTAL_STARTED,
    EventType.BATTERY_REMOVED_UNEXPECTED,
    EventType.BATTERY_GONE,
)
UNRESOLVED = ("pending", "open", "resolving")


class ClaimNotFound(CloudError, LookupError):
    """No such claim (the message says which)."""

    status = 404
    code = "not_found"


class ClaimConflict(CloudError, RuntimeError):
    """The claim is not open for this action, or applying it failed (the message says why)."""

    status = 409
    code = "conflict"


@dataclass(frozen=True)
class Refusal:
    """Why a claim is not believed, and the rental it concerns (if any)."""

    reason: str
    rental_id: str | None = None


def event_json(ev: CabinetEvent) -> str:
    return json.dumps(dict(ev.body), default=str, separators=(",", ":"))


def _anchors(conn: Connection, *times: CabinetTime) -> dict[tuple[str, str], ClockAnchor]:
    out: dict[tuple[str, str], ClockAnchor] = {}
    for cab, boot in {(t.cabinet, t.boot_id) for t in times}:
        a = conn.execute(
            select(clock_anchors).where(clock_anchors.c.cabinet_id == cab, clock_anchors.c.boot_id == boot)
        ).first()
        if a is not None:
            out[(cab, boot)] = ClockAnchor(a.cabinet_id, a.boot_id, a.at_mono, a.true_wall)
    return out


class ClaimChecks:
    """Decides whether a cabinet may claim an event, and keeps the claims it may not."""

    def __init__(self, engine: Engine, clock: Callable[[], float]) -> None:
        self.engine = engine
        self.clock = clock

    # --- the checks --------------------------------------------------------------------------

    def check(self, ev: CabinetEvent) -> Refusal | None:
        """None when ``ev.cabinet`` may claim ``ev``; else why not."""
        with self.engine.connect() as conn:
            if ev.type == EventType.RENTAL_STARTED:
                return self._check_start(conn, ev)
            if ev.type == EventType.RENTAL_ABORTED:
                return self._check_known_rental(conn, ev)
            if ev.type == EventType.BATTERY_RETURNED:
                return self._check_return(conn, ev)
        return None

    def _check_known_rental(self, conn: Connection, ev: CabinetEvent) -> Refusal | None:
        rid = str(ev.body.get("rental_id") or "")
        row = conn.execute(select(rentals).where(rentals.c.id == rid)).mappings().first() if rid else None
        if row is None:
            return None  # unknown: the rental service refuses it as before (an ingest_error alert)
        if row["cabinet_id"] != ev.cabinet:
            return Refusal(
                f"{ev.type} of rental {rid}, which was requested at cabinet {row['cabinet_id']}", rid
            )
        if row["cmd_id"]:
            sent_to = conn.execute(
                select(commands.c.cabinet_id).where(commands.c.cmd_id == row["cmd_id"])
            ).scalar()
            if sent_to is not None and sent_to != ev.cabinet:
                return Refusal(f"{ev.type} of rental {rid}, whose eject went to cabinet {sent_to}", rid)
        if row["source"] == "pass" and ev.body.get("pass_id") not in (None, row["pass_id"]):
            return Refusal(f"{ev.type} of pass rental {rid} names another pass", rid)
        return None

    def _check_start(self, conn: Connection, ev: CabinetEvent) -> Refusal | None:
        rid = str(ev.body.get("rental_id") or "")
        if not rid:
            return None
        known = conn.execute(select(rentals.c.id).where(rentals.c.id == rid)).first()
        if known is not None:
            return self._check_known_rental(conn, ev)
        if ev.body.get("source") != RentalSource.PASS:
            return None  # an app rental the cloud never requested: refused by the rental service
        if conn.execute(select(cabinets.c.id).where(cabinets.c.id == ev.cabinet)).first() is None:
            return Refusal(f"pass rental {rid} from cabinet {ev.cabinet}, which is not registered", rid)
        pass_id = ev.body.get("pass_id")
        p = conn.execute(select(passes).where(passes.c.pass_id == str(pass_id))).mappings().first()
        if p is None:
            return Refusal(f"pass rental {rid} with unknown pass {pass_id!r}", rid)
        named = ev.body.get("user")
        if named not in (None, "") and str(named) != str(p["user_id"]):
            return Refusal(f"pass rental {rid} names user {named!r}, but pass {pass_id} is not theirs", rid)
        at, _ = true_time(ev.time, _anchors(conn, ev.time))
        if p["revoked_at"] is not None and p["revoked_at"] <= at:
            return Refusal(f"pass rental {rid} with pass {pass_id}, revoked before the rental", rid)
        if at > p["expires_at"] + PASS_CLOCK_SLACK_S:
            return Refusal(f"pass rental {rid} with pass {pass_id}, expired at {p['expires_at']:.0f}", rid)
        if at < p["issued_at"] - PASS_CLOCK_SLACK_S:
            return Refusal(f"pass rental {rid} with pass {pass_id}, dated before the pass was issued", rid)
        return None

    def _check_return(self, conn: Connection, ev: CabinetEvent) -> Refusal | None:
        """Mirrors the rental ``on_battery_returned`` would close; a return closing nothing is an orphan."""
        if conn.execute(select(rentals.c.id).where(rentals.c.end_event_id == ev.id)).first() is not None:
            return None  # applied before: a redelivery
        sn = ev.body.get("sn")
        rid = ev.body.get("rental_id")
        row = rental_for_return(conn, rid, sn)
        if row is None or row["status"] != RentalStatus.ACTIVE:
            return None
        if not sn or (row["battery_sn"] and row["battery_sn"] != sn):
            return Refusal(
                f"return of {sn!r} for rental {row['id']}, whose battery is {row['battery_sn']!r}", row["id"]
            )
        start = CabinetTime(row["cabinet_id"], row["start_wall"], row["start_mono"], row["start_boot_id"])
        end = ev.time
        if start.cabinet == end.cabinet and start.boot_id == end.boot_id:
            early = start.at_mono - end.at_mono
            tolerance = 0.0
        else:
            anchors = _anchors(conn, start, end)
            early = true_time(start, anchors)[0] - true_time(end, anchors)[0]
            tolerance = RETURN_TOLERANCE_S
        if early > tolerance:
            return Refusal(f"return of {sn} dated {early:.0f} s before rental {row['id']} took it", row["id"])
        return None

    # --- keeping claims ------------------------------------------------------------------------

    def keep(self, conn: Connection, ev: CabinetEvent, refusal: Refusal) -> None:
        """Store a refused claim (once) and raise the alert naming the cabinet."""
        now = self.clock()
        self._insert(conn, ev, refusal.reason, "open", False, refusal.rental_id, now, None)
        log.warning("cabinet %s seq %d: claim not believed: %s", ev.cabinet, ev.seq, refusal.reason)
        add_alert(
            conn,
            ev.cabinet,
            "cabinet_claim",
            "critical",
            f"cabinet {ev.cabinet} claims {ev.type} (seq {ev.seq}): {refusal.reason}; kept, not applied "
            f"(resolve at /api/claims)",
            seq=ev.seq,
            event_id=ev.id,
            at=now,
        )

    def keep_pending_return(self, ev: CabinetEvent, rental_id: str | None) -> None:
        """An applied return waits for the cabinet's inventory to show the serial."""
        now = self.clock()
        with self.engine.begin() as conn:
            self._insert(
                conn,
                ev,
                "returned serial not yet seen in the cabinet's inventory",
                "pending",
                True,
                rental_id,
                now,
                now + RETURN_VERIFY_TIMEOUT_S,
            )

    def _insert(
        self,
        conn: Connection,
        ev: CabinetEvent,
        reason: str,
        status: str,
        applied: bool,
        rental_id: str | None,
        now: float,
        deadline: float | None,
    ) -> None:
        sn = ev.body.get("sn")
        insert_ignore(
            conn,
            cabinet_claims,
            {
                "cabinet_id": ev.cabinet,
                "seq": ev.seq,
                "event_id": ev.id,
                "type": ev.type,
                "at_wall": ev.at_wall,
                "at_mono": ev.at_mono,
                "boot_id": ev.boot_id,
                "body": event_json(ev),
                "reason": reason[:2000],
                "status": status,
                "applied": applied,
                "rental_id": rental_id,
                "battery_sn": str(sn)[:64] if sn else None,
                "created_at": now,
                "deadline": deadline,
            },
        )

    def status_of(self, cabinet: str, event_id: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(
                select(cabinet_claims.c.status).where(
                    cabinet_claims.c.cabinet_id == cabinet, cabinet_claims.c.event_id == event_id
                )
            ).scalar()


# --- verifying returns against the inventory -------------------------------------------------


def _verify(conn: Connection, cabinet: str, sn: str, where: Any, how: str, now: float) -> int:
    return conn.execute(
        update(cabinet_claims)
        .where(
            cabinet_claims.c.cabinet_id == cabinet,
            cabinet_claims.c.battery_sn == sn,
            cabinet_claims.c.status == "pending",
            where,
        )
        .values(status="accepted", resolved_at=now, resolution=how)
    ).rowcount


def verify_from_events(conn: Connection, cabinet: str, rows: Iterable[Mapping[str, Any]], now: float) -> None:
    """Later events of the same cabinet naming a serial confirm its pending returns before them."""
    for r in rows:
        if r["type"] not in INVENTORY_EVIDENCE:
            continue
        sn = json.loads(r["body"]).get("sn")
        if sn:
            _verify(
                conn,
                cabinet,
                str(sn),
                cabinet_claims.c.seq < r["seq"],
                f"seen: {r['type']} at seq {r['seq']}",
                now,
            )


def verify_from_telemetry(engine: Engine, tm: Telemetry, now: float) -> int:
    """A telemetry sample listing a serial in a slot confirms that cabinet's pending returns of it."""
    confirmed = 0
    with engine.begin() as conn:
        for s in tm.samples:
            if s.battery:
                confirmed += _verify(
                    conn,
                    tm.cabinet,
                    s.battery,
                    cabinet_claims.c.at_wall <= s.at,
                    f"seen in telemetry: slot {s.slot}",
                    now,
                )
    return confirmed


def expire_pending(engine: Engine, now: float) -> list[int]:
    """Pending returns not seen in the inventory by their deadline: open for a human, alert raised."""
    with engine.begin() as conn:
        overdue = (
            conn.execute(
                select(cabinet_claims).where(
                    cabinet_claims.c.status == "pending", cabinet_claims.c.deadline <= now
                )
            )
            .mappings()
            .all()
        )
        for c in overdue:
            reason = (
                f"returned serial {c['battery_sn']} not seen in cabinet {c['cabinet_id']}'s inventory within "
                f"{RETURN_VERIFY_TIMEOUT_S:.0f} s (rental {c['rental_id']} was closed by it)"
            )
            conn.execute(
                update(cabinet_claims)
                .where(cabinet_claims.c.id == c["id"], cabinet_claims.c.status == "pending")
                .values(status="open", reason=reason)
            )
            add_alert(
                conn,
                c["cabinet_id"],
                "return_unverified",
                "critical",
                reason,
                seq=c["seq"],
                event_id=c["event_id"],
                at=now,
            )
    return [c["id"] for c in overdue]


# --- the operator's side ---------------------------------------------------------------------


def claim_json(r: RowMapping | Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": r["id"],
        "cabinet": r["cabinet_id"],
        "seq": r["seq"],
        "event_id": r["event_id"],
        "type": r["type"],
        "at_wall": r["at_wall"],
        "body": json.loads(r["body"]),
        "reason": r["reason"],
        "status": r["status"],
        "applied": bool(r["applied"]),
        "rental_id": r["rental_id"],
        "battery_sn": r["battery_sn"],
        "created_at": r["created_at"],
        "deadline": r["deadline"],
        "resolved_by": r["resolved_by"],
        "resolved_at": r["resolved_at"],
        "resolution": r["resolution"],
    }


def list_claims(
    engine: Engine, status: str = "open", cabinet: str | None = None, limit: int = 200
) -> list[dict[str, Any]]:
    """Claims by status (``all`` for every one), newest first."""
    q = select(cabinet_claims).order_by(cabinet_claims.c.id.desc()).limit(limit)
    if status != "all":
        q = q.where(cabinet_claims.c.status == status)
    if cabinet:
        q = q.where(cabinet_claims.c.cabinet_id == cabinet)
    with engine.connect() as conn:
        return [claim_json(r) for r in conn.execute(q).mappings()]


def get_claim(engine: Engine, claim_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        r = conn.execute(select(cabinet_claims).where(cabinet_claims.c.id == claim_id)).mappings().first()
    if r is None:
        raise ClaimNotFound(f"no claim {claim_id}")
    return claim_json(r)


def apply_claim(engine: Engine, rentals_: RentalService, claim: Mapping[str, Any], now: float) -> None:
    """Run the original application of a kept claim (what ingest would have done had it believed it)."""
    with engine.connect() as conn:
        r = conn.execute(select(cabinet_claims).where(cabinet_claims.c.id == claim["id"])).mappings().one()
    ev = CabinetEvent(
        r["cabinet_id"],
        r["seq"],
        r["event_id"],
        r["type"],
        r["at_wall"],
        r["at_mono"],
        r["boot_id"],
        json.loads(r["body"]),
    )
    if ev.type == EventType.RENTAL_STARTED:
        rentals_.on_rental_started(ev.cabinet, ev)
    elif ev.type == EventType.RENTAL_ABORTED:
        rentals_.on_rental_aborted(ev.cabinet, ev)
    elif ev.type == EventType.BATTERY_RETURNED:
        rentals_.on_battery_returned(ev.cabinet, ev)
    elif ev.type in COMMAND_CLAIMS:
        with engine.begin() as conn:
            set_command_status(conn, ev.type, ev.body, now)


def resolve(
    engine: Engine,
    rentals_: RentalService,
    claim_id: int,
    action: str,
    reason: str,
    operator_id: int,
    now: float,
) -> dict[str, Any]:
    """An operator's decision on an open (or pending) claim: ``apply`` or ``reject``.

    ``apply`` runs the original application once (a claim already applied, an unverified
    return, is only accepted); ``reject`` leaves it unapplied (an applied return stays closed:
    the decision is recorded and alerted for the money to be recovered by hand).
    """
    if action not in ("apply", "reject"):
        raise ClaimConflict(f"unknown action {action!r}: apply or reject")
    claim = get_claim(engine, claim_id)
    with engine.begin() as conn:
        taken = conn.execute(
            update(cabinet_claims)
            .where(cabinet_claims.c.id == claim_id, cabinet_claims.c.status.in_(("pending", "open")))
            .values(status="resolving")
        ).rowcount
    if not taken:
        raise ClaimConflict(f"claim {claim_id} is {claim['status']}, not open")
    applied = claim["applied"]
    if action == "apply" and not applied:
        try:
            apply_claim(engine, rentals_, claim, now)
        except RentalError as e:
            with engine.begin() as conn:
                conn.execute(
                    update(cabinet_claims)
                    .where(cabinet_claims.c.id == claim_id)
                    .values(status=claim["status"])
                )
            raise ClaimConflict(f"claim {claim_id} cannot be applied: {e}") from e
        applied = True
    with engine.begin() as conn:
        conn.execute(
            update(cabinet_claims)
            .where(cabinet_claims.c.id == claim_id)
            .values(
                status="accepted" if action == "apply" else "rejected",
                applied=applied,
                resolved_by=operator_id,
                resolved_at=now,
                resolution=reason[:2000],
            )
        )
        if action == "reject" and applied:
            add_alert(
                conn,
                claim["cabinet"],
                "claim_rejected_after_effect",
                "critical",
                f"claim {claim_id} ({claim['type']}, rental {claim['rental_id']}) rejected after it took "
                f"effect: recover the battery or the money by hand",
                event_id=claim["event_id"],
                at=now,
            )
    return get_claim(engine, claim_id)
