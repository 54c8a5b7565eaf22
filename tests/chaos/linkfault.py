"""A bad 4G link between the cabinet and the broker: a TCP proxy that delays, stalls and cuts.

Kernel netem (``tc qdisc ... netem``) is the better tool where the kernel has it: it loses,
duplicates and reorders packets, and TCP turns those into the delays and retransmissions
the application sees. :func:`netem_available` tells whether this machine can do that. The
proxy here works everywhere and acts at the level the application can notice:

- latency with jitter on every chunk, each direction in order (what loss and reordering
  under TCP look like from above);
- stalls: nothing forwarded for a while with the connection left open (a dead zone);
- cuts: both sides reset mid-stream, so paho resends its unacknowledged QoS 1 messages
  with the DUP flag after reconnecting (duplicates where they matter: on the MQTT level).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field


@dataclass
class LinkProfile:
    """How bad the link is right now (changed while running)."""

    delay_s: float = 0.0
    jitter_s: float = 0.0
    stalled: bool = False


@dataclass
class LinkStats:
    connections: int = 0
    cuts: int = 0
    stalls: int = 0
    bytes_up: int = 0
    bytes_down: int = 0


@dataclass
class _Pipe:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


class FaultyLink:
    """Listens on 127.0.0.1:``port`` (0: any) and forwards to ``target`` through ``profile``."""

    def __init__(self, target_host: str, target_port: int, rng: random.Random) -> None:
        self.target = (target_host, target_port)
        self.rng = rng
        self.profile = LinkProfile()
        self.stats = LinkStats()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._conns: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._unstall = asyncio.Event()
        self._unstall.set()

    async def start(self, port: int = 0) -> FaultyLink:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- faults ------------------------------------------------------------------------------

    def cut(self) -> int:
        """Reset every open connection (both sides); returns how many were cut."""
        n = 0
        for client, upstream in list(self._conns):
            for w in (client, upstream):
                with contextlib.suppress(Exception):
                    w.transport.abort()
            n += 1
        self._conns.clear()
        self.stats.cuts += n
        return n

    def stall(self, on: bool) -> None:
        """Hold every byte (connections stay open) until ``stall(False)``."""
        self.profile.stalled = on
        if on:
            self.stats.stalls += 1
            self._unstall.clear()
        else:
            self._unstall.set()

    # --- plumbing -----------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.wait_for(asyncio.open_connection(*self.target), 5)
        except (OSError, TimeoutError):
            writer.transport.abort()  # the broker is down: the client sees a refused/reset link
            return
        self.stats.connections += 1
        pair = (writer, up_w)
        self._conns.add(pair)
        for src, dst, up in ((reader, up_w, True), (up_r, writer, False)):
            t = asyncio.create_task(self._pump(src, dst, up, pair))
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def _pump(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        up: bool,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        """Forward ``src`` to ``dst`` in order, each chunk after the profile's delay."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                await asyncio.sleep(max(0.0, due - loop.time()))
                await self._unstall.wait()
                dst.write(data)
                await dst.drain()

        sender = asyncio.create_task(deliver())
        try:
            while data := await src.read(65536):
                if up:
                    self.stats.bytes_up += len(data)
                else:
                    self.stats.bytes_down += len(data)
                p = self.profile
                delay = p.delay_s + (self.rng.uniform(0, p.jitter_s) if p.jitter_s else 0.0)
                queue.put_nowait((loop.time() + delay, data))
            queue.put_nowait((0.0, b""))
            await sender
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(Exception):
                dst.transport.abort()
            self._conns.discard(pair)


@dataclass
class NetemProbe:
    """Whether kernel netem works here, and why not."""

    ok: bool
    reason: str = ""
    details: list[str] = field(default_factory=list)


def netem_available() -> NetemProbe:
    """Try ``ip netns`` + veth + a netem qdisc in a throw-away namespace; clean up either way."""
    ip, tc = shutil.which("ip"), shutil.which("tc")
    if not ip or not tc:
        return NetemProbe(False, "iproute2 (ip, tc) is not installed")
    ns = f"chaosprobe{uuid.uuid4().hex[:6]}"
    veth = f"vp{uuid.uuid4().hex[:6]}"

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)

    try:
        r = run(ip, "netns", "add", ns)
        if r.returncode:
            return NetemProbe(False, f"cannot create a network namespace: {r.stderr.strip()}")
        r = run(ip, "link", "add", veth, "type", "veth", "peer", "name", veth + "b", "netns", ns)
        if r.returncode:
            return NetemProbe(False, f"cannot create a veth pair: {r.stderr.strip()}")
        r = run(tc, "qdisc", "add", "dev", veth, "root", "netem", "delay", "10ms", "loss", "1%")
        if r.returncode:
            return NetemProbe(False, f"the kernel has no netem qdisc (sch_netem): {r.stderr.strip()}")
        return NetemProbe(True)
    finally:
        run(ip, "link", "del", veth)
        run(ip, "netns", "del", ns)
