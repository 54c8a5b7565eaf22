"""Fixtures for the hardware area: a simulated cabinet served over a real pty (RTU) and over TCP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hw_fixtures import ServedCabinet, make_cabinet, serve


@pytest.fixture(params=["rtu", "tcp"])
async def served(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ServedCabinet]:
    """The same cabinet over a pty pair with RTU framing, and over Modbus TCP."""
    cab = make_cabinet()
    async with serve(cab, request.param, tmp_path) as s:
        yield s
