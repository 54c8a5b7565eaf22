"""A lumped physics model of a 1S Li-ion 5000 mAh power bank in a cabinet slot.

Equivalent circuit (OCV(SoC) + R0 + one RC pair), lumped thermal model (heat from I²R, the
pack's charger IC loss, fault side reactions, a leak short; one thermal resistance to the
cabinet air), CC/CV charging at the cabinet's set current (1-2 A) with power-budget pauses and
current changes, self-discharge at rest, a fuel gauge with capacity and offset error, sampling
at a fixed interval with jitter and dropped samples, and gaps while rented out.

Faults grow with the cycle count: ``severity(c)`` is 0 before onset and reaches 1 exactly at
``fail_cycle``, where the issue's withdrawal criterion is met (SoH 70%, 3%/h self-discharge,
60 C while charging at 2 A in 30 C air, charge refused / below 0.5 A through worn contacts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

from models.telemetry import BatteryTelemetry

RATED_AH = 5.0
V_MAX = 4.2
I_TERM = 0.1  # default CV termination current (C/50); chargers differ (CabinetSetting.term_a)
SUPPLY_V = 5.0
CONTACT_K_PER_W = 15.0  # slot sensor sits near the contacts
CRIT_CONTACT_OHM = 1.15  # contacts limit the charge to 0.5 A: charge no longer accepted
KINDS = ("healthy", "healthy_old", "fade", "short", "overheat", "no_charge", "contact")
FAULT_KINDS = KINDS[2:]

_OCV_SOC = np.array([0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
_OCV_V = np.array([3.0, 3.35, 3.5, 3.6, 3.68, 3.74, 3.79, 3.84, 3.9, 3.97, 4.05, 4.12, 4.2])
_OCV_TABLE = np.interp(np.linspace(0.0, 1.0, 1001), _OCV_SOC, _OCV_V).tolist()


def ocv(soc: float) -> float:
    """Open-circuit voltage of the cell at a state of charge (fraction)."""
    return _OCV_TABLE[min(1000, max(0, int(soc * 1000.0 + 0.5)))]


@dataclass(frozen=True)
class PackSpec:
    """One pack's build and its fault (if any); the ground truth the labels come from."""

    battery_sn: str
    kind: str
    capacity_ah: float
    fade_per_cycle: float
    r0_ohm: float
    r_growth_per_cycle: float
    r1_ohm: float
    tau1_s: float
    rth_k_per_w: float
    tau_th_s: float
    charger_loss: float
    sd_base_pct_h: float
    contact_ohm: float
    fail_cycle: float = math.inf
    onset_cycles: float = 100.0
    shape: float = 1.5

    def severity(self, cycle: float) -> float:
        """0 before onset, 1 at ``fail_cycle`` (criterion met), above 1 after it."""
        if math.isinf(self.fail_cycle):
            return 0.0
        x = (cycle - (self.fail_cycle - self.onset_cycles)) / self.onset_cycles
        return max(0.0, x) ** self.shape

    def state(self, cycle: float) -> PackState:
        """Physical parameters at a cycle count, faults included."""
        x = self.severity(cycle)
        soh = 1.0 - self.fade_per_cycle * cycle
        r_mult = 1.0 + self.r_growth_per_cycle * cycle
        sd = self.sd_base_pct_h
        extra_heat = derate = refuse_rate = 0.0
        refuses = False
        contact = self.contact_ohm
        if self.kind == "fade":
            healthy_at_fail = 1.0 - self.fade_per_cycle * self.fail_cycle
            soh -= (healthy_at_fail - 0.70) * x
            r_mult *= 1.0 + 0.8 * x
        elif self.kind == "short":
            sd += (3.0 - sd) * x
        elif self.kind == "overheat":
            p_nominal = 4.0 * self.r0_ohm * r_mult + self.charger_loss * 2.0 * 4.0
            p_crit = (60.0 - 30.0) / self.rth_k_per_w - p_nominal
            extra_heat = x * p_crit  # at 2 A; scales with current
            r_mult *= 1.0 + 0.3 * x
        elif self.kind == "no_charge":
            derate = 0.5 * min(x, 1.0)
            refuse_rate = 3.0 * x
            refuses = x >= 1.0
        elif self.kind == "contact":
            contact += (CRIT_CONTACT_OHM - contact) * x
        return PackState(
            capacity_ah=self.capacity_ah * max(soh, 0.3),
            r0=self.r0_ohm * r_mult,
            r1=self.r1_ohm * r_mult,
            sd_pct_h=sd,
            extra_heat_w_at_2a=extra_heat,
            derate=derate,
            interrupt_per_h=refuse_rate,
            refuses=refuses,
            contact_ohm=contact,
        )


@dataclass(frozen=True)
class PackState:
    """Physical parameters of a pack at one point of its life."""

    capacity_ah: float
    r0: float
    r1: float
    sd_pct_h: float
    extra_heat_w_at_2a: float
    derate: float
    interrupt_per_h: float
    refuses: bool
    contact_ohm: float


@dataclass(frozen=True)
class CabinetSetting:
    """The slot's environment for one window: air, charge current, sampling."""

    ambient_c: float
    ambient_swing_c: float
    charge_a: float
    sample_s: float
    sessions: int
    term_a: float = I_TERM  # the charger ends CV below this current
    topup_drop: float = 0.05  # a full pack is topped up after losing this much SoC
    wait_prob: float = 0.5  # share of sessions where charging starts after a wait
    pause_prob: float = 0.15
    current_change_prob: float = 0.3
    dropout_prob: float = 0.01


class _Recorder:
    """Collects samples as the slot board would report them (noisy, rounded, some dropped)."""

    def __init__(self, rng: np.random.Generator, dropout: float):
        self.rng = rng
        self.dropout = dropout
        self.chunks: list[np.ndarray] = []
        self.pending: list[tuple[float, ...]] = []

    def add_row(self, *row: float) -> None:
        """One sample (t, v, i, temp, soc, cycle); cheap, for the scalar CV loop."""
        self.pending.append(row)

    def _flush(self) -> None:
        if self.pending:
            self.chunks.append(np.array(self.pending, dtype=float))
            self.pending = []

    def add(self, t, v, i, temp, soc, cycle) -> None:
        self._flush()
        cols = np.broadcast_arrays(
            *(np.atleast_1d(np.asarray(c, dtype=float)) for c in (t, v, i, temp, soc, cycle))
        )
        self.chunks.append(np.column_stack(cols))

    def telemetry(self, battery_sn: str) -> BatteryTelemetry:
        self._flush()
        arr = np.vstack(self.chunks) if self.chunks else np.empty((0, 6))
        arr = arr[self.rng.random(arr.shape[0]) >= self.dropout]
        n, rng = arr.shape[0], self.rng
        t = np.round(arr[:, 0] + rng.uniform(-1.0, 1.0, n))
        t = t - t[0] if n else t  # the window starts at 0 s
        v = np.round(arr[:, 1] + rng.normal(0.0, 0.002, n), 3)
        on = arr[:, 2] > 0
        i = np.round(np.where(on, arr[:, 2] + rng.normal(0.0, 0.005, n), rng.normal(0.0, 0.003, n)), 2)
        temp = np.round(arr[:, 3] + rng.normal(0.0, 0.15, n), 1)
        return BatteryTelemetry(battery_sn, t, v, i, temp, arr[:, 4].copy(), arr[:, 5].copy())


def simulate_window(
    pack: PackSpec, end_cycle: float, cab: CabinetSetting, rng: np.random.Generator
) -> BatteryTelemetry:
    """Telemetry of ``cab.sessions`` slot sessions ending at ``end_cycle`` (rentals in between)."""
    drains = rng.uniform(0.2, 0.9, size=cab.sessions)
    cycle = max(0.0, end_cycle - float(drains[:-1].sum()) * 1.0)
    rec = _Recorder(rng, cab.dropout_prob)
    gauge_scale = 1.0 / (1.0 + rng.normal(0.0, 0.03))  # learned FCC off by a few %
    t = 0.0
    soc = rng.uniform(0.1, 0.6)
    temp = cab.ambient_c + rng.uniform(-3.0, 8.0)
    for k in range(cab.sessions):
        st = pack.state(cycle)
        slot_s = float(np.clip(rng.exponential(4.0 * 3600.0), 0.4 * 3600.0, 30 * 3600.0))
        sim = _Session(pack, st, cab, rng, rec, t, soc, temp, cycle, gauge_scale)
        soc, temp = sim.run(slot_s)
        t += slot_s
        if k == cab.sessions - 1:
            break
        # Rented out: drained by the user, warmed or cooled in a pocket; the counter advances.
        used = min(drains[k], soc - 0.03)
        soc -= used
        cycle += used * st.capacity_ah / RATED_AH
        t += rng.uniform(0.5, 12.0) * 3600.0
        temp = cab.ambient_c + rng.uniform(-3.0, 8.0)
    return rec.telemetry(pack.battery_sn)


class _Session:
    """One stay in a slot: wait, charge (CC/CV, pauses, faults), rest, top-ups, until rented."""

    def __init__(self, pack, st, cab, rng, rec, t0, soc, temp, cycle, gauge_scale):
        self.pack, self.st, self.cab, self.rng, self.rec = pack, st, cab, rng, rec
        self.t0, self.soc, self.temp, self.cycle = t0, soc, temp, cycle
        self.gauge_scale = gauge_scale
        self.anchor_soc, self.anchor_pct = soc, 100.0 * soc + rng.normal(0.0, 1.5)
        self.vrc = 0.0
        self.t = 0.0
        self.leak_a = st.sd_pct_h / 100.0 * st.capacity_ah

    def ambient(self, t: np.ndarray | float) -> np.ndarray | float:
        return self.cab.ambient_c + self.cab.ambient_swing_c * np.sin(2.0 * np.pi * (self.t0 + t) / 86400.0)

    def gauge(self, soc: np.ndarray | float) -> np.ndarray:
        pct = self.anchor_pct + 100.0 * (np.asarray(soc) - self.anchor_soc) * self.gauge_scale
        return np.clip(np.round(pct), 0.0, 100.0)

    def record(self, t, soc, v, temp, i, i_in) -> None:
        sensor = temp + CONTACT_K_PER_W * np.square(i_in) * self.st.contact_ohm
        self.rec.add(self.t0 + t, v, i, sensor, self.gauge(soc), math.floor(self.cycle))

    def hold(self, i: float, duration: float, stop_at_cv: bool = False) -> bool:
        """Constant current i for up to ``duration`` s, in closed form; True if CV was reached."""
        st, pack, dt = self.st, self.pack, self.cab.sample_s
        m = int(duration // dt)
        if m <= 0:
            return False
        k = np.arange(1, m + 1, dtype=float)
        tk = self.t + k * dt
        a = math.exp(-dt / pack.tau1_s)
        vrc = i * st.r1 + (self.vrc - i * st.r1) * a**k
        soc = np.clip(self.soc + (i - self.leak_a) * k * dt / (3600.0 * st.capacity_ah), 0.0, 1.0)
        ocv_k = np.interp(soc, _OCV_SOC, _OCV_V)
        cv_hit = False
        if stop_at_cv:
            prev_soc = np.concatenate(([self.soc], soc[:-1]))
            prev_vrc = np.concatenate(([self.vrc], vrc[:-1]))
            i_cv = (V_MAX - np.interp(prev_soc, _OCV_SOC, _OCV_V) - prev_vrc * a) / (
                st.r0 + st.r1 * (1.0 - a)
            )
            hit = np.flatnonzero(i_cv < i)
            if hit.size:
                m, cv_hit = int(hit[0]), True
                if m == 0:
                    return True
                k, tk, vrc, soc, ocv_k = k[:m], tk[:m], vrc[:m], soc[:m], ocv_k[:m]
        v = ocv_k + i * st.r0 + vrc
        heat = i * i * st.r0 + i * vrc + pack.charger_loss * i * v + self.leak_a * ocv_k
        heat = heat + st.extra_heat_w_at_2a * (i / 2.0)
        b = math.exp(-dt / pack.tau_th_s)
        drive = (1.0 - b) * (self.ambient(tk) + heat * pack.rth_k_per_w)
        temp, _ = lfilter([1.0], [1.0, -b], drive, zi=[b * self.temp])
        i_in = i * 4.0 / (SUPPLY_V * 0.92)
        self.record(tk, soc, v, temp, np.full(m, i), np.full(m, i_in))
        self.t, self.soc, self.vrc, self.temp = float(tk[-1]), float(soc[-1]), float(vrc[-1]), float(temp[-1])
        return cv_hit

    def step(self, dt: float, i: float) -> None:
        """One CV sample at current i (scalar; exact RC and thermal updates)."""
        st = self.st
        a = math.exp(-dt / self.pack.tau1_s)
        self.vrc = self.vrc * a + i * st.r1 * (1.0 - a)
        v = ocv(self.soc) + i * st.r0 + self.vrc
        heat = i * i * st.r0 + i * self.vrc + self.pack.charger_loss * i * v + self.leak_a * ocv(self.soc)
        heat += st.extra_heat_w_at_2a * (i / 2.0)
        b = math.exp(-dt / self.pack.tau_th_s)
        self.t += dt
        amb = float(self.ambient(self.t))
        self.temp = amb + (self.temp - amb) * b + heat * self.pack.rth_k_per_w * (1.0 - b)
        self.soc = min(1.0, max(0.0, self.soc + (i - self.leak_a) * dt / (3600.0 * st.capacity_ah)))
        i_in = i * 4.0 / (SUPPLY_V * 0.92)
        pct = self.anchor_pct + 100.0 * (self.soc - self.anchor_soc) * self.gauge_scale
        self.rec.add_row(
            self.t0 + self.t,
            ocv(self.soc) + i * st.r0 + self.vrc,
            i,
            self.temp + CONTACT_K_PER_W * i_in * i_in * st.contact_ohm,
            float(min(100.0, max(0.0, round(pct)))),
            float(math.floor(self.cycle)),
        )

    def run(self, slot_s: float) -> tuple[float, float]:
        rng, cab = self.rng, self.cab
        if rng.random() < self.cab.wait_prob:
            # The slot waits before charging: the first samples are at rest, so the first
            # charge step shows the internal resistance. Otherwise charging starts at once.
            self.record(0.0, self.soc, ocv(self.soc), self.temp, 0.0, 0.0)
            self.hold(0.0, min(rng.uniform(0.0, 900.0), slot_s))
        while self.t < slot_s:
            full = self._charge(slot_s, cab.charge_a)
            if not full:
                break
            # Rest at full; a leaking pack drops to 95% and gets topped up.
            self.anchor_soc, self.anchor_pct = self.soc, 100.0
            drop_s = self.cab.topup_drop / (self.st.sd_pct_h / 100.0) * 3600.0
            self.hold(0.0, min(slot_s - self.t, drop_s) + self.cab.sample_s)
        return self.soc, self.temp

    def _charge(self, slot_s: float, charge_a: float) -> bool:
        """CC/CV until termination (True) or until the battery is taken (False)."""
        rng, st, dt = self.rng, self.st, self.cab.sample_s
        if st.refuses and self.soc < 0.9:
            self.hold(0.0, slot_s - self.t + dt)
            return False
        i_set = charge_a * (1.0 - st.derate)
        # Worn contacts starve the pack's charger input (input-voltage limit at 4.5 V).
        i_max = (SUPPLY_V - 4.5) / max(st.contact_ohm, 1e-3) * SUPPLY_V / 4.0 * 0.92
        pause_at = self.t + rng.uniform(300.0, 3600.0) if rng.random() < self.cab.pause_prob else math.inf
        change_at = (
            self.t + rng.uniform(300.0, 3600.0) if rng.random() < self.cab.current_change_prob else math.inf
        )
        rate = st.interrupt_per_h / 3600.0
        cut_at = self.t + rng.exponential(1.0 / rate) if rate > 0 else math.inf
        # Constant-current stretches between events, in closed form.
        while self.t < slot_s:
            nxt = min(pause_at, change_at, cut_at, slot_s + dt)
            if self.hold(min(i_set, i_max), max(nxt - self.t, dt), stop_at_cv=True):
                break
            if self.t >= slot_s:
                return False
            if self.t >= change_at:
                i_set, change_at = float(rng.choice([1.0, 1.5, 2.0])) * (1.0 - st.derate), math.inf
            elif self.t >= pause_at:  # cabinet power budget
                pause_at = math.inf
                self.hold(0.0, min(rng.uniform(600.0, 2400.0), slot_s - self.t + dt))
            elif self.t >= cut_at:  # the pack's protection cuts the charge
                cut_at = self.t + rng.exponential(1.0 / rate)
                self.hold(0.0, min(rng.uniform(300.0, 1800.0), slot_s - self.t + dt))
        # Constant voltage: the current tapers until termination.
        a_cv = math.exp(-dt / self.pack.tau1_s)
        while self.t < slot_s:
            i_cv = (V_MAX - ocv(self.soc) - self.vrc * a_cv) / (st.r0 + st.r1 * (1.0 - a_cv))
            i = max(0.0, min(i_set, i_max, i_cv))
            if i < self.cab.term_a:
                return True
            self.step(dt, i)
        return False
