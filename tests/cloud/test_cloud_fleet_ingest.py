"""Fleet ingest on the database: exactly once in effect, in order, restores detected, two workers."""

from __future__ import annotations

import random
import threading
import uuid

from sqlalchemy import func, select

from cloud.db import cabinet_event_conflicts, cabinet_events, commands, fleet_alerts, make_engine, rentals
from cloud.fleet.ingest import EventApplier
from cloud.fleet.view import alerts, cabinet_detail
from sync.messages import EventBatch, WireEvent

BOOT = "6f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"


def ev(seq: int, type_: str = "tech_action", at: float = 1_789_963_200.0, **body) -> WireEvent:
    body = body or {"technician": "t1", "action": "check", "detail": f"round {seq}"}
    return WireEvent(seq, str(uuid.uuid4()), type_, at + seq, 100.0 + seq, BOOT, body)


def batch(cab: str, events: list[WireEvent]) -> EventBatch:
    return EventBatch(cab, tuple(events))


def stored(engine, cab: str) -> list[tuple[int, str]]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                select(cabinet_events.c.seq, cabinet_events.c.event_id)
                .where(cabinet_events.c.cabinet_id == cab)
                .order_by(cabinet_events.c.seq)
            )
        ]


def test_a_redelivered_batch_is_stored_once_and_acked_again(world) -> None:
    applier = EventApplier(world.engine, world.service, world.clock)
    events = [ev(i) for i in range(1, 6)]
    first = applier.apply_batch(batch("CAB-A", events))
    again = applier.apply_batch(batch("CAB-A", events))
    assert (first.acked_seq, first.stored, first.applied) == (5, 5, 5)
    assert (again.acked_seq, again.stored, again.duplicates, again.applied) == (5, 0, 5, 0)
    assert stored(world.engine, "CAB-A") == [(e.seq, e.id) for e in events]


def test_batches_out_of_order_are_applied_only_along_the_contiguous_prefix(world) -> None:
    applier = EventApplier(world.engine, world.service, world.clock)
    events = [ev(i) for i in range(1, 9)]
    late = applier.apply_batch(batch("CAB-A", events[4:]))
    assert late.acked_seq == 0 and late.stored == 4  # kept, not applied: seqs 1-4 are missing
    gap = applier.apply_batch(batch("CAB-A", events[:2]))
    assert gap.acked_seq == 2
    done = applier.apply_batch(batch("CAB-A", events[2:4]))
    assert done.acked_seq == 8 and done.applied == 6


def test_app_rental_events_start_and_close_the_rental_once_and_follow_the_command(world) -> None:
    user = world.renter()
    start = world.service.start_app_rental(user, "CAB-A")
    cmd_id = start.command.cmd_id
    applier = EventApplier(world.engine, world.service, world.clock)
    rid = start.rental_id
    first = [
        ev(1, "command_received", cmd_id=cmd_id, kind="eject", args={}),
        ev(
            2,
            "rental_started",
            rental_id=rid,
            sn="PB000001",
            slot=1,
            source="cloud",
            user=str(user),
            cmd_id=cmd_id,
        ),
        ev(3, "command_result", cmd_id=cmd_id, ok=True, detail="started: slot 1 battery PB000001"),
    ]
    applier.apply_batch(batch("CAB-A", first))
    assert world.service.rental(rid)["status"] == "active"
    world.clock.advance(90 * 60)
    back = ev(1, "battery_returned", at=world.clock(), slot=4, sn="PB000001", rental_id=None, soc=70)
    for _ in range(2):  # redelivered
        applier.apply_batch(batch("CAB-B", [back]))
    r = world.service.rental(rid)
    assert (r["status"], r["end_cabinet_id"], r["fee"]) == ("closed", "CAB-B", 500)
    with world.engine.connect() as conn:
        row = conn.execute(
            select(commands.c.status, commands.c.result).where(commands.c.cmd_id == cmd_id)
        ).one()
        n_rentals = conn.execute(select(func.count()).select_from(rentals)).scalar_one()
    assert row.status == "ok" and "PB000001" in row.result
    assert n_rentals == 1
    slots = {
        s["slot"]: s["battery_sn"] for s in cabinet_detail(world.engine, "CAB-B", world.clock())["slots"]
    }
    assert slots == {4: "PB000001"}


def test_a_reused_seq_with_another_event_is_a_restore_alert_and_still_takes_effect(world) -> None:
    user = world.renter()
    world.service.issue_pass(user, "P-1", world.clock() + 3600, 2)
    applier = EventApplier(world.engine, world.service, world.clock)
    applier.apply_batch(batch("CAB-A", [ev(1), ev(2)]))
    # the cabinet's ledger was restored from a backup holding seq 1 only: its next event is seq 2 again
    reused = ev(
        2, "rental_started", rental_id="R-restored", sn="PB000009", slot=2, source="pass", pass_id="P-1"
    )
    out = applier.apply_batch(batch("CAB-A", [reused]))
    assert out.conflicts == 1 and out.acked_seq == 2
    assert world.service.rental("R-restored")["status"] == "active"  # not dropped
    found = alerts(world.engine, "CAB-A")
    assert [(a["kind"], a["severity"], a["seq"]) for a in found] == [("restore_detected", "critical", 2)]
    applier.apply_batch(batch("CAB-A", [reused]))  # redelivered: no second alert, no second conflict row
    with world.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(cabinet_event_conflicts)).scalar_one() == 1
        assert conn.execute(select(func.count()).select_from(fleet_alerts)).scalar_one() == 1


def test_security_events_and_quarantines_become_alerts_once(world) -> None:
    applier = EventApplier(world.engine, world.service, world.clock)
    events = [
        ev(1, "security_event", kind="forged", detail="cmd x: signature does not verify"),
        ev(2, "security_event", kind="foreign_battery", detail="slot 3: battery 'XX1' is not of this fleet"),
        ev(3, "battery_quarantined", sn="PB000002", reason="returned hot (61.0 C)", risk=None),
        ev(4, "slot_quarantined", slot=2, reason="returned hot", by="cabinet"),
    ]
    applier.apply_batch(batch("CAB-A", events))
    applier.apply_batch(batch("CAB-A", events))
    kinds = sorted((a["kind"], a["severity"]) for a in alerts(world.engine, "CAB-A"))
    assert kinds == [
        ("battery_quarantined", "warning"),
        ("foreign_battery", "warning"),
        ("forged", "critical"),
        ("slot_quarantined", "warning"),
    ]
    slot2 = [s for s in cabinet_detail(world.engine, "CAB-A", world.clock())["slots"] if s["slot"] == 2]
    assert slot2[0]["quarantined"] is True


def test_two_workers_racing_on_shuffled_duplicated_batches_apply_every_event_once(world, db_url) -> None:
    """Two appliers on their own engines (as two processes would be) share one cabinet's batches."""
    user = world.renter()
    world.service.issue_pass(user, "P-2", world.clock() + 86400, 100)
    events = []
    for i in range(1, 301):
        if i % 50 == 10:
            events.append(
                ev(
                    i,
                    "rental_started",
                    rental_id=f"R-{i}",
                    sn=f"PB{i:06d}",
                    slot=1,
                    source="pass",
                    pass_id="P-2",
                )
            )
        elif i % 50 == 20:
            events.append(
                ev(i, "battery_returned", slot=1, sn=f"PB{i - 10:06d}", rental_id=f"R-{i - 10}", soc=80)
            )
        else:
            events.append(ev(i))
    batches = [batch("CAB-A", events[i : i + 20]) for i in range(0, 300, 20)]
    work = batches * 2
    random.Random(4).shuffle(work)
    engines = [make_engine(db_url), make_engine(db_url)]
    appliers = [EventApplier(e, world.service, world.clock) for e in engines]
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            for b in work[k::2]:
                appliers[k].apply_batch(b)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for e in engines:
        e.dispose()
    assert errors == []
    assert stored(world.engine, "CAB-A") == [(e.seq, e.id) for e in events]
    assert appliers[0].applied_seq("CAB-A") == 300
    with world.engine.connect() as conn:
        closed = conn.execute(select(rentals.c.id, rentals.c.status).order_by(rentals.c.id)).all()
    assert [tuple(r) for r in closed] == sorted((f"R-{i}", "closed") for i in range(10, 301, 50))
