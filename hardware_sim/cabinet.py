"""SimCabinet: slots, slot boards, lock mechanics and battery physics behind one lock.

The cabinet is the single source of truth of the simulation. Modbus slot boards, the GPIO
link and the control API all read and change it through the methods here, so the same
state is seen on every wire. Physics runs in sim time (``step``); lock mechanics react at
once to the lock output and re-seat a presented pack after ``reseat_after_s`` *real*
seconds (a person takes a pack in real time, whatever the physics speed-up).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from drivers import register_map as rm
from hardware_sim.battery import RENTER_LOAD_A, Battery
from hardware_sim.faults import Fault, ScenarioError, ScheduledFault

BOARD_FIRMWARE = 0x0103
MAX_CHARGE_CURRENT_MA = 3000
OVER_TEMP_C = 60.0
CONTACT_FAULT_OHM = 0.3
CHARGE_FAIL_AFTER_S = 30.0
MAX_STEP_S = 5.0

SeatListener = Callable[[int, bool], None]


class SimActionError(ValueError):
    """A user or fault action that the cabinet cannot do (which slot, and why)."""


@dataclass
class SimConfig:
    """Shape and behaviour of a simulated cabinet."""

    slots: int = 24
    slots_per_board: int = 4
    seed: int = 1
    fill: float = 0.75  # share of slots holding a pack at start
    ambient_c: float = 25.0
    reseat_after_s: float = 20.0  # real seconds a presented pack waits before it is pushed back

    def validate(self) -> None:
        """Raise ValueError naming the bad setting."""
        if not 8 <= self.slots <= 48:
            raise ValueError(f"slots must be 8..48, not {self.slots}")
        if not 1 <= self.slots_per_board <= rm.MAX_SLOTS_PER_BOARD:
            raise ValueError(
                f"slots_per_board must be 1..{rm.MAX_SLOTS_PER_BOARD}, not {self.slots_per_board}"
            )
        if not 0.0 <= self.fill <= 1.0:
            raise ValueError(f"fill must be 0..1, not {self.fill}")
        if self.reseat_after_s <= 0:
            raise ValueError(f"reseat_after_s must be > 0, not {self.reseat_after_s}")


@dataclass
class SlotState:
    """One slot: its pack, latch, charger settings and the slot-level faults."""

    number: int  # 1..N, cabinet-wide
    board: int  # unit id
    index: int  # 0-based position on its board
    battery: Battery | None = None
    presented: bool = False  # latch opened and the pack popped out; waiting to be taken
    presented_at: float = 0.0  # time.monotonic() when it popped
    lock_energised: bool = False
    charge_enabled: bool = False
    charge_limit_ma: int = rm.DEFAULT_CHARGE_CURRENT_MA
    contact_ohm: float = 0.0
    contact_growth_ohm_per_h: float = 0.0
    jammed: bool = False
    stuck_seat: bool | None = None
    faults: rm.SlotFault = field(default_factory=lambda: rm.SlotFault(0))
    no_current_s: float = 0.0

    @property
    def seated(self) -> bool:
        """The pack is in and latched (the true mechanical state)."""
        return self.battery is not None and not self.presented

    @property
    def seat_switch(self) -> bool:
        """What the seat switch reports (a stuck switch lies)."""
        return self.seated if self.stuck_seat is None else self.stuck_seat

    def charging_allowed(self) -> bool:
        """The board only charges a seated pack with charge enabled and no over-temperature latch."""
        return self.seated and self.charge_enabled and not (self.faults & rm.SlotFault.OVER_TEMP)


@dataclass
class BoardState:
    """One slot board (a Modbus unit) and its bus-level faults."""

    unit_id: int
    slots: list[int]  # cabinet slot numbers, in board order
    faults: rm.BoardFault = field(default_factory=lambda: rm.BoardFault(0))
    silent: bool = False
    garble_probability: float = 0.0
    reply_delay_s: float = 0.0
    reply_counter: int = 0
    rng: random.Random = field(default_factory=random.Random)


@dataclass
class ActiveFault:
    """An injected fault, with its id for clearing and what it resolved to."""

    id: int
    fault: Fault
    since: float  # sim time
    battery_sn: str | None = None  # battery faults resolved through a slot
    undo: Callable[[], None] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form for the control API."""
        d = {"id": self.id, "since": round(self.since, 3), **self.fault.to_dict()}
        if self.battery_sn:
            d["battery"] = self.battery_sn
        return d


class SimCabinet:
    """A whole cabinet: ``config.slots`` slots on boards of ``config.slots_per_board`` (unit ids 1..)."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.config.validate()
        self.rng = random.Random(self.config.seed)
        self.time = 0.0  # sim seconds since start
        self._lock = threading.RLock()
        self._seat_listeners: list[SeatListener] = []
        self.slots: list[SlotState] = []
        self.boards: dict[int, BoardState] = {}
        self.out: dict[str, Battery] = {}  # packs taken by renters
        self.faults: dict[int, ActiveFault] = {}
        self._next_fault_id = 1
        self._pending: list[ScheduledFault] = []
        self._to_clear: list[tuple[float, int]] = []
        k = self.config.slots_per_board
        for n in range(1, self.config.slots + 1):
            unit = (n - 1) // k + 1
            self.slots.append(SlotState(number=n, board=unit, index=(n - 1) % k))
            board = self.boards.setdefault(
                unit, BoardState(unit, [], rng=random.Random(self.config.seed * 1000 + unit))
            )
            board.slots.append(n)
        for s in self.slots:
            if self.rng.random() < self.config.fill:
                s.battery = Battery.random(self.rng)
                s.battery.temp_c = self.config.ambient_c

    # --- lookup ---------------------------------------------------------------------
    def slot(self, number: int) -> SlotState:
        """Slot ``number`` (1..N) or SimActionError."""
        if not 1 <= number <= len(self.slots):
            raise SimActionError(f"slot {number} does not exist (1..{len(self.slots)})")
        return self.slots[number - 1]

    def board(self, unit_id: int) -> BoardState:
        """Board with Modbus unit id ``unit_id`` or SimActionError."""
        if unit_id not in self.boards:
            raise SimActionError(f"board {unit_id} does not exist (1..{len(self.boards)})")
        return self.boards[unit_id]

    def find_battery(self, sn: str) -> tuple[Battery, SlotState | None]:
        """A pack by serial number: in a slot, or out with a renter (slot None)."""
        for s in self.slots:
            if s.battery is not None and s.battery.sn == sn:
                return s.battery, s
        if sn in self.out:
            return self.out[sn], None
        raise SimActionError(f"battery {sn} is not known to this cabinet")

    # --- seat switch listeners ----------------------------------------------------------
    def add_seat_listener(self, listener: SeatListener) -> None:
        """Call ``listener(slot, seat_switch)`` whenever a seat switch reading changes (any thread)."""
        self._seat_listeners.append(listener)

    def remove_seat_listener(self, listener: SeatListener) -> None:
        """Stop calling ``listener``."""
        if listener in self._seat_listeners:
            self._seat_listeners.remove(listener)

    def _seat_changed(self, s: SlotState, before: bool) -> None:
        now = s.seat_switch
        if now != before:
            for listener in list(self._seat_listeners):
                listener(s.number, now)

    # --- mechanics and user actions -------------------------------------------------------
    def set_lock(self, number: int, energised: bool) -> None:
        """Drive slot ``number``'s lock output. Energising opens the latch (unless jammed): a seated pack pops out."""
        with self._lock:
            s = self.slot(number)
            before = s.seat_switch
            s.lock_energised = energised
            if energised and not s.jammed and s.seated:
                s.presented = True
                s.presented_at = time.monotonic()
            self._seat_changed(s, before)

    def seat_switch(self, number: int) -> bool:
        """The seat switch of slot ``number`` as a GPIO input would read it."""
        with self._lock:
            return self.slot(number).seat_switch

    def take(self, number: int) -> str:
        """A person takes the presented pack from slot ``number``; returns its serial number."""
        with self._lock:
            s = self.slot(number)
            if s.battery is None:
                raise SimActionError(f"slot {number} is empty: nothing to take")
            if not s.presented:
                raise SimActionError(
                    f"slot {number}: the pack {s.battery.sn} is latched in; open the lock first"
                )
            b = s.battery
            before = s.seat_switch
            s.battery, s.presented = None, False
            s.faults &= ~(rm.SlotFault.CHARGE_FAIL | rm.SlotFault.PACK_COMM)
            self.out[b.sn] = b
            self._seat_changed(s, before)
            return b.sn

    def insert(self, number: int, sn: str | None = None, soc: float | None = None) -> str:
        """A person pushes a pack into slot ``number`` (a known one by ``sn``, or a new one); it latches and seats."""
        with self._lock:
            s = self.slot(number)
            if s.battery is not None:
                raise SimActionError(f"slot {number} already holds pack {s.battery.sn}")
            if soc is not None and not 0.0 <= soc <= 1.0:
                raise SimActionError(f"soc must be 0..1, not {soc}")
            if sn is not None and sn in self.out:
                b = self.out.pop(sn)
                if soc is not None:
                    b.soc = soc
            elif sn is not None:
                try:
                    self.find_battery(sn)
                except SimActionError:
                    b = Battery.random(random.Random(f"{self.config.seed}:{sn}"), sn=sn, soc=soc)
                else:
                    raise SimActionError(f"battery {sn} is already in another slot") from None
            else:
                b = Battery.random(self.rng, soc=soc)
            if len(b.sn.encode("ascii", "replace")) > 2 * rm.SERIAL_REGISTERS:
                raise SimActionError(
                    f"serial number {b.sn!r} is longer than {2 * rm.SERIAL_REGISTERS} characters"
                )
            before = s.seat_switch
            s.battery, s.presented = b, False
            self._seat_changed(s, before)
            return b.sn

    # --- time ---------------------------------------------------------------------------
    def load_scenario(self, faults: list[ScheduledFault]) -> None:
        """Schedule faults from a scenario (times relative to sim start)."""
        with self._lock:
            self._pending = sorted([*self._pending, *faults], key=lambda f: f.at)

    def step(self, dt: float) -> None:
        """Advance the simulation ``dt`` sim seconds (split into steps of at most MAX_STEP_S)."""
        with self._lock:
            while dt > 1e-9:
                h = min(dt, MAX_STEP_S)
                self._step(h)
                dt -= h
            self._reseat_presented()

    def _step(self, dt: float) -> None:
        self.time += dt
        self._run_schedule()
        amb = self.config.ambient_c
        for s in self.slots:
            if s.contact_growth_ohm_per_h:
                s.contact_ohm += s.contact_growth_ohm_per_h * dt / 3600
            b = s.battery
            if b is None:
                continue
            limit = min(s.charge_limit_ma, MAX_CHARGE_CURRENT_MA) / 1000 if s.charging_allowed() else 0.0
            contact = s.contact_ohm if s.seated else 0.0
            contact_heat = 0.5 * b.current_a**2 * contact
            b.step(dt, amb, charge_limit_a=limit, contact_ohm=contact, external_heat_w=contact_heat)
            self._latch_slot_faults(s, dt)
        for b in self.out.values():
            b.step(dt, amb, load_a=RENTER_LOAD_A if b.gauge_soc > 0.1 else 0.0)

    def _latch_slot_faults(self, s: SlotState, dt: float) -> None:
        b = s.battery
        assert b is not None
        if b.temp_c > OVER_TEMP_C:
            s.faults |= rm.SlotFault.OVER_TEMP
        if b.terminal_v > 4.3:
            s.faults |= rm.SlotFault.OVER_VOLTAGE
        if s.seated and s.contact_ohm > CONTACT_FAULT_OHM and b.current_a > 0.1:
            s.faults |= rm.SlotFault.CONTACT
        wants_charge = s.charging_allowed() and not b.full and b.soc < 0.97
        s.no_current_s = s.no_current_s + dt if wants_charge and b.current_a < 0.05 else 0.0
        if s.no_current_s >= CHARGE_FAIL_AFTER_S:
            s.faults |= rm.SlotFault.CHARGE_FAIL

    def _reseat_presented(self) -> None:
        now = time.monotonic()
        for s in self.slots:
            if s.presented and not s.lock_energised and now - s.presented_at >= self.config.reseat_after_s:
                before = s.seat_switch
                s.presented = False
                self._seat_changed(s, before)

    def _run_schedule(self) -> None:
        while self._pending and self._pending[0].at <= self.time:
            sched = self._pending.pop(0)
            try:
                fid = self.inject(sched.fault)
            except SimActionError as e:
                raise ScenarioError(f"{sched.where}: at t={sched.at:g} s: {e}") from e
            if sched.clear_at is not None:
                self._to_clear.append((sched.clear_at, fid))
        for when, fid in list(self._to_clear):
            if when <= self.time:
                self._to_clear.remove((when, fid))
                self.clear(fid)

    # --- faults -------------------------------------------------------------------------
    def inject(self, fault: Fault) -> int:
        """Apply ``fault`` now; returns its id (for :meth:`clear`)."""
        with self._lock:
            af = ActiveFault(self._next_fault_id, fault, self.time)
            if fault.scope == "battery":
                if fault.battery is not None:
                    b, _ = self.find_battery(fault.battery)
                else:
                    assert fault.slot is not None
                    in_slot = self.slot(fault.slot).battery
                    if in_slot is None:
                        raise SimActionError(f"slot {fault.slot} is empty: no battery for {fault.kind!r}")
                    b = in_slot
                af.battery_sn = b.sn
                af.undo = self._apply_battery_fault(b, fault)
            elif fault.scope == "slot":
                assert fault.slot is not None
                af.undo = self._apply_slot_fault(self.slot(fault.slot), fault)
            else:
                assert fault.board is not None
                af.undo = self._apply_board_fault(self.board(fault.board), fault)
            self.faults[af.id] = af
            self._next_fault_id += 1
            return af.id

    def clear(self, fault_id: int) -> Fault:
        """Undo an injected fault (a failed cell stays failed); returns the fault."""
        with self._lock:
            af = self.faults.pop(fault_id, None)
            if af is None:
                raise SimActionError(f"no active fault with id {fault_id}")
            if af.undo:
                af.undo()
            return af.fault

    def _apply_battery_fault(self, b: Battery, f: Fault) -> Callable[[], None] | None:
        p = f.params
        if f.kind == "accelerated_ageing":
            b.ageing_factor = p["factor"]
            return lambda: setattr(b, "ageing_factor", 1.0)
        if f.kind == "internal_short":
            b.leak_a, b.leak_growth_a_per_h = p["leak_ma"] / 1000, p["growth_ma_per_h"] / 1000

            def undo() -> None:
                b.leak_a = b.leak_growth_a_per_h = 0.0

            return undo
        if f.kind == "cell_failure":
            b.fail_cell(p["capacity_left"])
            return None
        if f.kind == "charge_failure":
            b.charge_blocked = True
            return lambda: setattr(b, "charge_blocked", False)
        raise AssertionError(f.kind)

    def _apply_slot_fault(self, s: SlotState, f: Fault) -> Callable[[], None]:
        p = f.params
        if f.kind == "contact_resistance":
            s.contact_ohm, s.contact_growth_ohm_per_h = p["ohm"], p["growth_ohm_per_h"]

            def undo() -> None:
                s.contact_ohm = s.contact_growth_ohm_per_h = 0.0

            return undo
        if f.kind == "lock_jam":
            s.jammed = True
            return lambda: setattr(s, "jammed", False)
        if f.kind == "stuck_seat":
            before = s.seat_switch
            s.stuck_seat = p["seated"]
            self._seat_changed(s, before)

            def unstick() -> None:
                was = s.seat_switch
                s.stuck_seat = None
                self._seat_changed(s, was)

            return unstick
        raise AssertionError(f.kind)

    def _apply_board_fault(self, b: BoardState, f: Fault) -> Callable[[], None]:
        if f.kind == "silent_board":
            b.silent = True
            return lambda: setattr(b, "silent", False)
        if f.kind == "garbled_replies":
            b.garble_probability = f.params["probability"]
            return lambda: setattr(b, "garble_probability", 0.0)
        if f.kind == "slow_replies":
            b.reply_delay_s = f.params["delay_s"]
            return lambda: setattr(b, "reply_delay_s", 0.0)
        raise AssertionError(f.kind)

    # --- slot board registers (per drivers.register_map) -----------------------------------
    def input_registers(self, unit_id: int) -> list[int]:
        """The board's whole input register image: header then one block per slot."""
        with self._lock:
            board = self.board(unit_id)
            regs = [0] * rm.board_read_count(len(board.slots))
            uptime = int(self.time)
            regs[0] = BOARD_FIRMWARE
            regs[1] = len(board.slots)
            regs[2] = int(board.faults)
            regs[3], regs[4] = (uptime >> 16) & 0xFFFF, uptime & 0xFFFF
            regs[5] = board.reply_counter & 0xFFFF
            for i, n in enumerate(board.slots):
                base = rm.slot_offset(i)
                regs[base : base + rm.SLOT_BLOCK_SIZE] = self._slot_block(self.slot(n))
            return regs

    def _slot_block(self, s: SlotState) -> list[int]:
        block = [0] * rm.SLOT_BLOCK_SIZE
        b = s.battery
        status = rm.SlotStatus(0)
        if b is not None:
            status |= rm.SlotStatus.PRESENT
        if s.seat_switch:
            status |= rm.SlotStatus.SEATED
        if s.charge_enabled:
            status |= rm.SlotStatus.CHARGE_ENABLED
        block[8] = rm.from_int16(round(self.config.ambient_c * 10))
        if b is not None and s.seated:
            status |= rm.SlotStatus.PACK_COMM_OK
            if b.current_a > 0.01:
                status |= rm.SlotStatus.CHARGING
            if b.full:
                status |= rm.SlotStatus.FULL
            block[1:5] = rm.encode_serial(b.sn)
            block[5] = round(b.gauge_soc * 100)
            # the slot measures at its contacts: contact resistance shows as extra voltage
            v = b.terminal_v + b.current_a * s.contact_ohm
            block[6] = max(0, min(0xFFFF, round(v * 1000)))
            block[7] = rm.from_int16(max(-32768, min(32767, round(b.current_a * 1000))))
            block[8] = rm.from_int16(round(b.temp_c * 10))
            block[9] = min(0xFFFF, int(b.cycles))
            block[11] = b.firmware
        block[0] = int(status)
        block[10] = int(s.faults)
        return block

    def holding_registers(self, unit_id: int) -> list[int]:
        """The board's holding registers as the controller last set them."""
        with self._lock:
            board = self.board(unit_id)
            regs = [0] * rm.HOLDING_SIZE
            for i, n in enumerate(board.slots):
                s = self.slot(n)
                if s.charge_enabled:
                    regs[rm.HOLDING_CHARGE_ENABLE] |= 1 << i
                regs[rm.HOLDING_CHARGE_CURRENT_BASE + i] = s.charge_limit_ma
            return regs

    def write_holding(self, unit_id: int, address: int, values: list[int]) -> None:
        """Apply a controller write to holding registers ``address..`` of board ``unit_id``."""
        with self._lock:
            board = self.board(unit_id)
            if address < 0 or address + len(values) > rm.HOLDING_SIZE:
                raise SimActionError(
                    f"board {unit_id}: holding registers {address}..{address + len(values) - 1} out of range"
                )
            for a, v in enumerate(values, start=address):
                if a == rm.HOLDING_CHARGE_ENABLE:
                    for i, n in enumerate(board.slots):
                        self.slot(n).charge_enabled = bool(v >> i & 1)
                elif (
                    rm.HOLDING_CHARGE_CURRENT_BASE
                    <= a
                    < rm.HOLDING_CHARGE_CURRENT_BASE + rm.MAX_SLOTS_PER_BOARD
                ):
                    i = a - rm.HOLDING_CHARGE_CURRENT_BASE
                    if i < len(board.slots):
                        self.slot(board.slots[i]).charge_limit_ma = v
                elif a == rm.HOLDING_FAULT_CLEAR and v == rm.FAULT_CLEAR_MAGIC:
                    board.faults = rm.BoardFault(0)
                    for n in board.slots:
                        s = self.slot(n)
                        s.faults = rm.SlotFault(0)
                        s.no_current_s = 0.0

    # --- views --------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The whole state as plain data (control API, demo, tests)."""
        with self._lock:
            slots = []
            for s in self.slots:
                b = s.battery
                slots.append(
                    {
                        "slot": s.number,
                        "board": s.board,
                        "seated": s.seated,
                        "seat_switch": s.seat_switch,
                        "presented": s.presented,
                        "lock_energised": s.lock_energised,
                        "charge_enabled": s.charge_enabled,
                        "charge_limit_ma": s.charge_limit_ma,
                        "faults": int(s.faults),
                        "battery": None
                        if b is None
                        else {
                            "sn": b.sn,
                            "soc": round(b.soc, 4),
                            "gauge_soc": round(b.gauge_soc, 4),
                            "voltage_v": round(b.terminal_v, 4),
                            "current_a": round(b.current_a, 4),
                            "temp_c": round(b.temp_c, 2),
                            "cycles": round(b.cycles, 2),
                            "capacity_ah": round(b.capacity_ah, 3),
                            "resistance_ohm": round(b.resistance(), 4),
                            "full": b.full,
                        },
                    }
                )
            return {
                "time_s": round(self.time, 3),
                "slots": slots,
                "boards": [
                    {
                        "unit_id": b.unit_id,
                        "slots": b.slots,
                        "silent": b.silent,
                        "garble": b.garble_probability,
                        "delay_s": b.reply_delay_s,
                    }
                    for b in self.boards.values()
                ],
                "out": sorted(self.out),
                "faults": [af.to_dict() for af in self.faults.values()],
            }
