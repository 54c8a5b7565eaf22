"""The kiosk's serial QR code reader: every scanned code goes to the pass desk.

What happens next shows on the kiosk like a code typed on the screen: an eject is announced by
the controller's own events; a refusal (forged, expired, in use...) is published here, since no
eject follows it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from cabinet.passes import PassDesk
from drivers.code_reader import CodeReader

log = logging.getLogger(__name__)


class Scanner:
    """A cabinet part: reads codes from ``port`` and submits each one as an offline pass."""

    def __init__(
        self,
        port: str,
        baudrate: int,
        passes: PassDesk,
        publish: Callable[[str, dict[str, Any]], None] = lambda kind, data: None,
    ) -> None:
        self.reader = CodeReader(port, baudrate)
        self.passes = passes
        self.publish = publish
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            await self.reader.start()
        except OSError as e:  # no reader plugged in: the kiosk page still takes codes
            log.error("code reader %s not available: %s", self.reader.port, e)
            return
        self._task = asyncio.create_task(self._run(), name="code-reader")

    async def _run(self) -> None:
        async for code in self.reader:
            try:
                out = await self.passes.submit(code)
            except Exception:
                log.exception("scanned code could not be handled")
                continue
            if out.status == "refused":
                self.publish("scan_refused", {"reason": out.reason, "rental_id": out.rental_id})

    async def stop(self) -> None:
        await self.reader.close()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
