"""``cabinet ledger verify`` on sound and tampered files: it says which check failed and where."""

from __future__ import annotations

from pathlib import Path

import cbor2
import pytest
from ledger_helpers import CABINET, rent_and_return, stock, tamper

from cabinet.ledger import Ledger, verify
from cabinet.ledger.cli import main


@pytest.fixture
def busy_ledger(ledger_path: Path) -> Path:
    """A closed ledger with batteries, a finished rental, an open rental and a quarantine."""
    with Ledger.open(ledger_path, CABINET) as lg:
        a, b, c, _ = stock(lg, 4)
        rent_and_return(lg, "R1", a, slot=1, back_to=6)
        lg.record("rental_started", rental_id="R2", sn=b, slot=2, source="pass", pass_id="P1", user="u2")
        lg.record("pass_used", pass_id="P1", rental_id="R2")
        lg.record("battery_quarantined", sn=c, reason="hot", risk=0.9)
        lg.set_acked(4)
    return ledger_path


def checks(path: Path) -> list[str]:
    return [str(p) for p in verify(path).problems]


def test_sound_ledger_verifies_and_cli_exits_zero(busy_ledger: Path, capsys: pytest.CaptureFixture) -> None:
    report = verify(busy_ledger)
    assert report.ok, report.summary()
    assert report.events == report.last_seq == 12
    assert main(["ledger", "verify", "--db", str(busy_ledger)]) == 0
    assert "12 events, last seq 12: OK" in capsys.readouterr().out


def test_deleted_event_is_a_seq_gap_and_a_replay_mismatch(
    busy_ledger: Path, capsys: pytest.CaptureFixture
) -> None:
    tamper(busy_ledger, "DELETE FROM events WHERE seq = 10")  # rental_started R2
    problems = checks(busy_ledger)
    assert "[seq] events jump from seq 9 to seq 11 (1 missing) (seq 10)" in problems
    assert any(
        p.startswith("[projection] rentals row rental_id='R2' is in the file but not in a replay")
        for p in problems
    )
    assert any("[schema] trigger events_no_delete is missing" in p for p in problems)
    assert main(["ledger", "verify", "--db", str(busy_ledger)]) == 1
    assert "events jump from seq 9 to seq 11" in capsys.readouterr().out


def test_edited_projection_row_is_named_with_its_slot(busy_ledger: Path) -> None:
    tamper(
        busy_ledger,
        "UPDATE slots SET sn = 'PB000003', updated_seq = 3 WHERE slot = 3",
        "UPDATE slots SET sn = NULL WHERE slot = 4",
    )
    problems = verify(busy_ledger).problems
    mismatch = [p for p in problems if p.check == "projection" and p.slot == 4]
    assert (
        mismatch and "slots row slot=4: sn is None in the file, 'PB000004' by replay" in mismatch[0].message
    )
    assert any(
        p.check == "invariant" and p.sn == "PB000004" and "should be in slot 4 but is in no slot" in p.message
        for p in problems
    )


def test_duplicated_battery_is_in_two_places(busy_ledger: Path) -> None:
    tamper(busy_ledger, "UPDATE slots SET sn = 'PB000003' WHERE slot = 1")
    problems = checks(busy_ledger)
    assert (
        "[invariant] battery PB000003 is in more than one place: slot 1 and slot 3 (slot 1, battery PB000003)"
        in problems
    )


def test_battery_both_in_slot_and_on_rental_is_caught(busy_ledger: Path) -> None:
    tamper(busy_ledger, "UPDATE slots SET sn = 'PB000002' WHERE slot = 1")  # PB000002 is out on R2
    problems = checks(busy_ledger)
    assert any("battery PB000002 is in more than one place: slot 1 and rental R2" in p for p in problems)


def test_rental_started_twice_in_the_events_is_caught(busy_ledger: Path) -> None:
    with Ledger.open(busy_ledger, CABINET) as lg:
        last = lg.last_seq
    body = {
        "rental_id": "R1",
        "sn": "PB000001",
        "slot": 6,
        "source": "cloud",
        "user": None,
        "pass_id": None,
        "cmd_id": None,
    }
    tamper(
        busy_ledger,
        f"INSERT INTO events VALUES ({last + 1}, 'forged', 'rental_started', 0, 0, 'b', x'{cbor2.dumps(body, canonical=True).hex()}')",
    )
    problems = checks(busy_ledger)
    assert any(p.startswith("[invariant] rental R1 started 2 times") for p in problems)
    assert any(
        p.startswith(
            f"[replay] event breaks a rule on replay: rental_started: rental R1 is already returned (seq {last + 1})"
        )
        for p in problems
    )


def test_altered_body_is_caught(busy_ledger: Path) -> None:
    bad = cbor2.dumps({"slot": 1, "sn": "PB000001", "soc": 900.0, "cycles": 10})
    tamper(busy_ledger, f"UPDATE events SET body = x'{bad.hex()}' WHERE seq = 2")
    problems = checks(busy_ledger)
    assert any(
        p.startswith(
            "[body] battery_seen body is invalid: battery_seen: field 'soc' must be between 0 and 100"
        )
        and p.endswith("(seq 2)")
        for p in problems
    )


def test_ack_beyond_the_end_is_caught(busy_ledger: Path) -> None:
    tamper(busy_ledger, "UPDATE sync_state SET acked_seq = 99")
    assert "[sync] acked_seq 99 is beyond the last event 12" in checks(busy_ledger)


def test_garbage_file_fails_integrity(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "ledger.sqlite"
    bad.write_bytes(b"not a database at all" * 100)
    assert [p.check for p in verify(bad).problems] == ["integrity"]
    assert main(["ledger", "verify", "--db", str(bad)]) == 1
    assert main(["ledger", "verify", "--db", str(tmp_path / "missing.sqlite")]) == 2
    assert "no ledger at" in capsys.readouterr().err


def test_verify_never_writes_the_file(busy_ledger: Path) -> None:
    before = busy_ledger.read_bytes()
    assert verify(busy_ledger).ok
    assert busy_ledger.read_bytes() == before


def test_verify_works_while_the_cabinet_is_writing(ledger: Ledger, ledger_path: Path) -> None:
    stock(ledger, 3)  # still open, changes in the WAL
    report = verify(ledger_path)
    assert report.ok and report.last_seq == ledger.last_seq
