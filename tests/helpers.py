"""Helpers every test area may import: free ports, polling, and a real Mosquitto broker.

A plain module (no fixtures), so a conftest imports helpers from here and never from another
conftest; ``tests/conftest.py`` re-exports them for the tests that import them from there.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def until(
    pred: Callable[[], Any], timeout: float = 10.0, what: str = "condition", every: float = 0.02
) -> Any:
    """Poll an (a)sync predicate until it is truthy; its value, or AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        r = pred()
        if asyncio.iscoroutine(r):
            r = await r
        if r:
            return r
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(every)


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Block until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout} s")


@dataclass
class Broker:
    """A running Mosquitto started for one test."""

    host: str
    port: int
    proc: subprocess.Popen[bytes]
    conf: Path
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def start(self) -> None:
        """(Re)start the broker on the same port, e.g. after ``stop()`` in a fault test."""
        self.proc = subprocess.Popen(
            [_mosquitto(), "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=open(self.log, "ab")
        )
        wait_for_port(self.host, self.port)


def _mosquitto() -> str:
    path = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
    )
    if not path:
        pytest.fail(
            "mosquitto is not installed: run the README's test command (it installs it) or apt-get install mosquitto"
        )
    return path


def start_broker(tmp: Path, extra_conf: str = "") -> Broker:
    """Start Mosquitto on a free port with a config in ``tmp``; anonymous access unless extra_conf says otherwise."""
    port = free_port()
    conf = tmp / "mosquitto.conf"
    log = tmp / "mosquitto.log"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        + ("allow_anonymous true\n" if "allow_anonymous" not in extra_conf else "")
        + "persistence false\n"
        + f"log_dest file {log}\n"
        + "log_type error\nlog_type warning\nlog_type notice\n"
        + extra_conf
    )
    b = Broker("127.0.0.1", port, None, conf, log)  # type: ignore[arg-type]
    b.start()
    return b
