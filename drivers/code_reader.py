"""CodeReader: a line-oriented serial QR/barcode scanner (pyserial), as an async iterator of codes.

Kiosk scanners in "serial/USB-CDC" mode send each scanned code as one line (CR, LF or
CRLF). Noise on the line (a scanner powering up, a loose cable) must not become a code:
lines that are empty, too long or hold control/undecodable bytes are dropped and counted.

    async with CodeReader("/dev/ttyACM0") as reader:
        async for code in reader:
            handle(code)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import serial


@dataclass
class ReaderStats:
    """Counters for the UI and /metrics."""

    codes: int = 0
    rejected: int = 0  # garbage lines dropped
    overflows: int = 0  # lines longer than max_line


class CodeReader:
    """Reads scanned codes from a serial port without blocking the event loop."""

    def __init__(self, port: str, baudrate: int = 9600, max_line: int = 1024) -> None:
        self.port, self.baudrate, self.max_line = port, baudrate, max_line
        self.stats = ReaderStats()
        self._serial: serial.Serial | None = None
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._buf = bytearray()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Open the port and start reading (inside the running loop)."""
        self._loop = asyncio.get_running_loop()
        self._serial = serial.Serial(self.port, self.baudrate, timeout=0)
        self._loop.add_reader(self._serial.fileno(), self._readable)

    async def close(self) -> None:
        """Stop reading and close the port; iteration ends."""
        if self._serial is not None and self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._serial.fileno())
            self._serial.close()
            self._serial = None
        self._queue.put_nowait(None)

    async def __aenter__(self) -> CodeReader:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _readable(self) -> None:
        assert self._serial is not None
        try:
            data = self._serial.read(4096)
        except serial.SerialException:
            data = b""
        if not data:  # the device went away
            self._queue.put_nowait(None)
            assert self._loop is not None
            self._loop.remove_reader(self._serial.fileno())
            return
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        for byte in data:
            if byte in (0x0D, 0x0A):
                self._line(bytes(self._buf))
                self._buf.clear()
            elif len(self._buf) >= self.max_line:
                if len(self._buf) == self.max_line:
                    self.stats.overflows += 1
                    self._buf.append(byte)  # mark: skip the rest of this line
            else:
                self._buf.append(byte)

    def _line(self, raw: bytes) -> None:
        if not raw:
            return
        if len(raw) > self.max_line:
            self.stats.rejected += 1
            return
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            self.stats.rejected += 1
            return
        if not text or not text.isprintable():
            self.stats.rejected += 1
            return
        self.stats.codes += 1
        self._queue.put_nowait(text)

    async def read(self) -> str | None:
        """The next code, or None when the reader is closed or the port went away."""
        return await self._queue.get()

    async def __aiter__(self) -> AsyncIterator[str]:
        while (code := await self.read()) is not None:
            yield code
