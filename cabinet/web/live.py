"""Server-sent events: domain happenings and periodic state, fanned out to every open page.

The controller calls :meth:`LiveHub.on_domain` for each happening (eject, rental_started,
battery_returned, ...). A background task publishes the slot table when it changes and the
cabinet's health every few seconds, only while somebody listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveEvent:
    """One message on the stream: ``kind`` is the SSE event name, ``data`` its JSON body."""

    kind: str
    data: dict[str, Any]
    at: float

    def encode(self) -> bytes:
        body = json.dumps({**self.data, "at": self.at}, default=str, ensure_ascii=False)
        return f"event: {self.kind}\ndata: {body}\n\n".encode()


class LiveHub:
    """Subscribers' queues; a slow subscriber loses its oldest messages, never blocks the cabinet."""

    def __init__(self, queue_size: int = 200) -> None:
        self.queue_size = queue_size
        self._subs: set[asyncio.Queue[LiveEvent | None]] = set()
        self.last: dict[str, LiveEvent] = {}  # newest of each periodic kind, for late joiners

    @property
    def listeners(self) -> int:
        return len(self._subs)

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        ev = LiveEvent(kind, data, time.time())
        if kind in ("slots", "health"):
            self.last[kind] = ev
        for q in list(self._subs):
            if q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(ev)

    def on_domain(self, what: str, data: dict[str, Any]) -> None:
        """Controller listener: every domain happening goes out as it is."""
        self.publish(what, dict(data))

    async def subscribe(self, keepalive_s: float = 15.0) -> AsyncIterator[bytes]:
        """Encoded messages for one client: the latest state first, then everything new."""
        q: asyncio.Queue[LiveEvent | None] = asyncio.Queue(self.queue_size)
        self._subs.add(q)
        try:
            yield b"retry: 2000\n\n"
            for latest in list(self.last.values()):
                yield latest.encode()
            while True:
                try:
                    ev = await asyncio.wait_for(q.get(), keepalive_s)
                except TimeoutError:
                    yield b": keepalive\n\n"
                    continue
                if ev is None:
                    return
                yield ev.encode()
        finally:
            self._subs.discard(q)

    def close(self) -> None:
        """End every stream (at shutdown)."""
        for q in list(self._subs):
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(None)


async def publish_loop(
    hub: LiveHub,
    slots: Callable[[], Awaitable[list[dict[str, Any]]]],
    health: Callable[[], Awaitable[dict[str, Any]]],
    slot_interval_s: float = 0.5,
    health_interval_s: float = 5.0,
) -> None:
    """Publish the slot table when it changes and the health periodically, while anyone listens."""
    last_slots: list[dict[str, Any]] | None = None
    next_health = 0.0
    while True:
        try:
            if hub.listeners:
                table = await slots()
                if table != last_slots:
                    hub.publish("slots", {"slots": table})
                    last_slots = table
                if time.monotonic() >= next_health:
                    hub.publish("health", await health())
                    next_health = time.monotonic() + health_interval_s
            else:
                last_slots, next_health = None, 0.0
        except asyncio.CancelledError:
            raise
        except Exception:  # the UI's view must never take the cabinet down; try again soon
            log.exception("live update failed")
        await asyncio.sleep(slot_interval_s)
