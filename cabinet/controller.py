"""The rent and return state machines: the only writer of domain state (through the ledger).

Rent: choose a slot, record the request, pulse the lock, wait for the battery to leave (seat
switch and slot board agree), record the outcome. Return: a readable battery seated in an empty
slot for two scans in a row is recorded as returned. Everything that happens is a ledger event,
so the cloud learns it even when it happens offline.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Container, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from cabinet.ledger import BatteryState, LedgerRuleError, LedgerUnwritable, RentalState, SlotState
from cabinet.observations import Observation
from cabinet.tasks import cancel_and_wait
from sync.events import EventType

log = logging.getLogger(__name__)


#: Scans after start-up during which unknown batteries are stock (``battery_seen``); an unknown
#: battery seated later is a return from another cabinet (``battery_returned``, rental unknown
#: here: the cloud matches it by serial number).
INVENTORY_SCANS = 3


class SlotNow(StrEnum):
    """A slot as the last bus scan and its seat switch read it together."""

    UNKNOWN = "unknown"  # the slot's board did not answer
    SEATED = "seated"  # the bus reads a pack and the seat switch is closed
    OUT = "out"  # the bus reads a pack and the seat switch is open: presented, not taken yet
    EMPTY = "empty"  # no pack on the bus and the seat switch open: a pack here has left
    UNSETTLED = "unsettled"  # no pack on the bus, seat switch still closed: one is behind the other


_UNSETTLED = (SlotNow.UNKNOWN, SlotNow.UNSETTLED)


class Locks(Protocol):
    """What the controller needs of the lock bank (drivers.locks.LockBank)."""

    async def open(self, slot: int, timeout: float) -> Any: ...  # result has .opened (False = jammed)

    def is_seated(self, slot: int) -> bool: ...


@dataclass(frozen=True)
class RentSettings:
    min_soc: int = 80
    eject_timeout_s: float = 30.0
    jam_timeout_s: float = 1.5
    # how long an eject (or the recovery of one after a restart) waits for an unreadable slot's
    # board to answer again before it gives up on seeing the take; longer than the bus backoff
    unreadable_wait_s: float = 10.0
    max_slots_tried: int = 2  # a jam marks the slot faulty and tries one other slot
    fleet_sn_pattern: str = r"^PB[0-9A-F]{6}$"  # what the fleet's serial numbers look like
    hot_return_c: float = 50.0  # a battery returned at or above this is kept out of service


def slot_may_rent(
    state: SlotState | None, ob: Observation | None, settings: RentSettings, denied: Container[str]
) -> bool:
    """The slot and reading part of :func:`is_rentable` (no battery record needed).

    The ledger holds a battery in the slot, no fault and no quarantine on the slot, and the bus
    reads that same battery there now, charged to ``settings.min_soc``, without fault bits and
    not on the deny list.
    """
    if state is None or state.sn is None or state.quarantined or state.fault_kind:
        return False
    if ob is None or not ob.has_battery:
        return False
    return not (ob.sn != state.sn or ob.sn in denied or ob.soc < settings.min_soc or ob.faults)


def is_rentable(
    state: SlotState | None,
    ob: Observation | None,
    battery: BatteryState | None,
    settings: RentSettings,
    denied: Container[str],
) -> bool:
    """The one rule for a slot whose battery may be handed out now.

    ``state`` is the ledger's slot, ``ob`` the latest bus reading of it, ``battery`` the
    ledger's record of the battery the slot holds (``state.sn``): :func:`slot_may_rent`, and
    that battery is known and not quarantined. Used by :meth:`Controller.rentable_slots` and
    by the web UI's slot view (``cabinet.web.state``), so both always agree.
    """
    return slot_may_rent(state, ob, settings, denied) and battery is not None and not battery.quarantined


@dataclass(frozen=True)
class RentRequest:
    """A request to hand out one battery for ``rental_id`` (from the cloud or an offline pass)."""

    rental_id: str
    source: str  # "cloud" | "pass"
    user: str | None = None
    pass_id: str | None = None
    cmd_id: str | None = None


@dataclass(frozen=True)
class RentOutcome:
    """What happened to a rent request; ``status``: started, aborted, refused, duplicate."""

    rental_id: str
    status: str
    reason: str = ""
    slot: int | None = None
    sn: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "started"


@dataclass
class _Eject:
    slot: int
    sn: str
    taken: asyncio.Event = field(default_factory=asyncio.Event)


class Controller:
    """Rent and return, on top of a ledger (async API), the lock bank and bus observations."""

    def __init__(
        self,
        ledger: Any,
        locks: Locks,
        settings: RentSettings,
        deny_list: Callable[[], Iterable[str]] = lambda: (),
    ) -> None:
        self.ledger = ledger
        self.locks = locks
        self.settings = settings
        self.deny_list = deny_list
        self.observed: dict[int, Observation] = {}
        self._rent_lock = asyncio.Lock()  # one eject at a time, as vendors space ejects
        self._ejecting: dict[int, _Eject] = {}
        self._pending_return: dict[int, str] = {}  # slot -> sn seen once, confirmed on the next scan
        self.scans = 0  # scans seen since start; the first INVENTORY_SCANS take stock
        self._given_back: dict[int, str] = {}  # slot -> foreign sn already given back once
        self._background: set[asyncio.Task[None]] = set()
        self._scanned = asyncio.Condition()
        self.listeners: list[Callable[[str, dict[str, Any]], Awaitable[None] | None]] = []
        self.refusing: str | None = None  # set when the ledger is unusable: refuse to rent
        self._refused: dict[int, str] = {}  # slot -> the ledger rule error last logged for it

    # ---- notifications (UI, sync) ----------------------------------------------------

    async def _emit(self, what: str, /, **data: Any) -> None:
        for listener in list(self.listeners):
            try:
                r = listener(what, data)
                if asyncio.iscoroutine(r):
                    await r
            except Exception:  # a UI problem must never break rent/return
                log.exception("listener failed on %s", what)

    # ---- returns, removals and first sightings -----------------------------------------

    async def on_scan(self, observations: Iterable[Observation]) -> None:
        """Feed one bus scan: detect returns, unexpected removals and new batteries."""
        slots = {s.slot: s for s in await self.ledger.slots()}
        self.scans += 1
        for ob in observations:
            self.observed[ob.slot] = ob
            if not ob.known:
                self._pending_return.pop(ob.slot, None)
                continue
            eject = self._ejecting.get(ob.slot)
            if eject is not None:
                if self._gone(eject):
                    eject.taken.set()
                continue
            try:
                await self._reconcile_slot(ob, slots.get(ob.slot))
            except LedgerRuleError as e:
                # The ledger refused what this slot seems to show. Say so (once per slot and
                # reason) and go on with the other slots and the next scans: an exception here
                # used to end the bus poller, and the cabinet then recorded no take and no
                # return again (issue 12.1).
                if self._refused.get(ob.slot) != str(e):
                    self._refused[ob.slot] = str(e)
                    log.error("slot %d: ledger refused the change seen there: %s", ob.slot, e)
            else:
                self._refused.pop(ob.slot, None)
        async with self._scanned:
            self._scanned.notify_all()

    async def _reconcile_slot(self, ob: Observation, state: SlotState | None) -> None:
        held = state.sn if state else None
        if ob.has_battery and held == ob.sn:
            self._pending_return.pop(ob.slot, None)
            return
        if held and not ob.present:
            if self._slot_now(ob.slot) == SlotNow.UNSETTLED:
                return  # the seat switch still reads a pack: decide when the two agree
            await self.ledger.record(EventType.BATTERY_REMOVED_UNEXPECTED, slot=ob.slot, sn=held)
            log.warning("slot %d: battery %s left without an eject", ob.slot, held)
            await self._emit(EventType.BATTERY_REMOVED_UNEXPECTED, slot=ob.slot, sn=held)
            return
        if held and ob.has_battery and held != ob.sn:
            # a different pack than the ledger expected: the old one left unseen, a new one came
            await self.ledger.record(EventType.BATTERY_REMOVED_UNEXPECTED, slot=ob.slot, sn=held)
            held = None
        if not held and ob.has_battery and self.locks.is_seated(ob.slot):
            if self._pending_return.get(ob.slot) != ob.sn:
                self._pending_return[ob.slot] = ob.sn  # confirm on the next scan
                return
            if not await self._left_its_slot(ob):
                return  # its old slot is being ejected: decide once that eject is settled
            self._pending_return.pop(ob.slot, None)
            await self._take_back(ob)

    async def _left_its_slot(self, ob: Observation) -> bool:
        """A battery the ledger places in another slot is seated here: it left that slot unseen.

        That happens when its take could not be seen: the slot's board did not answer (a
        loaded machine, a flaky bus) during the eject or at the recovery after a restart, so
        the rental was aborted (a take nobody confirmed is never billed) and the ledger kept
        the pack in its slot. Record the removal first, so the return that follows is a
        return of a battery that is not in a slot. False while that slot is being ejected.
        """
        battery = await self.ledger.battery(ob.sn)
        if battery is None or battery.place != "slot" or battery.slot in (None, ob.slot):
            return True
        if battery.slot in self._ejecting:
            return False
        await self.ledger.record(EventType.BATTERY_REMOVED_UNEXPECTED, slot=battery.slot, sn=ob.sn)
        log.warning(
            "slot %d: battery %s is here, not in slot %d: it left that slot unseen",
            ob.slot,
            ob.sn,
            battery.slot,
        )
        await self._emit(EventType.BATTERY_REMOVED_UNEXPECTED, slot=battery.slot, sn=ob.sn)
        return True

    async def _take_back(self, ob: Observation) -> None:
        foreign = not re.match(self.settings.fleet_sn_pattern, ob.sn) or ob.sn in set(self.deny_list())
        if foreign:
            if self._given_back.get(ob.slot) != ob.sn:  # offered back once only
                self._given_back[ob.slot] = ob.sn
                self._ejecting[ob.slot] = _Eject(ob.slot, ob.sn)
                task = asyncio.create_task(self._give_back(ob), name=f"give-back-{ob.slot}")
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            return
        battery = await self.ledger.battery(ob.sn)
        if battery is None and self.scans <= INVENTORY_SCANS:
            # found in the cabinet at start-up: stock, not a return
            await self.ledger.record(
                EventType.BATTERY_SEEN, slot=ob.slot, sn=ob.sn, soc=ob.soc, cycles=ob.cycles
            )
            await self._emit(EventType.BATTERY_SEEN, slot=ob.slot, sn=ob.sn)
        else:
            rental_id = battery.rental_id if battery is not None and battery.place == "rental" else None
            await self.ledger.record(
                EventType.BATTERY_RETURNED,
                slot=ob.slot,
                sn=ob.sn,
                rental_id=rental_id,
                soc=ob.soc,
                temp_c=ob.temp_c,
            )
            log.info("slot %d: battery %s returned (rental %s)", ob.slot, ob.sn, rental_id)
            await self._emit(EventType.BATTERY_RETURNED, slot=ob.slot, sn=ob.sn, rental_id=rental_id)
        problem = self._returned_unwell(ob)
        if problem:
            held = await self.ledger.battery(ob.sn)
            if held is None or not held.quarantined:  # a quarantine outlives the battery going missing
                await self.ledger.record(EventType.BATTERY_QUARANTINED, sn=ob.sn, reason=problem)
            slot = await self.ledger.slot(ob.slot)
            if slot is None or not slot.quarantined:
                await self.ledger.record(
                    EventType.SLOT_QUARANTINED, slot=ob.slot, reason=problem, by="cabinet"
                )
            log.error("ALERT slot %d: battery %s %s: kept, not charged, not rented", ob.slot, ob.sn, problem)
            await self._emit("alert", slot=ob.slot, sn=ob.sn, problem=problem)

    def _returned_unwell(self, ob: Observation) -> str | None:
        if ob.temp_c >= self.settings.hot_return_c:
            return f"returned hot ({ob.temp_c:.1f} C)"
        if ob.faults:
            return f"returned with slot fault bits 0x{ob.faults:04x}"
        return None

    async def _give_back(self, ob: Observation) -> None:
        """A pack that is not ours (or is denied): record it and open the slot so it can be taken back."""
        eject = self._ejecting[ob.slot]
        await self.ledger.record(
            EventType.SECURITY_EVENT,
            kind="foreign_battery",
            detail=f"slot {ob.slot}: battery {ob.sn!r} is not of this fleet or is denied",
        )
        await self._emit("foreign_battery", slot=ob.slot, sn=ob.sn)
        try:
            async with self._rent_lock:
                await self.locks.open(ob.slot, timeout=self.settings.jam_timeout_s)
                if await self._taken(eject):
                    self._given_back.pop(ob.slot, None)
                    return
        finally:
            self._ejecting.pop(ob.slot, None)
        state = await self.ledger.slot(ob.slot)
        if state is None or not state.quarantined:
            await self.ledger.record(
                EventType.SLOT_QUARANTINED,
                slot=ob.slot,
                by="cabinet",
                reason=f"foreign battery {ob.sn!r} left in the slot",
            )

    # ---- rent -----------------------------------------------------------------------

    async def rentable_slots(self) -> list[int]:
        """Slots whose battery may be handed out now, best first (highest SoC, then fewest cycles)."""
        denied = set(self.deny_list())
        candidates = []
        for s in await self.ledger.slots():
            ob = self.observed.get(s.slot)
            if ob is None or not slot_may_rent(s, ob, self.settings, denied):
                continue  # checked before the battery is read: no ledger call for the others
            battery = await self.ledger.battery(s.sn)
            if not is_rentable(s, ob, battery, self.settings, denied):
                continue
            candidates.append((-ob.soc, ob.cycles, s.slot))
        return [slot for _, _, slot in sorted(candidates)]

    async def rent(self, req: RentRequest) -> RentOutcome:
        """Hand out one battery for ``req``; the same request twice ejects at most one battery."""
        async with self._rent_lock:
            known = await self.ledger.rental(req.rental_id)
            if known is not None:
                return _outcome_of(known, duplicate=True)
            if self.refusing:
                return RentOutcome(req.rental_id, "refused", self.refusing)
            try:
                await self.ledger.record(
                    EventType.RENTAL_REQUESTED,
                    rental_id=req.rental_id,
                    source=req.source,
                    user=req.user,
                    pass_id=req.pass_id,
                    cmd_id=req.cmd_id,
                )
            except LedgerUnwritable as e:  # a full or read-only card: rent nothing we cannot record
                log.error("rental %s refused: %s", req.rental_id, e)
                return RentOutcome(req.rental_id, "refused", "storage_unwritable")
            tried = 0
            reason = "no_rentable_battery"
            for slot in await self.rentable_slots():
                if tried >= self.settings.max_slots_tried:
                    break
                tried += 1
                outcome = await self._eject(req, slot)
                if outcome is not None:
                    return outcome
                reason = "lock_jammed"
            await self._abort(req, reason)
            return RentOutcome(req.rental_id, "aborted", reason)

    async def _abort(self, req: RentRequest, reason: str, slot: int | None = None) -> None:
        """Record that ``req`` ended without a battery leaving, and tell the listeners."""
        where = {} if slot is None else {"slot": slot}
        await self.ledger.record(
            EventType.RENTAL_ABORTED, rental_id=req.rental_id, reason=reason, source=req.source, **where
        )
        await self._emit(EventType.RENTAL_ABORTED, rental_id=req.rental_id, reason=reason, **where)

    async def _taken(self, eject: _Eject) -> bool:
        """Wait up to the eject timeout for the presented battery to leave (bus and seat switch agree).

        When the timeout ends with the slot not settled, wait up to ``unreadable_wait_s`` more,
        scan by scan, until it is: the pack was taken, or it is back in its seat (see
        :meth:`_slot_now`). Unsettled means the board does not answer (a take could not have been
        seen), the pack is still out (a renter may take it late, and it is theirs: the rental
        starts), or the bus and the seat switch disagree (one is a little behind the other). A
        decision taken at the timeout itself turned each of these takes into an aborted rental
        and an unexpected removal (issue 12.1, the crash soak's remaining failures).
        """
        try:
            await asyncio.wait_for(eject.taken.wait(), self.settings.eject_timeout_s)
        except TimeoutError:
            pass
        else:
            return True
        state = self._slot_now(eject.slot)
        if state != SlotNow.SEATED:
            log.warning("slot %d: %s not taken within %g s and the slot reads %s: waiting for it to settle",
                        eject.slot, eject.sn, self.settings.eject_timeout_s, state)  # fmt: skip
        await self._until_scanned(
            lambda: eject.taken.is_set() or self._gone(eject) or self._slot_now(eject.slot) == SlotNow.SEATED,
            self.settings.unreadable_wait_s,
        )
        return eject.taken.is_set() or self._gone(eject)

    def _gone(self, eject: _Eject) -> bool:
        """The ejected pack has left its slot: the slot reads empty (bus and seat switch agree),
        or another pack sits there now (taken, and another pushed in before a scan saw the slot
        empty: the crash soak's renter is that quick)."""
        ob = self.observed.get(eject.slot, _UNKNOWN)
        return self._slot_now(eject.slot) == SlotNow.EMPTY or (ob.has_battery and ob.sn != eject.sn)

    def _slot_now(self, slot: int, ob: Observation | None = None) -> SlotNow:
        """What the last scan (or ``ob``) and the seat switch say of ``slot`` together: the one
        "pack left" rule of ejects, recovery and the removal check."""
        ob = ob if ob is not None else self.observed.get(slot, _UNKNOWN)
        if not ob.known:
            return SlotNow.UNKNOWN
        switch = self.locks.is_seated(slot)
        if ob.present:
            return SlotNow.SEATED if switch else SlotNow.OUT
        return SlotNow.UNSETTLED if switch else SlotNow.EMPTY

    async def _until_scanned(self, done: Callable[[], bool], timeout: float) -> None:
        """Wait (at most ``timeout``) until ``done()`` holds, checking after each bus scan."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not done():
            left = end - loop.time()
            if left <= 0:
                return
            async with self._scanned:
                try:
                    await asyncio.wait_for(self._scanned.wait(), left)
                except TimeoutError:
                    return

    async def _until_settled(self, ejects: list[_Eject], timeout: float) -> None:
        """Wait (at most ``timeout``) until one of ``ejects`` is taken or every slot reads settled
        (neither unknown nor with the bus and the seat switch disagreeing)."""
        await self._until_scanned(
            lambda: (
                any(e.taken.is_set() for e in ejects)
                or all(self._slot_now(e.slot) not in _UNSETTLED for e in ejects)
            ),
            timeout,
        )

    async def _eject(self, req: RentRequest, slot: int) -> RentOutcome | None:
        """Pulse one slot's lock; None when it jammed (the caller tries another slot)."""
        sn = self.observed[slot].sn
        eject = _Eject(slot, sn)
        self._ejecting[slot] = eject
        try:
            result = await self.locks.open(slot, timeout=self.settings.jam_timeout_s)
            if not result.opened:
                await self.ledger.record(
                    EventType.SLOT_FAULT,
                    slot=slot,
                    kind="lock_jam",
                    detail=f"seat switch unchanged {self.settings.jam_timeout_s:g} s after the pulse",
                )
                await self._emit(EventType.SLOT_FAULT, slot=slot, kind="lock_jam")
                return None
            await self._emit(
                "eject", rental_id=req.rental_id, slot=slot, sn=sn, timeout_s=self.settings.eject_timeout_s
            )
            if not await self._taken(eject):
                await self._abort(req, "not_taken", slot)
                return RentOutcome(req.rental_id, "aborted", "not_taken", slot, sn)
            await self._record_start(req, sn, slot)
            return RentOutcome(req.rental_id, "started", "", slot, sn)
        finally:
            self._ejecting.pop(slot, None)

    async def _record_start(self, req: RentRequest, sn: str, slot: int) -> None:
        """Record a started rental (and the pass it used) in ONE transaction.

        Two separate commits would let a crash between them leave a pass rental without its
        ``pass_used`` record.
        """

        def start(lg: Any) -> None:
            with lg.atomic():
                lg.record(
                    EventType.RENTAL_STARTED,
                    rental_id=req.rental_id,
                    sn=sn,
                    slot=slot,
                    source=req.source,
                    user=req.user,
                    pass_id=req.pass_id,
                    cmd_id=req.cmd_id,
                )
                if req.pass_id:
                    lg.record(EventType.PASS_USED, pass_id=req.pass_id, rental_id=req.rental_id)

        await self.ledger.run(start)
        log.info("rental %s started: battery %s from slot %d", req.rental_id, sn, slot)
        await self._emit(EventType.RENTAL_STARTED, rental_id=req.rental_id, slot=slot, sn=sn)

    # ---- technician and operator actions ------------------------------------------------

    async def unlock(self, slot: int, reason: str, by: str) -> str:
        """Open one slot for a technician (audited); a battery taken out is recorded as gone."""
        async with self._rent_lock:
            ob = self.observed.get(slot)
            sn = ob.sn if ob is not None and ob.has_battery else ""
            await self.ledger.record(
                EventType.TECH_ACTION, technician=by, action="unlock", detail=f"slot {slot}: {reason}"
            )
            eject = _Eject(slot, sn)
            self._ejecting[slot] = eject
            try:
                result = await self.locks.open(slot, timeout=self.settings.jam_timeout_s)
                if not sn:
                    return "opened (the slot was empty)"  # nothing seated: no movement to see, not a jam
                if not result.opened:
                    await self.ledger.record(
                        EventType.SLOT_FAULT, slot=slot, kind="lock_jam", detail=f"unlock by {by}"
                    )
                    return "jammed"
                if not await self._taken(eject):
                    return "opened, battery left in place"
                await self.ledger.record(
                    EventType.BATTERY_GONE, sn=sn, reason=f"taken out by technician {by}: {reason}"
                )
                return f"opened, battery {sn} taken out"
            finally:
                self._ejecting.pop(slot, None)

    async def quarantine_slot(self, slot: int, reason: str, by: str) -> None:
        await self.ledger.record(EventType.SLOT_QUARANTINED, slot=slot, reason=reason, by=by)
        await self._emit(EventType.SLOT_QUARANTINED, slot=slot, reason=reason)

    async def release_slot(self, slot: int, reason: str, by: str) -> None:
        state = await self.ledger.slot(slot)
        if state is not None and state.fault_kind:
            await self.ledger.record(EventType.SLOT_FAULT_CLEARED, slot=slot, by=by, detail=reason)
        if state is not None and state.quarantined:
            await self.ledger.record(EventType.SLOT_RELEASED, slot=slot, reason=reason, by=by)
        await self._emit(EventType.SLOT_RELEASED, slot=slot, reason=reason)

    async def stop(self) -> None:
        """Cancel background work (a foreign pack offered back, a recovery wait) and wait for it;
        what it left open is settled by ``recover()`` at the next start."""
        await cancel_and_wait(list(self._background))

    async def recover(self, observations: Iterable[Observation]) -> None:
        """After a restart: settle rent requests that a crash or power cut left open.

        A requested rental whose battery is no longer in any slot the ledger remembers (the
        slot is empty, or holds another battery returned since) is started: the renter has
        it. One whose battery is still presented (popped out, not yet taken: the crash came
        during the eject) is watched like an eject in progress: started if the renter takes it
        within the eject timeout, aborted as interrupted if not. Anything else is aborted as
        interrupted. Call before the first ``on_scan``.
        """
        obs = {o.slot: o for o in observations}
        for rental in await self.ledger.open_rentals():
            if rental.state != "requested":
                continue
            slots = [s for s in await self.ledger.slots() if s.sn]
            now = {s.slot: self._slot_now(s.slot, obs.get(s.slot, _UNKNOWN)) for s in slots}
            # the held battery left: the slot is empty (the bus and the seat switch agree), or
            # the bus reads another battery pushed in since
            gone = [
                s
                for s in slots
                if now[s.slot] == SlotNow.EMPTY
                or ((o := obs.get(s.slot, _UNKNOWN)).has_battery and o.sn != s.sn)
            ]
            presented = [s for s in slots if now[s.slot] == SlotNow.OUT and s not in gone]
            # unreadable, or the bus and the seat switch disagree: not known yet
            unknown = [s.slot for s in slots if now[s.slot] in _UNSETTLED]
            req = RentRequest(
                rental.rental_id, rental.source or "cloud", rental.user, rental.pass_id, rental.cmd_id
            )
            if unknown and not gone and not presented and not self._rent_lock.locked():
                # A slot that could hold this rental's pack cannot be read (its board missed the
                # first scan). Guard those slots like an eject in progress and decide once their
                # board answers, instead of aborting a take that may have happened.
                guards = [_Eject(s.slot, s.sn) for s in slots if s.slot in unknown and s.sn]
                for g in guards:
                    self._ejecting[g.slot] = g
                await self._rent_lock.acquire()  # no other eject until this one is settled
                task = asyncio.create_task(
                    self._recover_unreadable(req, guards), name=f"recover-{req.rental_id}"
                )
                self._background.add(task)
                task.add_done_callback(self._background.discard)
                continue
            if len(gone) == 1 and not presented:
                assert gone[0].sn is not None
                log.warning("rental %s: its battery left slot %d while the cabinet was down", req.rental_id,
                            gone[0].slot)  # fmt: skip
                await self._record_start(req, gone[0].sn, gone[0].slot)
            elif len(presented) == 1 and not gone and not self._rent_lock.locked():
                s = presented[0]
                assert s.sn is not None
                eject = _Eject(s.slot, s.sn)
                self._ejecting[s.slot] = eject
                await self._rent_lock.acquire()  # no other eject until this one is settled
                task = asyncio.create_task(self._finish_eject(req, eject), name=f"recover-{req.rental_id}")
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            else:
                # Nothing confirms a take: abort (the cloud releases the hold). When a slot could
                # not be read, a pack taken from it shows up later as a removal (on_scan).
                log.warning(
                    "rental %s interrupted by a restart: aborted (gone %s, presented %s, unreadable %s)",
                    req.rental_id,
                    [s.slot for s in gone],
                    [s.slot for s in presented],
                    unknown,
                )
                await self.ledger.record(
                    EventType.RENTAL_ABORTED,
                    rental_id=rental.rental_id,
                    reason="interrupted",
                    source=rental.source or "cloud",
                )

    async def _recover_unreadable(self, req: RentRequest, guards: list[_Eject]) -> None:
        """Settle (holding the rent lock taken by recover) a rental whose slots read unknown."""
        try:
            log.warning("rental %s: slots %s unreadable after the restart, waiting for their boards",
                        req.rental_id, [g.slot for g in guards])  # fmt: skip
            await self._until_settled(guards, self.settings.unreadable_wait_s)
            obs = {g.slot: self.observed.get(g.slot, _UNKNOWN) for g in guards}
            # taken: the slot reads empty with its seat switch open, or holds another pack now
            taken = [
                g for g in guards
                if g.taken.is_set()
                or self._slot_now(g.slot) == SlotNow.EMPTY
                or (obs[g.slot].has_battery and obs[g.slot].sn != g.sn)
            ]  # fmt: skip
            presented = [g for g in guards if self._slot_now(g.slot) == SlotNow.OUT and g not in taken]
            if len(taken) == 1 and not presented:
                log.warning("rental %s: its battery left slot %d while the cabinet was down", req.rental_id,
                            taken[0].slot)  # fmt: skip
                await self._record_start(req, taken[0].sn, taken[0].slot)
            elif len(presented) == 1 and not taken:
                for g in guards:
                    if g is not presented[0]:
                        self._ejecting.pop(g.slot, None)
                if await self._taken(presented[0]):
                    await self._record_start(req, presented[0].sn, presented[0].slot)
                else:
                    await self._abort(req, "interrupted", presented[0].slot)
            else:
                log.warning(
                    "rental %s interrupted by a restart: aborted (taken %s, presented %s, unreadable %s)",
                    req.rental_id,
                    [g.slot for g in taken],
                    [g.slot for g in presented],
                    [g.slot for g in guards if not obs[g.slot].known],
                )
                await self._abort(req, "interrupted")
        finally:
            for g in guards:
                if self._ejecting.get(g.slot) is g:
                    del self._ejecting[g.slot]
            self._rent_lock.release()

    async def _finish_eject(self, req: RentRequest, eject: _Eject) -> None:
        """Wait (holding the rent lock taken by recover) for a presented battery to be taken."""
        try:
            if not await self._taken(eject):
                await self._abort(req, "interrupted", eject.slot)
                return
            await self._record_start(req, eject.sn, eject.slot)
        finally:
            self._ejecting.pop(eject.slot, None)
            self._rent_lock.release()


_UNKNOWN = Observation(slot=0, known=False)


def _outcome_of(r: RentalState, duplicate: bool) -> RentOutcome:
    status = {"open": "started", "returned": "started", "closed": "started"}.get(r.state, r.state)
    if duplicate:
        return RentOutcome(
            r.rental_id, "duplicate" if status != "aborted" else "aborted", r.end_reason or "", r.slot, r.sn
        )
    return RentOutcome(r.rental_id, status, r.end_reason or "", r.slot, r.sn)


__all__ = [
    "Controller",
    "LedgerRuleError",
    "RentOutcome",
    "RentRequest",
    "RentSettings",
    "is_rentable",
    "slot_may_rent",
]
