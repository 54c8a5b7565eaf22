"""A corrupt or unreadable ledger is refused loudly, kept aside, and never replaced."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from ledger_helpers import CABINET, stock

from cabinet.ledger import Ledger, LedgerCorrupt


@pytest.fixture
def full_ledger(ledger_path: Path) -> bytes:
    """A closed ledger spanning many pages; returns its bytes."""
    with Ledger.open(ledger_path, CABINET) as lg:
        stock(lg, 8)
        for i in range(150):
            lg.record("tech_action", technician="ana", action=f"check-{i}", detail="x" * 300)
    return ledger_path.read_bytes()


def corrupt_copies(path: Path) -> list[Path]:
    return sorted(p for p in path.parent.iterdir() if ".corrupt-" in p.name and not p.name.endswith("-wal"))


def assert_refused_and_kept(path: Path, original: bytes, reason: str) -> None:
    with pytest.raises(LedgerCorrupt, match=reason) as info:
        Ledger.open(path, CABINET)
    exc = info.value
    assert exc.path == path and "Renting must stop" in str(exc)
    assert exc.kept_copy is not None and exc.kept_copy.read_bytes() == original
    assert path.read_bytes() == original, "the damaged file must stay as it was"
    # every later start refuses too: nothing was replaced by an empty ledger
    with pytest.raises(LedgerCorrupt):
        Ledger.open(path, CABINET)
    assert len(corrupt_copies(path)) == 2


@pytest.mark.parametrize("keep", [0.5, 0.1])
def test_truncated_ledger_is_refused_and_kept(ledger_path: Path, full_ledger: bytes, keep: float) -> None:
    cut = full_ledger[: int(len(full_ledger) * keep)]
    ledger_path.write_bytes(cut)
    assert_refused_and_kept(ledger_path, cut, "malformed")


def test_ledger_with_a_garbled_page_is_refused_and_kept(ledger_path: Path, full_ledger: bytes) -> None:
    data = bytearray(full_ledger)
    data[4096 * 3 : 4096 * 3 + 512] = os.urandom(512)
    ledger_path.write_bytes(bytes(data))
    assert_refused_and_kept(ledger_path, bytes(data), "quick_check|malformed")


def test_garbage_file_is_refused_and_kept(ledger_path: Path) -> None:
    junk = b"\x00\xff garbage from a dying SD card " * 200
    ledger_path.write_bytes(junk)
    assert_refused_and_kept(ledger_path, junk, "not an SQLite database")


def test_empty_file_is_refused_not_silently_initialised(ledger_path: Path) -> None:
    ledger_path.write_bytes(b"")
    assert_refused_and_kept(ledger_path, b"", "empty")


def test_foreign_sqlite_file_is_refused_and_not_modified(ledger_path: Path) -> None:
    conn = sqlite3.connect(ledger_path)
    conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    assert_refused_and_kept(ledger_path, ledger_path.read_bytes(), "not a cabinet ledger")


def test_missing_ledger_is_refused_when_creation_is_off(ledger_path: Path) -> None:
    with pytest.raises(LedgerCorrupt, match="missing"):
        Ledger.open(ledger_path, CABINET, create=False)
    assert not ledger_path.exists()


def test_half_created_ledger_is_redone_atomically(ledger_path: Path) -> None:
    leftover = ledger_path.with_name(ledger_path.name + ".new")
    leftover.write_bytes(b"half written by a start that lost power")
    with Ledger.open(ledger_path, CABINET) as lg:
        assert lg.last_seq == 1
    assert not leftover.exists()
