"""``cabinet ledger export`` (JSON lines, CSV) and online, rotated backups."""

from __future__ import annotations

import csv
import json
import sqlite3
import threading
from pathlib import Path

import pytest
from ledger_helpers import CABINET, rent_and_return, stock

from cabinet.ledger import Backups, Ledger, LedgerError, verify
from cabinet.ledger.cli import main


@pytest.fixture
def filled(ledger_path: Path) -> Path:
    with Ledger.open(ledger_path, CABINET) as lg:
        (sn,) = stock(lg, 1)
        rent_and_return(lg, "R1", sn, slot=1, back_to=2)
    return ledger_path  # 6 events


def test_export_jsonl_after_seq_to_a_file(filled: Path, tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    assert main(["ledger", "export", "--db", str(filled), "--after", "2", "--out", str(out)]) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["seq"] for x in lines] == [3, 4, 5, 6]
    assert lines[1]["type"] == "rental_started"
    assert lines[1]["body"]["rental_id"] == "R1" and lines[1]["body"]["sn"] == "PB000001"
    assert set(lines[0]) == {"seq", "id", "type", "at_wall", "at_mono", "boot_id", "body"}


def test_export_csv_to_stdout(filled: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["ledger", "export", "--db", str(filled), "--format", "csv"]) == 0
    captured = capsys.readouterr()
    rows = list(csv.DictReader(captured.out.splitlines()))
    assert [int(r["seq"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert json.loads(rows[2]["body"])["args"] == {"rental_id": "R1"}
    assert "exported 6 events" in captured.err


def test_restore_help_names_the_steps(capsys: pytest.CaptureFixture) -> None:
    assert main(["ledger", "restore-help"]) == 0
    text = capsys.readouterr().out
    assert "systemctl stop cabinet" in text and "cabinet ledger verify" in text


def test_backup_is_a_complete_verifiable_copy(filled: Path, tmp_path: Path) -> None:
    backups = Backups(filled, tmp_path / "bk", keep=3)
    made = backups.run_once()
    assert made.name.endswith("-seq6.sqlite") and made.parent == tmp_path / "bk"
    assert verify(made).ok
    assert not Path(f"{made}-wal").exists()
    conn = sqlite3.connect(made)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()
    # a restored backup opens as the cabinet's ledger and carries on
    restored = tmp_path / "restored.sqlite"
    restored.write_bytes(made.read_bytes())
    with Ledger.open(restored, CABINET) as lg:
        assert lg.rental("R1").state == "returned" and lg.last_seq == 7


def test_backups_rotate_keeping_the_newest(ledger: Ledger, ledger_path: Path, tmp_path: Path) -> None:
    backups = Backups(ledger_path, tmp_path / "bk", keep=2)
    made = []
    for i in range(4):
        ledger.record("config_applied", version=i)
        made.append(backups.run_once())
    (tmp_path / "bk" / "unrelated.txt").write_text("keep me")
    kept = [b.path for b in backups.existing()]
    assert kept == made[-2:]
    assert [b.last_seq for b in backups.existing()] == [4, 5]
    assert (tmp_path / "bk" / "unrelated.txt").exists()


def test_online_backup_while_the_cabinet_writes(ledger: Ledger, ledger_path: Path, tmp_path: Path) -> None:
    backups = Backups(ledger_path, tmp_path / "bk", keep=5)
    stop = threading.Event()
    results: list[Path] = []

    def backup_loop() -> None:
        while not stop.is_set() and len(results) < 5:
            results.append(backups.run_once())

    t = threading.Thread(target=backup_loop)
    t.start()
    for i in range(300):
        ledger.record("tech_action", technician="ana", action=f"a{i}")
        if not t.is_alive():
            break
    stop.set()
    t.join(30)
    assert results
    for p in results:
        report = verify(p)
        assert report.ok, report.summary()
        assert p.name.endswith(f"-seq{report.last_seq}.sqlite")


def test_backup_cli_and_missing_source(filled: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["ledger", "backup", "--db", str(filled), "--dir", str(tmp_path / "b"), "--keep", "1"]) == 0
    assert capsys.readouterr().out.strip().endswith("-seq6.sqlite")
    with pytest.raises(LedgerError, match="no such file"):
        Backups(tmp_path / "nope.sqlite", tmp_path / "b").run_once()
    assert (
        main(["ledger", "backup", "--db", str(tmp_path / "nope.sqlite"), "--dir", str(tmp_path / "b")]) == 2
    )
