"""Property test: the rent/return state machine against a small model of where every battery is.

The real Controller runs on a real ledger (in memory, on its own writer thread as in the
cabinet) and the simulator's real mechanics in-process: a SimCabinet's locks on gpiozero mock
pins (SimMockFactory wired with wire_to_cabinet) driven by the real LockBank, and bus scans
built from the simulated slot boards' registers with the real driver's decoder. Hypothesis
picks rents (taken or not), jams, returns (some hot), unexpected removals and foreign packs;
after every step the ledger must verify and agree with the model and with the simulator.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from cabinet.controller import Controller, RentRequest, RentSettings
from cabinet.ledger import AsyncLedger, Ledger, verify_db
from cabinet.observations import Observation
from drivers import register_map as rm
from drivers.locks import LockBank
from hardware_sim.cabinet import SimCabinet, SimConfig
from hardware_sim.pins import SimMockFactory, lock_pin, seat_pin, wire_to_cabinet

T = TypeVar("T")
SLOTS = 8
PER_BOARD = 4
MIN_SOC = 50
SETTINGS = RentSettings(min_soc=MIN_SOC, eject_timeout_s=0.08, jam_timeout_s=0.03, hot_return_c=50.0)


def observe(sim: SimCabinet) -> list[Observation]:
    """One bus scan as the cabinet sees it: each board's input registers, decoded per the register map."""
    out = []
    for unit, board in sim.boards.items():
        regs = sim.input_registers(unit)
        for i, slot in enumerate(board.slots):
            b = regs[rm.slot_offset(i) : rm.slot_offset(i) + rm.SLOT_BLOCK_SIZE]
            status = rm.SlotStatus(b[0])
            comm = bool(status & rm.SlotStatus.PACK_COMM_OK)  # no serial, SoC... without pack comm
            out.append(
                Observation(
                    slot=slot,
                    known=True,
                    present=bool(status & rm.SlotStatus.PRESENT),
                    seated=bool(status & rm.SlotStatus.SEATED),
                    sn=rm.decode_serial(b[1:5]) if comm else "",
                    soc=b[5] if comm else 0,
                    temp_c=rm.to_int16(b[8]) / 10,
                    cycles=b[9] if comm else 0,
                    faults=b[10],
                    charging=bool(status & rm.SlotStatus.CHARGING),
                )
            )
    return out


@dataclass
class Rental:
    sn: str
    state: str  # open | returned


class CabinetMachine(RuleBasedStateMachine):
    """Model: where each battery is (slot, rental, gone), rentals, faulty and quarantined slots."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.sim = SimCabinet(
            SimConfig(slots=SLOTS, slots_per_board=PER_BOARD, seed=5, fill=0.0, reseat_after_s=0.001)
        )
        self.factory = SimMockFactory()
        self.unwire = wire_to_cabinet(self.factory, self.sim)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")
        ledger = self.executor.submit(Ledger.in_memory, "CAB-PROP").result()
        self.ledger = AsyncLedger(ledger, self.executor)
        self.locks = LockBank(
            [lock_pin(k) for k in range(1, SLOTS + 1)],
            [seat_pin(k) for k in range(1, SLOTS + 1)],
            pin_factory=self.factory,
            pulse_s=0.01,
        )
        self.run(self._start_locks())
        self.controller = Controller(self.ledger, self.locks, SETTINGS)
        # the model
        self.where: dict[str, tuple[str, Any]] = {}  # sn -> ("slot", k) | ("rental", id) | ("gone", None)
        self.rentals: dict[str, Rental] = {}
        self.faulty: set[int] = set()  # slots with a recorded lock jam
        self.quarantined_slots: set[int] = set()
        self.quarantined: set[str] = set()
        self.foreign: dict[int, str] = {}  # slot -> foreign pack left in it
        self.n = 0

    # ---- plumbing ------------------------------------------------------------------------

    def run(self, aw: Awaitable[T]) -> T:
        return self.loop.run_until_complete(aw)

    async def _start_locks(self) -> None:
        self.locks.start()

    async def scan(self, times: int = 1) -> None:
        for _ in range(times):
            await self.controller.on_scan(observe(self.sim))
            await asyncio.sleep(0.002)  # let seat switch edges and woken tasks run

    async def settle_background(self) -> None:
        """Scan until the controller's own tasks (giving a foreign pack back) are done."""
        while self.controller._background:
            await self.scan()

    def teardown(self) -> None:
        for t in list(self.controller._background):
            t.cancel()
            self.run(asyncio.gather(t, return_exceptions=True))
        self.locks.close()
        self.unwire()
        self.factory.close()
        self.run(self.ledger.close())
        self.loop.close()

    # ---- the model's view ----------------------------------------------------------------

    def model_slot(self, k: int) -> str | None:
        return next((sn for sn, (p, v) in self.where.items() if p == "slot" and v == k), None)

    def physically_empty(self) -> list[int]:
        return [s.number for s in self.sim.slots if s.battery is None]

    def rentable_ranked(self) -> list[int]:
        """Slots the controller may rent from, best first: highest SoC, then fewest cycles."""
        ranked = []
        for s in self.sim.slots:
            sn = self.model_slot(s.number)
            if sn is None or s.number in self.faulty | self.quarantined_slots or sn in self.quarantined:
                continue
            soc = round(s.battery.gauge_soc * 100)
            if soc >= MIN_SOC and not s.faults:
                ranked.append((-soc, int(s.battery.cycles), s.number))
        return [k for *_, k in sorted(ranked)]

    # ---- rules -----------------------------------------------------------------------------

    @initialize(socs=st.lists(st.integers(30, 100), min_size=3, max_size=6, unique=True))
    def install(self, socs: list[int]) -> None:
        for k, soc in enumerate(socs, start=1):
            sn = self.sim.insert(k, sn=f"PB{k:06X}", soc=soc / 100)
            self.where[sn] = ("slot", k)
        self.run(self.scan(2))  # seen twice: recorded

    @rule(taken=st.booleans())
    def rent(self, taken: bool) -> None:
        self.n += 1
        rid = f"R-{self.n}"
        ranked = self.rentable_ranked()
        tries = ranked[: SETTINGS.max_slots_tried]
        jammed = [k for k in tries if self.sim.slot(k).jammed]
        expect = next((k for k in tries if not self.sim.slot(k).jammed), None)
        out = self.run(self._rent(rid, taken))
        self.faulty |= set(jammed[: tries.index(expect)] if expect in tries else jammed)
        event(f"rent: {out.status} {out.reason}".strip() + (" after a jam" if jammed else ""))
        if expect is None:
            assert (out.status, out.reason) == (
                "aborted",
                "lock_jammed" if tries else "no_rentable_battery",
            ), out
            return
        sn = self.model_slot(expect)
        assert out.slot == expect, f"rented from slot {out.slot}, the best rentable was {expect} ({ranked})"
        if taken:
            assert (out.status, out.sn) == ("started", sn), out
            self.where[sn] = ("rental", rid)
            self.rentals[rid] = Rental(sn, "open")
        else:
            assert (out.status, out.reason) == ("aborted", "not_taken"), out

    async def _rent(self, rid: str, taken: bool) -> Any:
        task = asyncio.create_task(self.controller.rent(RentRequest(rid, "cloud", user="u")))
        while not task.done():
            presented = [s.number for s in self.sim.slots if s.presented]
            if presented and taken:
                self.sim.take(presented[0])
            elif not taken:
                # an untaken pack is pushed back (reseat_after_s has passed); the cabinet waits
                # for that past its timeout, as a late take would still be the renter's
                self.sim.step(0.0)
            await self.scan()
        self.sim.step(0.0)
        await self.scan()
        return task.result()

    @precondition(lambda self: any(sn in self.where for sn in self.sim.out) and self.physically_empty())
    @rule(data=st.data(), hot=st.booleans())
    def bring_back(self, data: st.DataObject, hot: bool) -> None:
        out = sorted(sn for sn in self.sim.out if sn in self.where)  # a foreign pack given back stays away
        empty = self.physically_empty()
        sn = data.draw(st.sampled_from(out), label="battery")
        k = data.draw(st.sampled_from(empty), label="slot")
        battery = self.sim.find_battery(sn)[0]
        if hot:
            battery.temp_c = 58.0  # the physics is not stepped: it stays hot until cooled below
        elif data.draw(st.booleans(), label="cooled"):
            battery.temp_c = 25.0
        self.sim.insert(k, sn=sn)
        self.run(self.scan(2))
        place, rid = self.where[sn]
        if place == "rental":
            self.rentals[rid].state = "returned"
        self.where[sn] = ("slot", k)
        if battery.temp_c >= SETTINGS.hot_return_c:  # kept out of service, and so is its slot
            self.quarantined.add(sn)
            self.quarantined_slots.add(k)

    @rule(data=st.data())
    def jam(self, data: st.DataObject) -> None:
        full = [s.number for s in self.sim.slots if s.battery is not None and not s.jammed]
        if full:
            self.sim.slot(data.draw(st.sampled_from(full), label="slot")).jammed = True

    @rule(data=st.data())
    def remove_unexpectedly(self, data: st.DataObject) -> None:
        """A broken latch: the pack pops out with no command and someone walks off with it."""
        held = [
            k for s in self.sim.slots if (k := s.number) not in self.foreign and s.battery and not s.jammed
        ]
        if not held:
            return
        k = data.draw(st.sampled_from(held), label="slot")
        self.sim.set_lock(k, True)
        self.sim.set_lock(k, False)
        sn = self.sim.take(k)
        self.run(self.scan())
        self.where[sn] = ("gone", None)

    @precondition(lambda self: len(self.foreign) < 2 and self.physically_empty())
    @rule(data=st.data(), taken_back=st.booleans())
    def foreign_pack(self, data: st.DataObject, taken_back: bool) -> None:
        k = data.draw(st.sampled_from(self.physically_empty()), label="slot")
        sn = f"XX{self.n}{k}"
        self.n += 1
        self.sim.insert(k, sn=sn)
        self.run(self._foreign(k, taken_back))
        event(f"foreign pack taken back: {taken_back}")
        if taken_back:
            assert self.sim.slot(k).battery is None
        else:
            self.foreign[k] = sn
            self.quarantined_slots.add(k)

    async def _foreign(self, k: int, taken_back: bool) -> None:
        await self.scan(2)  # seen twice: given back
        assert self.controller._background, f"slot {k}: the foreign pack was not given back"
        deadline = asyncio.get_running_loop().time() + 1
        while self.controller._background:
            if taken_back and self.sim.slot(k).presented:
                self.sim.take(k)
            elif not taken_back:
                self.sim.step(0.0)  # pushed back: the give-back settles
            await self.scan()
            if asyncio.get_running_loop().time() > deadline:
                for t in self.controller._background:
                    t.print_stack()
                raise AssertionError(f"slot {k}: giving the foreign pack back never ended")
        self.sim.step(0.0)
        await self.scan(2)

    # ---- invariants --------------------------------------------------------------------------

    @invariant()
    def ledger_verifies(self) -> None:
        report = self.run(self.ledger.run(lambda lg: verify_db(lg.conn)))
        assert report.ok, report.summary()

    @invariant()
    def ledger_agrees_with_the_model_and_the_simulator(self) -> None:
        slots = {s.slot: s for s in self.run(self.ledger.slots())}
        batteries = {b.sn: b for b in self.run(self.ledger.batteries())}
        for k in range(1, SLOTS + 1):
            held = slots[k].sn if k in slots else None
            assert held == self.model_slot(k), f"slot {k}: ledger holds {held}, model {self.model_slot(k)}"
            physical = self.sim.slot(k).battery
            assert (physical.sn if physical else None) == (held or self.foreign.get(k)), f"slot {k}"
            assert (k in self.quarantined_slots) == bool(k in slots and slots[k].quarantined), f"slot {k}"
            assert (k in self.faulty) == bool(k in slots and slots[k].fault_kind), f"slot {k}"
        assert set(batteries) == set(self.where)
        for sn, (place, where) in self.where.items():
            b = batteries[sn]
            assert b.place == place, f"{sn}: ledger {b.place}, model {place}"
            assert {"slot": b.slot, "rental": b.rental_id, "gone": None}[place] == where, f"{sn}: {b}"
            assert b.quarantined == (sn in self.quarantined), sn
        held = [s.sn for s in slots.values() if s.sn]
        assert len(held) == len(set(held)), f"a battery in two slots: {held}"

    @invariant()
    def every_rental_has_one_start_and_at_most_one_end(self) -> None:
        events = self.run(self.ledger.events_after(0, limit=100_000, max_bytes=1 << 30))
        starts = Counter(e.body["rental_id"] for e in events if e.type == "rental_started")
        ends = Counter(e.body["rental_id"] for e in events if e.type == "rental_aborted")
        ends.update(
            e.body["rental_id"] for e in events if e.type == "battery_returned" and e.body["rental_id"]
        )
        assert set(starts) == set(self.rentals), f"started {set(starts)}, model {set(self.rentals)}"
        assert max(starts.values(), default=0) <= 1 and max(ends.values(), default=0) <= 1
        for rid, r in self.rentals.items():
            lr = self.run(self.ledger.rental(rid))
            assert (lr.state, lr.sn) == (r.state, r.sn), f"{rid}: ledger {lr}, model {r}"


CabinetMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_rent_and_return_state_machine = CabinetMachine.TestCase
