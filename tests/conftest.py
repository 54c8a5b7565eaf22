"""Fixtures shared by every test area: a real Mosquitto broker, and the plugins below.

- ``tests/rigs.py``: the simulator-plus-cabinet rig (``cloud_keys``, ``make_rig``, ``rig``);
- ``tests/cloud_db.py``: a migrated cloud database (``db_url`` on SQLite and PostgreSQL).

Helpers (``free_port``, ``until``, ``start_broker``...) live in the plain module
``tests/helpers.py`` and are re-exported here. Area-specific fixtures live in
``tests/<area>/conftest.py``; no conftest imports another one (``tests/test_test_layout.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Broker, free_port, start_broker, until, wait_for_port

__all__ = ["Broker", "free_port", "start_broker", "until", "wait_for_port"]

pytest_plugins = ["tests.rigs", "tests.cloud_db"]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A fresh Mosquitto on a free port, stopped after the test."""
    b = start_broker(tmp_path)
    try:
        yield b
    finally:
        b.stop()
