"""AsyncLedger: the Ledger for asyncio code, every call on ONE dedicated writer thread.

SQLite connections are bound to the thread that made them, and a durable commit waits
for an fsync (sub-millisecond on an SSD, up to tens of milliseconds on an SD card). So
the cabinet's event loop never calls SQLite itself: it awaits these methods, which run
in order on the single "ledger" thread. Calls are serialised, so there is exactly one
writer and reads see every earlier write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from .events import Event
from .ledger import Ledger
from .views import BatteryState, CommandSeen, RentalState, SlotState

T = TypeVar("T")


class AsyncLedger:
    """Awaitable facade over a Ledger living on its own thread."""

    def __init__(self, ledger: Ledger, executor: ThreadPoolExecutor) -> None:
        self._ledger = ledger
        self._executor = executor

    @classmethod
    async def open(cls, path: str | Path, cabinet_id: str, **kwargs: Any) -> AsyncLedger:
        """Open on the writer thread (raises what Ledger.open raises)."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")
        loop = asyncio.get_running_loop()
        try:
            ledger = await loop.run_in_executor(executor, lambda: Ledger.open(path, cabinet_id, **kwargs))
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(ledger, executor)

    async def run(self, fn: Callable[[Ledger], T]) -> T:
        """Run ``fn(ledger)`` on the writer thread: for anything without a wrapper below."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, self._ledger)

    async def record(self, type_: str, /, **body: Any) -> Event:
        return await self.run(lambda lg: lg.record(type_, **body))

    async def slots(self) -> list[SlotState]:
        return await self.run(Ledger.slots)

    async def slot(self, n: int) -> SlotState | None:
        return await self.run(lambda lg: lg.slot(n))

    async def batteries(self) -> list[BatteryState]:
        return await self.run(Ledger.batteries)

    async def battery(self, sn: str) -> BatteryState | None:
        return await self.run(lambda lg: lg.battery(sn))

    async def rental(self, rental_id: str) -> RentalState | None:
        return await self.run(lambda lg: lg.rental(rental_id))

    async def open_rentals(self) -> list[RentalState]:
        return await self.run(Ledger.open_rentals)

    async def command_seen(self, cmd_id: str) -> CommandSeen | None:
        return await self.run(lambda lg: lg.command_seen(cmd_id))

    async def events_after(self, seq: int, limit: int = 100, max_bytes: int = 64 * 1024) -> list[Event]:
        return await self.run(lambda lg: lg.events_after(seq, limit, max_bytes))

    async def acked_seq(self) -> int:
        return await self.run(lambda lg: lg.acked_seq)

    async def set_acked(self, seq: int) -> int:
        return await self.run(lambda lg: lg.set_acked(seq))

    async def close(self) -> None:
        """Close the ledger on its thread, then stop the thread."""
        try:
            await self.run(Ledger.close)
        finally:
            self._executor.shutdown(wait=True)
