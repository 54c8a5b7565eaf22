"""Events, body validation, domain rules and projections of the ledger."""

from __future__ import annotations

import sqlite3

import pytest
from ledger_helpers import rent_and_return, stock

from cabinet.ledger import EVENT_TYPES, EventBodyError, Ledger, LedgerRuleError, verify_db
from cabinet.ledger.projections import APPLY


def count_events(lg: Ledger) -> int:
    return lg.conn.execute("SELECT count(*) FROM events").fetchone()[0]


def test_every_event_type_has_a_projection_rule() -> None:
    assert set(APPLY) == set(EVENT_TYPES)


def test_open_records_ledger_opened_with_boot_and_clock(ledger: Ledger) -> None:
    (first,) = ledger.events_after(0)
    assert first.seq == 1 and first.type == "ledger_opened"
    assert first.body["version"] >= 3
    assert first.boot_id == open("/proc/sys/kernel/random/boot_id").read().strip()
    assert first.at_mono > 0 and first.at_wall > 1.7e9


@pytest.mark.parametrize(
    ("type_", "body", "message"),
    [
        ("battery_seen", {"slot": 1}, "field 'sn' is required"),
        ("battery_seen", {"slot": -1, "sn": "X"}, "field 'slot' must be between"),
        ("battery_seen", {"slot": True, "sn": "X"}, "must be an integer"),
        ("battery_seen", {"slot": 1, "sn": "X", "soc": 101}, "field 'soc'"),
        ("battery_seen", {"slot": 1, "sn": "X", "colour": "red"}, "unknown field(s) colour"),
        ("battery_seen", {"slot": 1, "sn": "   "}, "non-empty string"),
        ("rental_started", {"rental_id": "R", "sn": "X", "slot": 1, "source": "kiosk"}, "must be one of"),
        ("rental_started", {"rental_id": "R", "sn": "X", "slot": 1, "source": "pass"}, "pass_id is required"),
        ("command_result", {"cmd_id": "c", "ok": 1}, "true or false"),
        ("battery_returned", {"slot": 1, "sn": "X", "temp_c": float("nan")}, "finite number"),
        ("no_such_event", {}, "unknown event type"),
    ],
)
def test_malformed_body_never_reaches_the_file(ledger: Ledger, type_: str, body: dict, message: str) -> None:
    before = count_events(ledger)
    with pytest.raises(EventBodyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ledger.record(type_, **body)
    assert count_events(ledger) == before


def test_renting_a_battery_not_in_the_slot_writes_nothing(ledger: Ledger) -> None:
    (sn,) = stock(ledger, 1)
    seq = ledger.last_seq
    with pytest.raises(LedgerRuleError, match="battery PB999999 is not in slot 1"):
        ledger.record("rental_started", rental_id="R1", sn="PB999999", slot=1, source="cloud")
    assert ledger.last_seq == seq and count_events(ledger) == seq
    assert ledger.rental("R1") is None
    assert ledger.slot(1).sn == sn
    # the next good event takes the next seq: no gap from the failed one
    ev = ledger.record("rental_started", rental_id="R1", sn=sn, slot=1, source="cloud")
    assert ev.seq == seq + 1


def test_rental_takes_battery_out_of_its_slot_and_return_ends_it(ledger: Ledger) -> None:
    sn, _ = stock(ledger, 2)
    ledger.record("rental_started", rental_id="R1", sn=sn, slot=1, source="cloud", user="u7")
    assert ledger.slot(1).sn is None
    b = ledger.battery(sn)
    assert (b.place, b.rental_id, b.slot) == ("rental", "R1", None)
    assert [r.rental_id for r in ledger.open_rentals()] == ["R1"]
    ledger.record("battery_returned", slot=5, sn=sn, soc=40.0)  # rental_id unknown to the kiosk: inferred
    r = ledger.rental("R1")
    assert (r.state, r.end_slot, r.end_type) == ("returned", 5, "battery_returned")
    assert ledger.battery(sn).place == "slot" and ledger.battery(sn).slot == 5
    assert ledger.open_rentals() == []
    assert verify_db(ledger.conn).ok


def test_ending_a_rental_twice_is_refused(ledger: Ledger) -> None:
    (sn,) = stock(ledger, 1)
    rent_and_return(ledger, "R1", sn, slot=1, back_to=2)
    ledger.record("rental_started", rental_id="R2", sn=sn, slot=2, source="cloud")
    with pytest.raises(LedgerRuleError, match="rental R1 already ended"):
        ledger.record("battery_returned", slot=3, sn=sn, rental_id="R1")
    assert ledger.battery(sn).place == "rental"


def test_return_into_an_occupied_slot_is_refused(ledger: Ledger) -> None:
    a, b = stock(ledger, 2)
    ledger.record("rental_started", rental_id="R1", sn=a, slot=1, source="cloud")
    with pytest.raises(LedgerRuleError, match=f"slot 2 already holds battery {b}"):
        ledger.record("battery_returned", slot=2, sn=a)


def test_a_battery_cannot_be_in_two_slots(ledger: Ledger) -> None:
    (sn,) = stock(ledger, 1)
    with pytest.raises(LedgerRuleError, match="already in slot 1"):
        ledger.record("battery_seen", slot=2, sn=sn)
    with pytest.raises(LedgerRuleError, match="already in slot 1"):
        ledger.record("battery_returned", slot=2, sn=sn)


def test_rental_started_twice_is_refused(ledger: Ledger) -> None:
    a, b = stock(ledger, 2)
    ledger.record("rental_started", rental_id="R1", sn=a, slot=1, source="cloud")
    with pytest.raises(LedgerRuleError, match="rental R1 is already open"):
        ledger.record("rental_started", rental_id="R1", sn=b, slot=2, source="cloud")


def test_requested_rental_can_start_or_abort_but_not_both(ledger: Ledger) -> None:
    a, _ = stock(ledger, 2)
    ledger.record("rental_requested", rental_id="R1", source="pass", pass_id="P1", user="u1")
    assert ledger.open_rentals_for_pass("P1")[0].state == "requested"
    ledger.record("rental_aborted", rental_id="R1", slot=1, reason="not_taken")
    assert ledger.rental("R1").state == "aborted"
    assert ledger.open_rentals_for_pass("P1") == []
    with pytest.raises(LedgerRuleError, match="rental R1 is already aborted"):
        ledger.record("rental_started", rental_id="R1", sn=a, slot=1, source="pass", pass_id="P1")
    ledger.record("rental_requested", rental_id="R2", source="cloud", cmd_id="c2")
    ledger.record("rental_started", rental_id="R2", sn=a, slot=1, source="cloud", cmd_id="c2")
    with pytest.raises(LedgerRuleError, match="rental R2 is already open"):
        ledger.record("rental_aborted", rental_id="R2", slot=1, reason="late")
    assert verify_db(ledger.conn).ok


def test_abort_without_request_is_recorded_as_an_aborted_rental(ledger: Ledger) -> None:
    ledger.record("rental_aborted", rental_id="R9", slot=None, reason="no_rentable_battery")
    r = ledger.rental("R9")
    assert (r.state, r.end_reason, r.started_seq) == ("aborted", "no_rentable_battery", None)


def test_quarantined_battery_or_slot_cannot_be_rented(ledger: Ledger) -> None:
    a, b = stock(ledger, 2)
    ledger.record("battery_quarantined", sn=a, reason="hot return", risk=0.93)
    assert ledger.battery(a).quarantined and ledger.battery(a).risk == pytest.approx(0.93)
    with pytest.raises(LedgerRuleError, match=f"battery {a} is quarantined"):
        ledger.record("rental_started", rental_id="R1", sn=a, slot=1, source="cloud")
    ledger.record("slot_quarantined", slot=2, reason="latch broken", by="tech:ana")
    with pytest.raises(LedgerRuleError, match="slot 2 is quarantined"):
        ledger.record("rental_started", rental_id="R1", sn=b, slot=2, source="cloud")
    ledger.record("battery_released", sn=a, reason="cooled down")
    ledger.record("slot_released", slot=2, reason="latch fixed", by="tech:ana")
    ledger.record("rental_started", rental_id="R1", sn=a, slot=1, source="cloud")
    with pytest.raises(LedgerRuleError, match="not quarantined"):
        ledger.record("slot_released", slot=2, reason="again", by="tech:ana")


def test_unexpected_removal_and_gone_batteries_have_a_reason(ledger: Ledger) -> None:
    a, b = stock(ledger, 2)
    ledger.record("battery_removed_unexpected", slot=1, sn=a)
    assert (ledger.battery(a).place, ledger.battery(a).gone_reason) == ("gone", "missing")
    assert ledger.slot(1).sn is None
    ledger.record("battery_returned", slot=1, sn=a)  # found again
    assert ledger.battery(a).place == "slot"
    ledger.record("battery_gone", sn=b, reason="repair")
    with pytest.raises(LedgerRuleError, match="already gone"):
        ledger.record("battery_gone", sn=b, reason="lost")
    ledger.record("battery_seen", slot=2, sn=b)  # back from repair
    assert ledger.battery(b).gone_reason is None
    with pytest.raises(LedgerRuleError, match="slot 2 holds"):
        ledger.record("battery_removed_unexpected", slot=2, sn=a)


def test_battery_gone_while_rented_closes_the_rental(ledger: Ledger) -> None:
    (a,) = stock(ledger, 1)
    ledger.record("rental_started", rental_id="R1", sn=a, slot=1, source="cloud")
    ledger.record("battery_gone", sn=a, reason="sold")
    r = ledger.rental("R1")
    assert (r.state, r.end_reason) == ("closed", "sold")
    assert verify_db(ledger.conn).ok


def test_command_is_received_once_and_has_one_result(ledger: Ledger) -> None:
    ledger.record("command_received", cmd_id="c1", kind="eject", args={"rental_id": "R1", "n": [1, 2]})
    assert ledger.command_seen("c1").result_ok is None
    with pytest.raises(LedgerRuleError, match="already received"):
        ledger.record("command_received", cmd_id="c1", kind="eject")
    ledger.record("command_result", cmd_id="c1", ok=False, detail="jammed")
    seen = ledger.command_seen("c1")
    assert (seen.result_ok, seen.result_detail) == (False, "jammed")
    with pytest.raises(LedgerRuleError, match="already has a result"):
        ledger.record("command_result", cmd_id="c1", ok=True)
    with pytest.raises(LedgerRuleError, match="never received"):
        ledger.record("command_result", cmd_id="c2", ok=True)
    assert ledger.command_seen("c2") is None


def test_slot_faults_are_set_and_cleared(ledger: Ledger) -> None:
    ledger.record("slot_fault", slot=4, kind="jam", detail="lock opened, seat switch unchanged")
    assert (ledger.slot(4).fault_kind, ledger.slot(4).fault_detail) == (
        "jam",
        "lock opened, seat switch unchanged",
    )
    ledger.record("slot_fault_cleared", slot=4, by="tech:ana")
    assert ledger.slot(4).fault_kind is None
    with pytest.raises(LedgerRuleError, match="has no fault"):
        ledger.record("slot_fault_cleared", slot=4)


def test_pass_use_is_recorded_once(ledger: Ledger) -> None:
    ledger.record("pass_used", pass_id="P1", rental_id="R1")
    with pytest.raises(LedgerRuleError, match="already used"):
        ledger.record("pass_used", pass_id="P1", rental_id="R1")


def test_audit_events_change_no_projection(ledger: Ledger) -> None:
    stock(ledger, 1)
    before = [ledger.slots(), ledger.batteries()]
    ledger.record("tech_action", technician="ana", action="unlock", detail="slot 1, customer stuck")
    ledger.record("security_event", kind="forged_pass", detail="bad signature")
    ledger.record("config_applied", version=12)
    assert [ledger.slots(), ledger.batteries()] == before


def test_events_are_append_only_in_the_file(ledger: Ledger) -> None:
    stock(ledger, 1)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        ledger.conn.execute("DELETE FROM events WHERE seq = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        ledger.conn.execute("UPDATE events SET type = 'x' WHERE seq = 1")


def test_body_is_stored_as_canonical_cbor(ledger: Ledger) -> None:
    import cbor2

    ev = ledger.record("command_received", cmd_id="c1", kind="config", args={"z": 1, "a": {"y": 2, "b": 3}})
    blob = ledger.conn.execute("SELECT body FROM events WHERE seq = ?", (ev.seq,)).fetchone()[0]
    assert blob == cbor2.dumps(ev.body, canonical=True)
    assert cbor2.loads(blob)["args"] == {"a": {"b": 3, "y": 2}, "z": 1}


@pytest.mark.parametrize("depth", range(8, 18))
def test_the_ledger_takes_a_nested_body_exactly_when_the_wire_carries_it_in_a_batch(depth: int) -> None:
    """A body the ledger accepts but the cloud's decoder refuses would block the outbox behind it
    for ever: both must draw the line at the same depth (sync.codec.EVENT_BODY_DEPTH)."""
    from cabinet.ledger.errors import EventBodyError
    from cabinet.ledger.events import validate_body
    from sync.errors import ProtocolError
    from sync.messages import EventBatch, WireEvent, decode_for_topic

    args: object = 1
    for _ in range(depth):
        args = {"a": args}
    body = {"cmd_id": "C-1", "kind": "restart", "args": args}
    try:
        validate_body("command_received", body)
        ledger_takes = True
    except EventBodyError:
        ledger_takes = False
    try:
        ev = WireEvent(
            seq=1,
            id="CAB-0001-1",
            type="command_received",
            at_wall=1.7e9,
            at_mono=1.0,
            boot_id="b",
            body=body,
        )
        decode_for_topic("cab/v1/CAB-0001/ev", EventBatch("CAB-0001", (ev,)).encode())
        wire_carries = True
    except ProtocolError:
        wire_carries = False
    assert ledger_takes == wire_carries, f"depth {depth}: ledger {ledger_takes}, wire {wire_carries}"
