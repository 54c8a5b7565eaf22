"""Feature extraction from a battery's telemetry window: the ONE copy used by training and inference.

The window is split into slot sessions (a time jump longer than ``SESSION_GAP_S`` means the
battery was rented out). Per session we estimate the physical quantities that predict failure
(internal resistance from voltage steps at current changes, temperature rise per amp, time to
full and CV taper, capacity per charge, self-discharge at rest, charge acceptance), then
summarise them over the window (medians, extremes, trends). Unknown values are NaN; the model
handles them natively.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from models.telemetry import BatteryTelemetry

RATED_CAPACITY_AH = 5.0
SESSION_GAP_S = 600.0  # longer silence than this = the battery left the slot
CHARGING_A = 0.05  # above: charging
REST_A = 0.02  # below (absolute): at rest
STEP_MIN_A = 0.3  # a current change this large gives a resistance estimate
STEP_MAX_DT_S = 130.0  # ...if the two samples are at most this far apart
CV_VOLTAGE_V = 4.15  # above this while the current tapers: constant-voltage phase
REST_SETTLE_S = 1200.0  # ignore the relaxation right after current stops
REST_MIN_S = 2400.0  # shortest settled rest stretch used for self-discharge
FULL_SOC = 90.0  # a pack below this that is not charging is "refusing" charge
MIN_SAMPLES = 30
MIN_CHARGE_SESSIONS = 2

FEATURE_NAMES: tuple[str, ...] = (
    "cycle_last",
    "cycles_in_window",
    "n_sessions",
    "n_charge_sessions",
    "window_h",
    "sample_interval_s",
    "r_int_ohm",
    "r_int_trend_ohm_per_session",
    "temp_rise_per_a",
    "temp_rise_per_a_trend",
    "max_temp_charging_c",
    "max_temp_rise_c",
    "charge_time_ratio",
    "cv_fraction",
    "cv_tau_h",
    "cv_floor_current_a",
    "top_charge_h",
    "capacity_ah",
    "capacity_ah_recent",
    "capacity_trend_ah_per_session",
    "self_discharge_pct_h",
    "self_discharge_pct_h_max",
    "self_discharge_pct_h_last",
    "self_discharge_trend_pct_h_per_rest",
    "rest_voltage_drop_mv_h",
    "topups_per_rest_h",
    "refusal_frac",
    "interruptions_per_session",
    "charge_current_p90_a",
    "charge_current_trend_a_per_session",
    "soc_end_median",
    "insufficient_data",
)
FEATURE_INDEX = {name: i for i, name in enumerate(FEATURE_NAMES)}


@dataclass(frozen=True, eq=False)
class FeatureVector:
    """Fixed-order features of one battery window (NaN = not measurable from this window)."""

    battery_sn: str
    values: np.ndarray
    insufficient_data: bool
    names: tuple[str, ...] = field(default=FEATURE_NAMES)

    def __getitem__(self, name: str) -> float:
        return float(self.values[FEATURE_INDEX[name]])

    def as_dict(self) -> dict[str, float]:
        return {n: float(v) for n, v in zip(self.names, self.values, strict=True)}


@dataclass
class _Session:
    """Per-session estimates (NaN when the session does not show them)."""

    r_int: float = np.nan
    temp_rise_per_a: float = np.nan
    max_temp_charging: float = np.nan
    max_temp_rise: float = np.nan
    charge_time_ratio: float = np.nan
    cv_fraction: float = np.nan
    cv_tau_h: float = np.nan
    cv_floor_a: float = np.nan
    top_charge_h: float = np.nan
    capacity_ah: float = np.nan
    charge_current_p90: float = np.nan
    soc_end: float = np.nan
    charged: bool = False
    refusal_s: float = 0.0
    slot_s: float = 0.0
    interruptions: int = 0
    topups: int = 0
    rest_s: float = 0.0
    self_discharge: list[float] = field(default_factory=list)
    rest_dv: list[float] = field(default_factory=list)


def extract_features(tel: BatteryTelemetry) -> FeatureVector:
    """Features of one window; too little data still gives a vector, with ``insufficient_data`` set."""
    n = len(tel)
    values = np.full(len(FEATURE_NAMES), np.nan)
    if n == 0:
        values[FEATURE_INDEX["insufficient_data"]] = 1.0
        values[FEATURE_INDEX["n_sessions"]] = 0.0
        values[FEATURE_INDEX["n_charge_sessions"]] = 0.0
        return FeatureVector(tel.battery_sn, values, True)
    t = tel.t_s
    dt = np.diff(t)
    cut = np.flatnonzero(dt > SESSION_GAP_S) + 1
    bounds = np.concatenate(([0], cut, [n]))
    sessions = [_session(tel, int(a), int(b)) for a, b in itertools.pairwise(bounds) if b > a]
    charged = [s for s in sessions if s.charged]

    def put(name: str, value: float) -> None:
        values[FEATURE_INDEX[name]] = value

    put("cycle_last", float(tel.cycle[-1]))
    put("cycles_in_window", float(tel.cycle[-1] - tel.cycle[0]))
    put("n_sessions", float(len(sessions)))
    put("n_charge_sessions", float(len(charged)))
    put("window_h", float(t[-1] - t[0]) / 3600.0)
    in_slot = dt[dt <= SESSION_GAP_S]
    put("sample_interval_s", float(np.median(in_slot)) if in_slot.size else np.nan)

    def col(attr: str) -> np.ndarray:
        return np.array([getattr(s, attr) for s in sessions], dtype=float)

    r = col("r_int")
    put("r_int_ohm", _nanmedian(r))
    put("r_int_trend_ohm_per_session", _trend(r))
    rise = col("temp_rise_per_a")
    put("temp_rise_per_a", _nanmedian(rise))
    put("temp_rise_per_a_trend", _trend(rise))
    put("max_temp_charging_c", _nanmax(col("max_temp_charging")))
    put("max_temp_rise_c", _nanmax(col("max_temp_rise")))
    put("charge_time_ratio", _nanmedian(col("charge_time_ratio")))
    put("cv_fraction", _nanmedian(col("cv_fraction")))
    put("cv_tau_h", _nanmedian(col("cv_tau_h")))
    put("cv_floor_current_a", _nanmedian(col("cv_floor_a")))
    put("top_charge_h", _nanmedian(col("top_charge_h")))
    cap = col("capacity_ah")
    put("capacity_ah", _nanmedian(cap))
    finite_cap = cap[np.isfinite(cap)]
    put("capacity_ah_recent", float(np.mean(finite_cap[-3:])) if finite_cap.size else np.nan)
    put("capacity_trend_ah_per_session", _trend(cap))
    sd = np.array([v for s in sessions for v in s.self_discharge], dtype=float)
    put("self_discharge_pct_h", _nanmedian(sd))
    put("self_discharge_pct_h_max", _nanmax(sd))
    put("self_discharge_pct_h_last", float(sd[-1]) if sd.size else np.nan)
    put("self_discharge_trend_pct_h_per_rest", _trend(sd))
    put("rest_voltage_drop_mv_h", _nanmedian(np.array([v for s in sessions for v in s.rest_dv], dtype=float)))
    rest_h = sum(s.rest_s for s in sessions) / 3600.0
    put("topups_per_rest_h", sum(s.topups for s in sessions) / rest_h if rest_h >= 1.0 else np.nan)
    slot_s = sum(s.slot_s for s in sessions)
    put("refusal_frac", sum(s.refusal_s for s in sessions) / slot_s if slot_s > 0 else np.nan)
    put("interruptions_per_session", sum(s.interruptions for s in sessions) / len(sessions))
    cur = col("charge_current_p90")
    put("charge_current_p90_a", _nanmedian(cur))
    put("charge_current_trend_a_per_session", _trend(cur))
    put("soc_end_median", _nanmedian(col("soc_end")))
    insufficient = n < MIN_SAMPLES or len(charged) < MIN_CHARGE_SESSIONS
    put("insufficient_data", 1.0 if insufficient else 0.0)
    return FeatureVector(tel.battery_sn, values, insufficient)


def extract_many(windows: Sequence[BatteryTelemetry]) -> np.ndarray:
    """Feature matrix (rows = windows, columns = FEATURE_NAMES)."""
    if not windows:
        return np.empty((0, len(FEATURE_NAMES)))
    return np.vstack([extract_features(w).values for w in windows])


def _session(tel: BatteryTelemetry, a: int, b: int) -> _Session:
    s = _Session()
    t, v, i, temp, soc = (
        tel.t_s[a:b],
        tel.voltage_v[a:b],
        tel.current_a[a:b],
        tel.temp_c[a:b],
        tel.soc_pct[a:b],
    )
    if t.size < 2:
        return s
    dt = np.diff(t)
    s.slot_s = float(t[-1] - t[0])
    s.soc_end = float(soc.max())
    charging = i > CHARGING_A
    resting = np.abs(i) < REST_A

    # Not charging while far from full (after the first 10 minutes in the slot): refusal.
    late = (t - t[0]) > 600.0
    refusing = (~charging[:-1]) & (soc[:-1] < FULL_SOC) & late[:-1]
    s.refusal_s = float(dt[refusing].sum())
    was_charging = i[:-1] > STEP_MIN_A
    stopped = ~charging[1:]
    s.interruptions = int(np.sum(was_charging & stopped & (soc[1:] < FULL_SOC)))
    starts = np.flatnonzero(~charging[:-1] & charging[1:]) + 1
    s.topups = int(np.sum(soc[starts] >= FULL_SOC))

    # Internal resistance: voltage step over current step between close samples.
    di = np.diff(i)
    step = (np.abs(di) >= STEP_MIN_A) & (dt <= STEP_MAX_DT_S)
    if step.any():
        r = np.diff(v)[step] / di[step]
        r = r[(r > 0.0) & (r < 2.0)]
        if r.size:
            s.r_int = float(np.median(r))

    if charging.sum() >= 3:
        ci = np.flatnonzero(charging)
        first, last = ci[0], ci[-1]
        icharge = i[charging]
        s.charge_current_p90 = float(np.percentile(icharge, 90))
        s.max_temp_charging = float(temp[charging].max())
        rise = float(temp[first : last + 1].max() - temp[first])
        s.max_temp_rise = rise
        strong = icharge[icharge >= 0.5 * icharge.max()]
        duration = float(t[last] - t[first])
        if duration >= 1200.0 and strong.size:
            s.temp_rise_per_a = rise / float(strong.mean())
        # Charge integral over the charging stretch (trapezoid on close samples only).
        seg = slice(first, last + 1)
        ts, isg = t[seg], np.clip(i[seg], 0.0, None)
        dts = np.diff(ts)
        ok = dts <= STEP_MAX_DT_S
        ah = float(np.sum(0.5 * (isg[1:] + isg[:-1])[ok] * dts[ok])) / 3600.0
        dsoc = float(soc[last] - soc[first])
        if dsoc >= 30.0:
            s.capacity_ah = ah / (dsoc / 100.0)
        # Near full in CV, the current floor: a leak (soft short) keeps drawing what it loses.
        top = charging & (soc >= 97.0) & (v >= CV_VOLTAGE_V)
        if top.sum() >= 3:
            s.cv_floor_a = float(np.percentile(i[top], 10))
            # ...and never lets the charge terminate: hours spent topping up the last percent.
            s.top_charge_h = float(dt[top[:-1] & (dt <= STEP_MAX_DT_S)].sum()) / 3600.0
        finished = soc[last] >= 95.0 and i[last] < 0.3 * icharge.max()
        if finished and dsoc >= 20.0:
            s.charged = True
            ideal_s = (dsoc / 100.0) * RATED_CAPACITY_AH / float(np.median(strong)) * 3600.0
            s.charge_time_ratio = duration / ideal_s
            cv = charging & (v >= CV_VOLTAGE_V) & (i < 0.85 * float(np.median(strong)))
            s.cv_fraction = float(dt[cv[:-1] & charging[1:]].sum()) / duration if duration > 0 else np.nan
            s.cv_tau_h = _cv_tau_h(t[cv], i[cv])
        elif dsoc >= 20.0:
            s.charged = True

    # Self-discharge on long rests, after the voltage has settled.
    for ra, rb in _runs(resting):
        rt = t[ra:rb]
        if rt.size < 2:
            continue
        s.rest_s += float(rt[-1] - rt[0])
        keep = (rt - rt[0]) >= REST_SETTLE_S
        if keep.sum() < 3 or rt[keep][-1] - rt[keep][0] < REST_MIN_S:
            continue
        th = (rt[keep] - rt[keep][0]) / 3600.0
        s.self_discharge.append(-_slope(th, soc[ra:rb][keep]))
        s.rest_dv.append(-1000.0 * _slope(th, v[ra:rb][keep]))
    return s


def _cv_tau_h(t: np.ndarray, i: np.ndarray) -> float:
    """Time constant of the CV current taper, from a log-linear fit."""
    ok = i > CHARGING_A
    if ok.sum() < 4 or t[ok][-1] - t[ok][0] < 600.0:
        return np.nan
    k = _slope((t[ok] - t[ok][0]) / 3600.0, np.log(i[ok]))
    return float(-1.0 / k) if k < 0 else np.nan


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Half-open index ranges where mask is true."""
    m = np.concatenate(([False], mask, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(m))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    xm = x - x.mean()
    den = float(np.dot(xm, xm))
    return float(np.dot(xm, y - y.mean()) / den) if den > 0 else 0.0


def _trend(values: np.ndarray) -> float:
    """Least-squares slope per session over the finite values (NaN below 3 points)."""
    idx = np.flatnonzero(np.isfinite(values))
    if idx.size < 3:
        return np.nan
    return _slope(idx.astype(float), values[idx])


def _nanmedian(a: np.ndarray) -> float:
    a = a[np.isfinite(a)]
    return float(np.median(a)) if a.size else np.nan


def _nanmax(a: np.ndarray) -> float:
    a = a[np.isfinite(a)]
    return float(a.max()) if a.size else np.nan
