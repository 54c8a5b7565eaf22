"""Offline rent passes at the kiosk: verify with no network, count local use, then rent.

A pass is refused (with a plain reason for the renter and a ``security_event`` in the ledger)
when forged, signed by an unknown key, expired beyond the allowed clock skew, revoked, or
already holding as many batteries from this cabinet as it allows.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import Any

from cabinet.controller import Controller, RentOutcome, RentRequest
from cabinet.ledger import LedgerUnwritable
from sync.errors import Expired, Forged, ProtocolError, Revoked, SecurityRejection, UnknownKey
from sync.events import EventType
from sync.signing import Verifier

log = logging.getLogger(__name__)

#: What the kiosk shows for each refusal (keys are the reasons the API returns).
REASONS = {
    "pass_forged": "This code is not a valid pass.",
    "pass_unknown_key": "This pass was not issued for this network of cabinets.",
    "pass_expired": "This pass has expired. Open the app to get a new one.",
    "pass_revoked": "This pass has been cancelled. Open the app for help.",
    "pass_in_use": "This pass already has a battery out. Return it first.",
    "pass_unreadable": "This code could not be read. Try again, or rent in the app.",
    "no_rentable_battery": "No battery is ready right now. Please try another cabinet.",
    "lock_jammed": "The slot did not open. Please try again.",
    "not_taken": "The battery was not taken, so nothing was rented.",
    "ledger_unusable": "This cabinet cannot rent right now (technical fault).",
    "storage_unwritable": "This cabinet cannot rent right now (its storage is full). Please try another cabinet.",
}


def _reason_of(e: ProtocolError) -> str:
    if isinstance(e, Forged):
        return "pass_forged"
    if isinstance(e, UnknownKey):
        return "pass_unknown_key"
    if isinstance(e, Expired):
        return "pass_expired"
    if isinstance(e, Revoked):
        return "pass_revoked"
    if isinstance(e, SecurityRejection):
        return "pass_forged"
    return "pass_unreadable"


@dataclass
class PassDesk:
    """Takes scanned pass texts and turns good ones into rentals."""

    controller: Controller
    # the current verifier (keys change with signed config), called with the ledger: its replay
    # state holds the trusted time floor, so a clock thrown back cannot revive an expired pass
    verifier: Callable[[Any], Verifier]
    revoked: Callable[[], Container[str]]
    max_per_pass: int = 1

    def __post_init__(self) -> None:
        self._lock = asyncio.Lock()

    async def submit(self, text: str) -> RentOutcome:
        """Verify ``text`` and rent one battery for it, or refuse with a reason from REASONS."""
        try:
            return await self._submit(text)
        except LedgerUnwritable as e:
            # card full or read-only: nothing was written and no lock was pulsed (the ledger
            # refuses a rental's first event unless there is room to finish it)
            log.error("pass refused, storage not writable: %s", e)
            return RentOutcome("", "refused", "storage_unwritable")

    async def _submit(self, text: str) -> RentOutcome:
        ledger = self.controller.ledger
        text = text.strip()
        revoked = self.revoked()
        try:
            p = await ledger.run(lambda led: self.verifier(led).verify_pass(text, revoked))
        except ProtocolError as e:
            reason = _reason_of(e)
            kind = reason if isinstance(e, SecurityRejection) else "pass_malformed"
            await ledger.record(EventType.SECURITY_EVENT, kind=kind, detail=e.reason[:2000])
            log.warning("pass refused: %s", e.reason)
            return RentOutcome("", "refused", reason)
        async with self._lock:
            open_now = await ledger.run(lambda led: led.open_rentals_for_pass(p.pass_id))
            if len(open_now) >= min(p.max_rentals, self.max_per_pass):
                await ledger.record(
                    EventType.SECURITY_EVENT,
                    kind="pass_reused",
                    detail=f"pass {p.pass_id} already holds {len(open_now)} rental(s) here",
                )
                return RentOutcome(open_now[0].rental_id, "refused", "pass_in_use")
            rental_id = f"P-{p.pass_id}-{uuid.uuid4().hex[:12]}"
            return await self.controller.rent(
                RentRequest(rental_id=rental_id, source="pass", user=p.user, pass_id=p.pass_id)
            )
