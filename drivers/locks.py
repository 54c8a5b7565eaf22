"""LockBank: one lock output and one seat switch input per slot, on gpiozero devices.

The pin factory is the caller's choice (gpiozero's own setting): lgpio on a Pi,
``MockFactory`` in tests, ``cabinetsim`` to drive a simulator in another process. Opening
a slot is a pulse on its lock output; the pack then pops out and the seat switch goes
inactive. If the switch does not change within the timeout, the lock is jammed.

Seat switch edges arrive on gpiozero's threads and are handed to the asyncio loop with
``loop.call_soon_threadsafe``; listeners run on the loop.

Usage::

    bank = LockBank(["GPIO5", "GPIO6"], ["GPIO13", "GPIO19"], pulse_s=0.3)
    bank.start()                         # inside the running loop
    bank.add_listener(lambda slot, seated: ...)
    result = await bank.open(2, timeout=2.0)   # OpenResult(slot=2, outcome=OPENED, ...)
    bank.close()
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gpiozero import DigitalInputDevice, OutputDevice

SeatListener = Callable[[int, bool], None]


class OpenOutcome(StrEnum):
    """What happened when a slot was opened."""

    OPENED = "opened"  # the seat switch went inactive: the pack came out
    JAMMED = "jammed"  # a pack was seated and the switch did not change
    EMPTY = "empty"  # nothing was seated, so nothing could be seen to move


@dataclass(frozen=True)
class OpenResult:
    """Result of :meth:`LockBank.open`."""

    slot: int
    outcome: OpenOutcome
    seconds: float  # from energising until the switch changed (or until giving up)

    @property
    def opened(self) -> bool:
        """True when the pack came out."""
        return self.outcome is OpenOutcome.OPENED


class LockBank:
    """Slot locks and seat switches; slot k uses ``lock_pins[k-1]`` and ``seat_pins[k-1]``."""

    def __init__(
        self,
        lock_pins: Sequence[str | int],
        seat_pins: Sequence[str | int],
        *,
        pin_factory: Any = None,
        pulse_s: float = 0.3,
        active_high: bool = True,
        seat_active_high: bool = True,
        seat_pull_up: bool | None = None,
    ) -> None:
        if len(lock_pins) != len(seat_pins) or not lock_pins:
            raise ValueError(
                f"need one seat pin per lock pin: {len(lock_pins)} locks, {len(seat_pins)} seat switches"
            )
        if not 0.01 <= pulse_s <= 5:
            raise ValueError(f"lock pulse must be 0.01..5 s, not {pulse_s}")
        self.pulse_s = pulse_s
        self._locks: list[OutputDevice] = []
        self._seats: list[DigitalInputDevice] = []
        try:
            for lp, sp in zip(lock_pins, seat_pins, strict=True):
                self._locks.append(
                    OutputDevice(lp, active_high=active_high, initial_value=False, pin_factory=pin_factory)
                )
                self._seats.append(
                    DigitalInputDevice(
                        sp,
                        pull_up=seat_pull_up,
                        active_state=seat_active_high if seat_pull_up is None else None,
                        pin_factory=pin_factory,
                    )
                )
        except Exception:
            self.close()
            raise
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listeners: list[SeatListener] = []
        self._waiters: dict[int, asyncio.Future[float]] = {}
        self._busy: dict[int, asyncio.Lock] = {}

    @property
    def slot_count(self) -> int:
        """Number of slots (1..slot_count)."""
        return len(self._locks)

    def start(self) -> None:
        """Attach the seat switch callbacks to the running asyncio loop."""
        self._loop = asyncio.get_running_loop()
        for i, dev in enumerate(self._seats):
            slot = i + 1
            dev.when_activated = lambda slot=slot: self._edge(slot, True)
            dev.when_deactivated = lambda slot=slot: self._edge(slot, False)

    def close(self) -> None:
        """De-energise every lock and release the pins."""
        for dev in self._seats:
            dev.when_activated = dev.when_deactivated = None
            dev.close()
        for lock in self._locks:
            lock.off()
            lock.close()
        self._seats, self._locks = [], []

    def add_listener(self, listener: SeatListener) -> None:
        """Call ``listener(slot, seated)`` on the loop whenever a seat switch changes."""
        self._listeners.append(listener)

    def is_seated(self, slot: int) -> bool:
        """The seat switch of ``slot`` now."""
        return bool(self._seats[self._index(slot)].is_active)

    def is_energised(self, slot: int) -> bool:
        """Whether ``slot``'s lock output is on now."""
        return bool(self._locks[self._index(slot)].is_active)

    def _index(self, slot: int) -> int:
        if not 1 <= slot <= len(self._locks):
            raise ValueError(f"slot {slot} does not exist (1..{len(self._locks)})")
        return slot - 1

    def _edge(self, slot: int, seated: bool) -> None:
        # gpiozero thread (or the caller's thread for mock pins): hop into the loop
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._deliver, slot, seated)

    def _deliver(self, slot: int, seated: bool) -> None:
        fut = self._waiters.get(slot)
        if fut is not None and not seated and not fut.done():
            fut.set_result(time.monotonic())
        for listener in list(self._listeners):
            listener(slot, seated)

    async def open(self, slot: int, timeout: float = 2.0) -> OpenResult:
        """Pulse ``slot``'s lock and wait up to ``timeout`` s for its seat switch to go inactive."""
        i = self._index(slot)
        if self._loop is None:
            raise RuntimeError("LockBank.start() was not called inside the running loop")
        lock = self._busy.setdefault(slot, asyncio.Lock())
        async with lock:
            was_seated = self.is_seated(slot)
            fut: asyncio.Future[float] = self._loop.create_future()
            self._waiters[slot] = fut
            started = time.monotonic()
            try:
                self._locks[i].on()
                try:
                    await asyncio.wait_for(asyncio.shield(fut), self.pulse_s)
                except TimeoutError:
                    pass
                # hold the pulse its full length: a latch needs the whole pulse to release
                rest = self.pulse_s - (time.monotonic() - started)
                if rest > 0:
                    await asyncio.sleep(rest)
                self._locks[i].off()
                if not was_seated:
                    return OpenResult(slot, OpenOutcome.EMPTY, time.monotonic() - started)
                remaining = max(0.0, timeout - (time.monotonic() - started))
                try:
                    changed_at = await asyncio.wait_for(fut, remaining)
                except TimeoutError:
                    return OpenResult(slot, OpenOutcome.JAMMED, time.monotonic() - started)
                return OpenResult(slot, OpenOutcome.OPENED, changed_at - started)
            finally:
                self._locks[i].off()
                self._waiters.pop(slot, None)
