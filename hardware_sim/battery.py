"""A power bank as the slot sees it: a 1S Li-ion pack with charger, heat, ageing and a fuel gauge.

The model is lumped and cheap (one ``step`` per pack per sim tick) but keeps the signals a
fault predictor looks at: internal resistance rising with age and cycles (the voltage step
when the charge current changes), temperature rise per ampere, the CC/CV taper, self
discharge at rest, capacity fade and a fuel gauge that drifts from the truth.
Everything random comes from a seeded ``random.Random`` so runs are repeatable.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from dataclasses import dataclass, field

RATED_CAPACITY_AH = 5.0
V_MIN = 3.0
V_MAX = 4.2
CV_VOLTAGE = 4.2
#: the charger ends the CV phase when the current tapers below C/20
TAPER_END_A = RATED_CAPACITY_AH / 20
#: a full pack restarts charging when its open-circuit voltage falls below this
RECHARGE_OCV = 4.10
CHARGE_EFFICIENCY = 0.99
#: the pack's own charge IC and protection lose this fraction of the charge power as heat
CHARGER_LOSS = 0.04
THERMAL_MASS_J_PER_K = 110.0  # ~110 g pack
THERMAL_RESISTANCE_K_PER_W = 14.0  # pack in a slot, still air
SELF_DISCHARGE_PER_MONTH = 0.03
#: a pack out with a renter feeds a phone at about this current
RENTER_LOAD_A = 1.0
BASE_RESISTANCE_OHM = 0.085  # cell + protection FETs + pack connector

# Open-circuit voltage of a typical NMC/graphite cell against state of charge.
_OCV_SOC = (0.0, 0.03, 0.08, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95, 1.0)
_OCV_V = (3.00, 3.30, 3.47, 3.58, 3.65, 3.70, 3.75, 3.80, 3.87, 3.95, 4.04, 4.14, 4.20)


def ocv(soc: float) -> float:
    """Open-circuit voltage (V) at state of charge ``soc`` (0..1), linear between table points."""
    s = min(1.0, max(0.0, soc))
    i = min(bisect_right(_OCV_SOC, s), len(_OCV_SOC) - 1)
    s0, s1 = _OCV_SOC[i - 1], _OCV_SOC[i]
    v0, v1 = _OCV_V[i - 1], _OCV_V[i]
    return v0 + (v1 - v0) * (s - s0) / (s1 - s0)


def serial_for(rng: random.Random) -> str:
    """A pack serial number: 'PB' and 6 hex digits (fits the 8-byte register)."""
    return f"PB{rng.randrange(16**6):06X}"


@dataclass
class Battery:
    """One power bank: the truth the simulator keeps, and what its fuel gauge claims.

    Mutated by :meth:`step`; the slot (charger, contacts) passes in what it does to the pack.
    """

    sn: str
    soc: float  # true state of charge, 0..1
    capacity_ah: float = RATED_CAPACITY_AH
    age_days: float = 0.0
    charged_ah: float = 0.0  # lifetime charge throughput; cycles = charged_ah / rated capacity
    temp_c: float = 25.0
    gauge_error: float = 0.0  # fuel gauge SoC minus true SoC
    firmware: int = 0x0102
    # fault state (set by hardware_sim.faults)
    ageing_factor: float = 1.0
    leak_a: float = 0.0  # soft internal short
    leak_growth_a_per_h: float = 0.0
    charge_blocked: bool = False  # pack refuses charge (broken charge FET / cell open)
    # last step's electrical values, as a slot would measure them
    current_a: float = 0.0
    terminal_v: float = field(default=0.0)
    full: bool = False

    @classmethod
    def random(cls, rng: random.Random, sn: str | None = None, soc: float | None = None) -> Battery:
        """A plausible fleet pack: some months old, some hundred cycles, any charge."""
        cycles = rng.uniform(0, 300)
        b = cls(
            sn=sn or serial_for(rng),
            soc=rng.uniform(0.15, 1.0) if soc is None else soc,
            age_days=rng.uniform(10, 400),
            charged_ah=cycles * RATED_CAPACITY_AH,
            gauge_error=rng.uniform(-0.03, 0.03),
            firmware=rng.choice((0x0102, 0x0103, 0x0200)),
        )
        b.capacity_ah = b.healthy_capacity()
        b.terminal_v = ocv(b.soc)
        return b

    # --- derived values -------------------------------------------------------------
    @property
    def cycles(self) -> float:
        """Equivalent full cycles from charge throughput (what a controller could also derive)."""
        return self.charged_ah / RATED_CAPACITY_AH

    def healthy_capacity(self) -> float:
        """Capacity after calendar and cycle fade (no sudden cell failure)."""
        fade = (0.00008 * self.age_days + 0.00022 * self.cycles) * self.ageing_factor
        return RATED_CAPACITY_AH * max(0.3, 1.0 - fade)

    def resistance(self) -> float:
        """Internal resistance (ohm): grows with age and cycles, higher when cold."""
        growth = 1.0 + (0.0006 * self.age_days + 0.0012 * self.cycles) * self.ageing_factor
        cold = math.exp(0.025 * max(0.0, 25.0 - self.temp_c))
        return BASE_RESISTANCE_OHM * growth * cold

    @property
    def ocv(self) -> float:
        """Open-circuit voltage now."""
        return ocv(self.soc)

    @property
    def gauge_soc(self) -> float:
        """What the pack's fuel gauge reports (0..1): the truth plus its own error."""
        return min(1.0, max(0.0, self.soc + self.gauge_error))

    # --- physics ----------------------------------------------------------------------
    def charge_current(self, limit_a: float, contact_ohm: float) -> float:
        """Current a CC/CV charger at ``limit_a`` pushes in now (0 when done or blocked)."""
        if self.charge_blocked or limit_a <= 0:
            return 0.0
        if self.full:
            if self.ocv >= RECHARGE_OCV:
                return 0.0
            self.full = False
        r = self.resistance() + contact_ohm
        # CV: the charger regulates the voltage at the pack's contacts to CV_VOLTAGE.
        i = min(limit_a, (CV_VOLTAGE - self.ocv) / r)
        return max(0.0, i)

    def step(
        self,
        dt: float,
        ambient_c: float,
        charge_limit_a: float = 0.0,
        contact_ohm: float = 0.0,
        load_a: float = 0.0,
        external_heat_w: float = 0.0,
    ) -> None:
        """Advance ``dt`` sim seconds: charger at ``charge_limit_a`` (0 = off), or a load drawing ``load_a``.

        ``external_heat_w`` is heat put into the pack from outside (e.g. a hot slot contact).
        """
        if dt <= 0:
            return
        self.age_days += dt / 86400.0
        if self.leak_growth_a_per_h:
            self.leak_a += self.leak_growth_a_per_h * dt / 3600.0
        self_discharge_a = SELF_DISCHARGE_PER_MONTH * self.capacity_ah / (30 * 24)
        i_charge = self.charge_current(charge_limit_a, contact_ohm)
        if i_charge > 0 and i_charge < TAPER_END_A and self.ocv > 4.15:
            # CV taper finished: the pack charger reports full and stops.
            self.full = True
            self.gauge_error *= 0.2  # gauges recalibrate at end of charge
            i_charge = 0.0
        r = self.resistance()
        # Current at the pack terminals: charge in, load out; leaks are internal.
        i_terminal = i_charge - load_a
        dq_ah = (i_charge * CHARGE_EFFICIENCY - load_a - self.leak_a - self_discharge_a) * dt / 3600.0
        self.soc = min(1.0, max(0.0, self.soc + dq_ah / self.capacity_ah))
        if self.soc <= 0.0:
            i_terminal = i_charge  # protection cut the load off
        if i_charge > 0:
            self.charged_ah += i_charge * dt / 3600.0
            self.capacity_ah = min(self.capacity_ah, self.healthy_capacity())
            # coulomb counting error accumulates slowly
            self.gauge_error += 0.002 * i_charge * dt / 3600.0
        self.current_a = i_terminal
        self.terminal_v = self.ocv + i_terminal * r
        heat_w = i_terminal * i_terminal * r + self.leak_a * self.ocv + external_heat_w
        if i_charge > 0:
            heat_w += CHARGER_LOSS * i_charge * CV_VOLTAGE
        # Lumped thermal model; integrate exactly so large sim steps stay stable.
        tau = THERMAL_MASS_J_PER_K * THERMAL_RESISTANCE_K_PER_W
        t_eq = ambient_c + heat_w * THERMAL_RESISTANCE_K_PER_W
        self.temp_c = t_eq + (self.temp_c - t_eq) * math.exp(-dt / tau)

    def fail_cell(self, capacity_fraction_left: float) -> None:
        """Sudden capacity loss (a cell group goes open): keep ``capacity_fraction_left`` of it."""
        if not 0.0 < capacity_fraction_left <= 1.0:
            raise ValueError(f"capacity fraction left must be in (0, 1], not {capacity_fraction_left}")
        # The charge left shrinks with the capacity, so the true SoC stays; the gauge, which
        # still counts coulombs against the old capacity, is what goes wrong.
        self.capacity_ah *= capacity_fraction_left
