"""The simulator's end of the cross-process GPIO link (the cabinet's end is ``pins.SimLinkFactory``).

A small line protocol over TCP on 127.0.0.1, one JSON object per line:

* simulator -> cabinet, on connect: ``{"snapshot": {"SEAT1": 1, "SEAT2": 0, ...}}``
* simulator -> cabinet, on every seat switch change: ``{"pin": "SEAT3", "level": 0}``
* cabinet -> simulator, on every lock output change: ``{"pin": "LOCK3", "level": 1}``

When a cabinet disconnects, the locks it energised are released (a dead controller must
not hold a latch open).
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from hardware_sim.cabinet import SimActionError, SimCabinet
from hardware_sim.pins import parse_pin, seat_pin


class GpioLinkServer:
    """Serves the cabinet's LOCK/SEAT pins to SimLinkFactory clients."""

    def __init__(self, cabinet: SimCabinet, host: str = "127.0.0.1", port: int = 0) -> None:
        self.cabinet, self.host, self.port = cabinet, host, port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def address(self) -> str:
        """host:port to put in CABINET_SIM_GPIO."""
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        """Listen and start forwarding seat switch changes."""
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._client, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self.cabinet.add_seat_listener(self._on_seat)

    async def close(self) -> None:
        """Stop listening and drop every client."""
        self.cabinet.remove_seat_listener(self._on_seat)
        if self._server:
            self._server.close()
        for w in list(self._writers):
            w.close()
        if self._server:
            await self._server.wait_closed()

    def _on_seat(self, slot: int, seated: bool) -> None:
        line = (json.dumps({"pin": seat_pin(slot), "level": int(seated)}) + "\n").encode()
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._broadcast, line)

    def _broadcast(self, line: bytes) -> None:
        for w in list(self._writers):
            if not w.is_closing():
                w.write(line)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held: set[int] = set()
        snapshot = {seat_pin(s.number): int(self.cabinet.seat_switch(s.number)) for s in self.cabinet.slots}
        writer.write((json.dumps({"snapshot": snapshot}) + "\n").encode())
        self._writers.add(writer)
        try:
            while line := await reader.readline():
                try:
                    msg = json.loads(line)
                    kind, slot = parse_pin(str(msg["pin"])) or ("", 0)
                    level = bool(msg["level"])
                except (ValueError, KeyError, TypeError):
                    continue
                if kind != "lock":
                    continue
                with contextlib.suppress(SimActionError):
                    self.cabinet.set_lock(slot, level)
                    (held.add if level else held.discard)(slot)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # the server is closing: end quietly (a cancelled connection task makes asyncio's stream
            # callback print a CancelledError traceback on Python 3.11)
            pass
        finally:
            self._writers.discard(writer)
            for slot in held:
                self.cabinet.set_lock(slot, False)
            writer.close()
