"""Fixtures for the ledger tests: a real ledger file in tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ledger_helpers import CABINET

from cabinet.ledger import Ledger


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.sqlite"


@pytest.fixture
def ledger(ledger_path: Path) -> Iterator[Ledger]:
    lg = Ledger.open(ledger_path, CABINET)
    yield lg
    lg.close()
