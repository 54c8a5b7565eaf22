"""Helpers for the hardware tests: a simulated cabinet served over a real pty (RTU) or TCP, and polling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from hardware_sim.cabinet import SimCabinet, SimConfig
from hardware_sim.modbus import PtyBridge, SimSerialServer, SimTcpServer


@dataclass
class ServedCabinet:
    """A SimCabinet with its slot boards reachable at ``port`` (a tty path or tcp://host:port)."""

    cabinet: SimCabinet
    port: str
    kind: str  # "rtu" | "tcp"

    def boards(self) -> list[tuple[int, int]]:
        return [(u, len(b.slots)) for u, b in self.cabinet.boards.items()]


def make_cabinet(slots: int = 16, per_board: int = 4, seed: int = 7, fill: float = 0.75) -> SimCabinet:
    return SimCabinet(
        SimConfig(slots=slots, slots_per_board=per_board, seed=seed, fill=fill, reseat_after_s=0.3)
    )


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], within: float = 5.0, every: float = 0.01
) -> None:
    """Poll ``check`` until it is true or fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        r = check()
        if isinstance(r, Awaitable):
            r = await r
        if r:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(every)


class serve:
    """Async context manager: serve ``cabinet``'s boards over ``kind`` ('rtu' or 'tcp')."""

    def __init__(self, cabinet: SimCabinet, kind: str, tmp_path: Path) -> None:
        self.cabinet, self.kind, self.tmp_path = cabinet, kind, tmp_path

    async def __aenter__(self) -> ServedCabinet:
        if self.kind == "rtu":
            self.bridge = await PtyBridge(self.tmp_path / "ttySIM").start()
            self.server = SimSerialServer(self.cabinet, self.bridge.server_path)
            await self.server.serve_forever(background=True)
            return ServedCabinet(self.cabinet, self.bridge.client_path, "rtu")
        self.bridge = None
        self.server = SimTcpServer(self.cabinet, port=0)
        await self.server.serve_forever(background=True)
        return ServedCabinet(self.cabinet, f"tcp://127.0.0.1:{self.server.bound_port}", "tcp")

    async def __aexit__(self, *exc: object) -> None:
        await self.server.shutdown()
        if self.bridge:
            self.bridge.close()
