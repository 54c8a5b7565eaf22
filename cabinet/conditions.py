"""Conditions the fleet must be told of, recorded in the ledger on each transition only.

- ``board_down`` / ``board_up``: a slot board the bus isolated (``fail_threshold`` failed scans
  in a row, ``drivers.battery_bus``), and its first good answer after that.
- ``stock_changed``: the cabinet became, or stopped being, *empty* (no battery the controller
  would rent: its own rule, ``Controller.rentable_slots``) or *full* (no slot a return could go
  into: known, empty, no fault, no quarantine; a slot of a dead board is not counted as free).
  A new state is recorded once it has held ``alerts.stock_hold_s`` (a pack hovering at the
  rentable minimum does not flap).
- ``cert_expiring`` / ``cert_renewed``: the client certificate (``sync.cert_file``) or the CA
  (``sync.ca_file``) expires within ``alerts.cert_warn_days``; checked every
  ``alerts.cert_check_interval_s``.

The cabinet is the honest source of these: it alone sees its boards and applies its rent and
return rules (the cloud's view has neither the deny list nor the seat switches). What is
already recorded is read back from the ledger at start, so a restart repeats nothing. The
cloud turns the events into alerts raised once and cleared (``cloud/fleet/alerting.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cabinet.config import Config
from cabinet.controller import INVENTORY_SCANS, Controller
from cabinet.ledger.events import decode_body
from cabinet.tasks import cancel_and_wait
from sync.events import EventType

log = logging.getLogger(__name__)

TYPES = ("board_down", "board_up", "stock_changed", "cert_expiring", "cert_renewed")


def cert_not_after(path: str | Path) -> float:
    """The notAfter of a PEM certificate file, Unix seconds."""
    from cryptography import x509

    return x509.load_pem_x509_certificate(Path(path).read_bytes()).not_valid_after_utc.timestamp()


def recorded_conditions(lg: Any) -> tuple[set[int], tuple[bool, bool], set[str]]:
    """(boards down, (empty, full), expiring certificates) as the ledger's events last said."""
    down: set[int] = set()
    stock = (False, False)
    expiring: set[str] = set()
    marks = ",".join("?" * len(TYPES))
    for type_, blob in lg.conn.execute(
        f"SELECT type, body FROM events WHERE type IN ({marks}) ORDER BY seq", TYPES
    ):
        body = decode_body(blob)
        if type_ == "board_down":
            down.add(body["board"])
        elif type_ == "board_up":
            down.discard(body["board"])
        elif type_ == "stock_changed":
            stock = (body["empty"], body["full"])
        elif type_ == "cert_expiring":
            expiring.add(body["cert"])
        else:
            expiring.discard(body["cert"])
    return down, stock, expiring


class ConditionWatch:
    """A cabinet part: after each bus scan period, compares the conditions with what is recorded."""

    def __init__(
        self,
        c: Config,
        ledger: Any,  # AsyncLedger
        bus: Any,  # drivers.battery_bus.BatteryBus: health() per board
        controller: Controller | None,
        wake: Callable[[], None] | None = None,  # the sync agent: send what was recorded now
    ) -> None:
        self.ledger, self.bus, self.controller, self.wake = ledger, bus, controller, wake
        self.slots = c["cabinet.slots"]
        self.interval_s = c["bus.poll_interval_s"]
        self.hold_s = c["alerts.stock_hold_s"]
        self.cert_warn_days = c["alerts.cert_warn_days"]
        self.cert_interval_s = c["alerts.cert_check_interval_s"]
        self.certs = {
            name: c[key] for name, key in (("client", "sync.cert_file"), ("ca", "sync.ca_file")) if c[key]
        }
        self.boards_down: set[int] = set()
        self.stock = (False, False)
        self.expiring: set[str] = set()
        self._pending: tuple[tuple[bool, bool], float] | None = None
        self._certs_checked_at = -1e18
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.boards_down, self.stock, self.expiring = await self.ledger.run(recorded_conditions)
        self._task = asyncio.create_task(self._run(), name="conditions")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])

    async def _run(self) -> None:
        while True:
            try:
                await self.check_once()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a full card, say: nothing recorded, so the next round tries again
                log.warning("conditions: not recorded yet: %s", e)
            await asyncio.sleep(self.interval_s)

    async def check_once(self) -> None:
        await self.check_boards()
        await self.check_stock()
        if time.monotonic() - self._certs_checked_at >= self.cert_interval_s:
            await self.check_certs()
            self._certs_checked_at = time.monotonic()

    async def _record(self, type_: str, **body: Any) -> None:
        await self.ledger.record(type_, **body)
        log.warning("condition recorded: %s %s", type_, body)
        if self.wake is not None:
            self.wake()

    async def check_boards(self) -> None:
        on_bus = set()
        for h in self.bus.health():
            on_bus.add(h.unit_id)
            if h.isolated and h.unit_id not in self.boards_down:
                await self._record(EventType.BOARD_DOWN, board=h.unit_id, first_slot=h.slots[0], last_slot=h.slots[-1],
                                   detail=(h.last_error or "no reply")[:2000])  # fmt: skip
                self.boards_down.add(h.unit_id)
            elif h.online and h.unit_id in self.boards_down:
                await self._record(EventType.BOARD_UP, board=h.unit_id, detail="answers again")
                self.boards_down.discard(h.unit_id)
        for unit in sorted(self.boards_down - on_bus):
            await self._record(
                EventType.BOARD_UP, board=unit, detail="no longer on the bus (configuration changed)"
            )
            self.boards_down.discard(unit)

    async def stock_counts(self) -> tuple[int, int] | None:
        """(rentable batteries, free slots), or None while the controller still takes stock."""
        ctl = self.controller
        if ctl is None or ctl.scans <= INVENTORY_SCANS or ctl.refusing:
            return None
        rentable = len(await ctl.rentable_slots())
        held = {s.slot: s for s in await self.ledger.slots()}
        free = 0
        for slot in range(1, self.slots + 1):
            ob, s = ctl.observed.get(slot), held.get(slot)
            if ob is None or not ob.known or ob.present:
                continue
            if s is not None and (s.sn is not None or s.quarantined or s.fault_kind):
                continue
            free += 1
        return rentable, free

    async def check_stock(self, now: float | None = None) -> None:
        counts = await self.stock_counts()
        if counts is None:
            return
        rentable, free = counts
        state = (rentable == 0, free == 0)
        now = time.monotonic() if now is None else now
        if state == self.stock:
            self._pending = None
            return
        if self._pending is None or self._pending[0] != state:
            self._pending = (state, now)
        if now - self._pending[1] >= self.hold_s:
            await self._record(
                EventType.STOCK_CHANGED, empty=state[0], full=state[1], rentable=rentable, free=free
            )
            self.stock, self._pending = state, None

    async def check_certs(self) -> None:
        for name, path in self.certs.items():
            try:
                not_after = await asyncio.to_thread(cert_not_after, path)
            except (OSError, ValueError) as e:
                log.error("conditions: cannot read the %s certificate %s: %s", name, path, e)
                continue
            days_left = (not_after - time.time()) / 86400
            if days_left <= self.cert_warn_days and name not in self.expiring:
                await self._record(
                    EventType.CERT_EXPIRING, cert=name, not_after=not_after, days_left=round(days_left, 3)
                )
                self.expiring.add(name)
            elif days_left > self.cert_warn_days and name in self.expiring:
                await self._record(EventType.CERT_RENEWED, cert=name, not_after=not_after)
                self.expiring.discard(name)
