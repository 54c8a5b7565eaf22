"""Stopping asyncio tasks for good, for every part of the cabinet.

On Python 3.11 ``asyncio.wait_for`` can swallow a cancellation that arrives as its inner
future completes (gh-86296); pymodbus, the sync agent and the controller's eject waits all use
it. A single ``cancel()`` followed by an unbounded ``gather`` then waits forever, and so does the
cabinet's ``stop()``. Every part stops its tasks through :func:`cancel_and_wait` instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` again every second until each is really done, then collect them."""
    tasks = list(tasks)
    pending = [t for t in tasks if not t.done()]
    while pending:
        for t in pending:
            t.cancel()
        _, still = await asyncio.wait(pending, timeout=1.0)
        pending = list(still)
    await asyncio.gather(*tasks, return_exceptions=True)
