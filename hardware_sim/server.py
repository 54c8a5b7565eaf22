"""SimServer: one running simulated cabinet with all its wires (Modbus pty/TCP, GPIO link, control API).

async with SimServer(SimConfig(slots=24), speed=10, pty=True, tcp_port=0) as sim:
    sim.pty_path, sim.tcp_port, sim.gpio_address, sim.control_url, sim.cabinet
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from hardware_sim.cabinet import SimCabinet, SimConfig
from hardware_sim.control import make_app
from hardware_sim.faults import ScheduledFault
from hardware_sim.gpio_link import GpioLinkServer
from hardware_sim.modbus import PtyBridge, SimSerialServer, SimTcpServer

log = logging.getLogger(__name__)


class SimServer:
    """Runs a SimCabinet's clock and serves it; every port may be 0 (pick a free one) or None (off).

    ``pty``: True for a pty pair, a path to also create a symlink to the client end there, or None.
    ``speed``: sim seconds per real second for the physics.
    """

    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        speed: float = 1.0,
        pty: bool | str | Path | None = True,
        tcp_port: int | None = None,
        gpio_port: int | None = 0,
        control_port: int | None = 0,
        host: str = "127.0.0.1",
        scenario: list[ScheduledFault] | None = None,
        tick_s: float = 0.1,
    ) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, not {speed}")
        self.cabinet = SimCabinet(config)
        if scenario:
            self.cabinet.load_scenario(scenario)
        self.speed, self.tick_s, self.host = speed, tick_s, host
        self._pty, self._tcp_port, self._gpio_port, self._control_port = (
            pty,
            tcp_port,
            gpio_port,
            control_port,
        )
        self.pty_path: str | None = None
        self.tcp_port: int | None = None
        self.gpio_address: str | None = None
        self.control_url: str | None = None
        self._closers: list[Any] = []
        self._clock: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SimServer:
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _start(self) -> None:
        if self._pty:
            bridge = await PtyBridge(None if self._pty is True else Path(str(self._pty))).start()
            self._closers.append(bridge.close)
            rtu = SimSerialServer(self.cabinet, bridge.server_path)
            await rtu.serve_forever(background=True)
            self._closers.append(rtu.shutdown)
            self.pty_path = bridge.client_path
        if self._tcp_port is not None:
            tcp = SimTcpServer(self.cabinet, self.host, self._tcp_port)
            await tcp.serve_forever(background=True)
            self._closers.append(tcp.shutdown)
            self.tcp_port = tcp.bound_port
        if self._gpio_port is not None:
            link = GpioLinkServer(self.cabinet, self.host, self._gpio_port)
            await link.start()
            self._closers.append(link.close)
            self.gpio_address = link.address
        if self._control_port is not None:
            runner = web.AppRunner(make_app(self.cabinet), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, self.host, self._control_port)
            await site.start()
            self._closers.append(runner.cleanup)
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.control_url = f"http://{self.host}:{port}"
        self._clock = asyncio.create_task(self._run_clock(), name="sim-clock")

    async def _run_clock(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.tick_s)
            now = time.monotonic()
            try:
                self.cabinet.step((now - last) * self.speed)
            except Exception:
                log.exception("simulator clock stopped at sim time %.1f s", self.cabinet.time)
                raise
            last = now

    async def wait(self) -> None:
        """Run until the clock stops (it only stops by crashing, e.g. on a scenario error, or by close())."""
        assert self._clock is not None, "SimServer is not started"
        await self._clock

    async def close(self) -> None:
        """Stop the clock and every server (reverse order of start)."""
        if self._clock:
            self._clock.cancel()
            try:
                await self._clock
            except asyncio.CancelledError:
                pass
            except Exception:
                log.exception("simulator clock crashed")
            self._clock = None
        while self._closers:
            r = self._closers.pop()()
            if asyncio.iscoroutine(r):
                await r

    def describe(self) -> dict[str, Any]:
        """Where everything is, for the CLI and the demo."""
        return {
            "slots": len(self.cabinet.slots),
            "boards": [(u, len(b.slots)) for u, b in self.cabinet.boards.items()],
            "pty": self.pty_path,
            "tcp_port": self.tcp_port,
            "gpio": self.gpio_address,
            "control": self.control_url,
            "speed": self.speed,
        }
