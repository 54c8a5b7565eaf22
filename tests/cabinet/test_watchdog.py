"""The systemd watchdog against a real NOTIFY_SOCKET (a unix datagram socket this test binds):
READY=1 once start-up is done, WATCHDOG=1 while healthy, none while the loop stalls or a check fails."""

from __future__ import annotations

import asyncio
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cabinet.watchdog import Watchdog
from tests.conftest import free_port, until


class NotifySocket:
    """What systemd's end of ``$NOTIFY_SOCKET`` receives, in order (read by a thread, so
    datagrams are collected even while the event loop is blocked)."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="notify-")  # short: AF_UNIX paths are limited to 107 bytes
        self.path = str(Path(self.dir) / "sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages: list[str] = []
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue
            except OSError:
                return

    def send_marker(self, text: str) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(text.encode(), self.path)

    def count(self, msg: str) -> int:
        return sum(1 for m in list(self.messages) if m == msg)

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifySocket]:
    ns = NotifySocket()
    monkeypatch.setenv("NOTIFY_SOCKET", ns.path)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # ping every 0.1 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield ns
    ns.close()


async def test_ready_once_then_pings_and_none_while_the_loop_is_blocked(notify_socket: NotifySocket) -> None:
    wd = Watchdog([], max_loop_lag_s=0.3)
    assert wd.interval == pytest.approx(0.1)
    await wd.start()
    try:
        await until(lambda: notify_socket.count("WATCHDOG=1") >= 3, what="pings while healthy")
        assert notify_socket.messages[0] == "READY=1"

        def block() -> None:
            notify_socket.send_marker("TEST=blocking")
            time.sleep(1.0)  # the event loop stalls (a blocking call on the loop)

        asyncio.get_running_loop().call_soon(block)
        await until(
            lambda: any(m.startswith("STATUS=unhealthy: event loop stalled") for m in notify_socket.messages),
            what="the stall to be reported",
        )
        seen = list(notify_socket.messages)
        i, j = seen.index("TEST=blocking"), next(k for k, m in enumerate(seen) if m.startswith("STATUS="))
        assert "WATCHDOG=1" not in seen[i:j], "pinged while the loop was stalled"
        n = notify_socket.count("WATCHDOG=1")
        await until(lambda: notify_socket.count("WATCHDOG=1") > n + 2, what="pings again after the stall")
    finally:
        await wd.stop()
    assert notify_socket.count("READY=1") == 1
    await until(lambda: notify_socket.messages[-1] == "STOPPING=1", what="STOPPING=1")


async def test_a_failing_health_check_stops_the_pings_until_it_passes(notify_socket: NotifySocket) -> None:
    state: dict[str, Any] = {"problem": None, "calls": 0}

    def check() -> str | None:
        state["calls"] += 1
        return state["problem"]

    wd = Watchdog([check], max_loop_lag_s=5)
    await wd.start()
    try:
        await until(lambda: notify_socket.count("WATCHDOG=1") >= 2, what="pings while healthy")
        state["problem"] = "bus poller stuck"
        await until(lambda: "STATUS=unhealthy: bus poller stuck" in notify_socket.messages, what="the report")
        at = notify_socket.messages.index("STATUS=unhealthy: bus poller stuck")
        calls = state["calls"]
        await until(lambda: state["calls"] >= calls + 5, what="five more watchdog rounds")
        assert "WATCHDOG=1" not in notify_socket.messages[at:], "pinged while a health check failed"
        state["problem"] = None
        await until(lambda: "WATCHDOG=1" in notify_socket.messages[at:], what="pings after recovery")
    finally:
        await wd.stop()


async def test_a_health_check_that_raises_counts_as_unhealthy_and_keeps_the_watchdog_alive(
    notify_socket: NotifySocket,
) -> None:
    state = {"raise": True, "calls": 0}

    def check() -> str | None:
        state["calls"] += 1
        if state["raise"]:
            raise RuntimeError("ledger gone")
        return None

    wd = Watchdog([check], max_loop_lag_s=5)
    await wd.start()
    try:
        await until(lambda: any("ledger gone" in m for m in notify_socket.messages), what="the report")
        await until(lambda: state["calls"] >= 5, what="more rounds")
        assert notify_socket.count("WATCHDOG=1") == 0
        state["raise"] = False
        await until(lambda: notify_socket.count("WATCHDOG=1") >= 1, what="pings after the check recovers")
    finally:
        await wd.stop()


async def test_the_cabinet_sends_ready_once_after_start_and_stops_pinging_when_its_poller_dies(
    notify_socket: NotifySocket, make_rig: Any
) -> None:
    rig = await make_rig(web={"enabled": True, "host": "127.0.0.1", "port": free_port(), "tech_tls": False})
    cab = rig.cab
    assert notify_socket.count("READY=1") == 1
    # every part had started before READY: the web UI's runner, the poller, the health part
    assert cab.web._runner is not None and cab.controller is not None
    await until(lambda: notify_socket.count("WATCHDOG=1") >= 2, what="pings from the running cabinet")
    poller = cab.task("bus-poller")
    assert poller is not None
    poller.cancel()
    await until(
        lambda: "STATUS=unhealthy: task bus-poller stopped" in notify_socket.messages, what="the report"
    )
    at = notify_socket.messages.index("STATUS=unhealthy: task bus-poller stopped")
    rounds = cab.watchdog.rounds
    await until(lambda: cab.watchdog.rounds >= rounds + 3, what="more watchdog rounds")
    assert "WATCHDOG=1" not in notify_socket.messages[at:]
    assert notify_socket.count("READY=1") == 1
