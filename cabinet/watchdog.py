"""systemd notification (sd_notify) and the watchdog that pings only while the loop is healthy.

Speaks the documented datagram protocol on ``$NOTIFY_SOCKET`` directly (a few lines; no
dependency). Outside systemd (no socket) every call is a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

from cabinet.tasks import cancel_and_wait

log = logging.getLogger(__name__)


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``READY=1``) to systemd; False when not running under systemd."""
    addr = (os.environ if env is None else env).get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(addr)
        s.sendall(state.encode())
    return True


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Half of systemd's ``WATCHDOG_USEC`` in seconds, or None when the watchdog is off."""
    e = os.environ if env is None else env
    usec = e.get("WATCHDOG_USEC")
    pid = e.get("WATCHDOG_PID")
    if not usec or (pid and int(pid) != os.getpid()):
        return None
    return int(usec) / 2e6


class Watchdog:
    """Pings systemd while every health check passes and the event loop is not stalled.

    ``checks`` return None when healthy or a reason string; a failing check stops the pings,
    so systemd restarts the service after ``WatchdogSec``.
    """

    def __init__(
        self,
        checks: list[Callable[[], str | None]],
        interval: float | None = None,
        max_loop_lag_s: float = 5.0,
    ) -> None:
        self.checks = checks
        self.interval = watchdog_interval() if interval is None else interval
        self.max_loop_lag_s = max_loop_lag_s
        self.last_problem: str | None = None
        self.rounds = 0  # checks done so far (tests wait on it instead of sleeping)
        self._task: asyncio.Task[None] | None = None

    def problem(self, lag_s: float) -> str | None:
        if lag_s > self.max_loop_lag_s:
            return f"event loop stalled for {lag_s:.1f} s"
        for check in self.checks:
            try:
                reason = check()
            except Exception as e:  # a broken check is a problem, never the end of the watchdog
                log.exception("watchdog: health check %r failed", check)
                return f"health check failed: {type(e).__name__}: {e}"
            if reason:
                return reason
        return None

    async def _run(self) -> None:
        assert self.interval
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(self.interval)
            lag = time.monotonic() - t0 - self.interval
            problem = self.problem(lag)
            self.rounds += 1
            try:
                if problem != self.last_problem and problem:
                    log.error("watchdog: not pinging systemd: %s", problem)
                    notify(f"STATUS=unhealthy: {problem}")
                elif problem is None and self.last_problem:
                    log.warning("watchdog: healthy again (was: %s)", self.last_problem)
                    notify("STATUS=running")
                if problem is None:
                    notify("WATCHDOG=1")
            except OSError as e:  # systemd's socket went away: keep going, the next round retries
                log.error("watchdog: cannot notify systemd: %s", e)
            self.last_problem = problem

    async def start(self) -> None:
        notify("READY=1")
        if self.interval:
            self._task = asyncio.create_task(self._run(), name="watchdog")

    async def stop(self) -> None:
        notify("STOPPING=1")
        if self._task:
            await cancel_and_wait([self._task])
            self._task = None
