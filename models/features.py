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


@dataclass(frozen=True, eq=False)
class _Samples:
    """One session's samples (at least two) and the masks several features share."""

    t: np.ndarray
    v: np.ndarray
    i: np.ndarray
    temp: np.ndarray
    soc: np.ndarray

    @property
    def dt(self) -> np.ndarray:
        return np.diff(self.t)

    @property
    def charging(self) -> np.ndarray:
        return self.i > CHARGING_A


@dataclass(frozen=True, eq=False)
class _ChargeSpan:
    """The stretch from the first to the last charging sample (there are at least three)."""

    first: int
    last: int
    icharge: np.ndarray  # the charging samples' currents
    strong: np.ndarray  # ...those at least half the peak
    duration: float
    dsoc: float


def _session(tel: BatteryTelemetry, a: int, b: int) -> _Session:
    """Per-session estimates of samples ``a:b``: each feature is one function below."""
    x = _Samples(tel.t_s[a:b], tel.voltage_v[a:b], tel.current_a[a:b], tel.temp_c[a:b], tel.soc_pct[a:b])
    if x.t.size < 2:
        return _Session()
    span = _charge_span(x)
    return _Session(
        r_int=_r_int(x),
        temp_rise_per_a=_temp_rise_per_a(x, span),
        max_temp_charging=_max_temp_charging(x, span),
        max_temp_rise=_max_temp_rise(x, span),
        charge_time_ratio=_charge_time_ratio(x, span),
        cv_fraction=_cv_fraction(x, span),
        cv_tau_h=_cv_tau(x, span),
        cv_floor_a=_cv_floor_a(x, span),
        top_charge_h=_top_charge_h(x, span),
        capacity_ah=_capacity_ah(x, span),
        charge_current_p90=_charge_current_p90(span),
        soc_end=float(x.soc.max()),
        charged=_charged(span),
        refusal_s=_refusal_s(x),
        slot_s=float(x.t[-1] - x.t[0]),
        interruptions=_interruptions(x),
        topups=_topups(x),
        rest_s=_rest_s(x),
        self_discharge=_self_discharge(x),
        rest_dv=_rest_dv(x),
    )


def _refusal_s(x: _Samples) -> float:
    """Seconds not charging while far from full (after the first 10 minutes in the slot)."""
    late = (x.t - x.t[0]) > 600.0
    refusing = (~x.charging[:-1]) & (x.soc[:-1] < FULL_SOC) & late[:-1]
    return float(x.dt[refusing].sum())


def _interruptions(x: _Samples) -> int:
    """Times a real charge stopped before the pack was full."""
    was_charging = x.i[:-1] > STEP_MIN_A
    stopped = ~x.charging[1:]
    return int(np.sum(was_charging & stopped & (x.soc[1:] < FULL_SOC)))


def _topups(x: _Samples) -> int:
    """Charges that started on a pack that was already full."""
    starts = np.flatnonzero(~x.charging[:-1] & x.charging[1:]) + 1
    return int(np.sum(x.soc[starts] >= FULL_SOC))


def _r_int(x: _Samples) -> float:
    """Internal resistance: voltage step over current step between close samples."""
    di = np.diff(x.i)
    step = (np.abs(di) >= STEP_MIN_A) & (x.dt <= STEP_MAX_DT_S)
    if step.any():
        r = np.diff(x.v)[step] / di[step]
        r = r[(r > 0.0) & (r < 2.0)]
        if r.size:
            return float(np.median(r))
    return np.nan


def _charge_span(x: _Samples) -> _ChargeSpan | None:
    """The charging stretch, or None below three charging samples (no charge features then)."""
    charging = x.charging
    if charging.sum() < 3:
        return None
    ci = np.flatnonzero(charging)
    first, last = ci[0], ci[-1]
    icharge = x.i[charging]
    return _ChargeSpan(
        first=first,
        last=last,
        icharge=icharge,
        strong=icharge[icharge >= 0.5 * icharge.max()],
        duration=float(x.t[last] - x.t[first]),
        dsoc=float(x.soc[last] - x.soc[first]),
    )


def _charge_current_p90(span: _ChargeSpan | None) -> float:
    return np.nan if span is None else float(np.percentile(span.icharge, 90))


def _max_temp_charging(x: _Samples, span: _ChargeSpan | None) -> float:
    return np.nan if span is None else float(x.temp[x.charging].max())


def _max_temp_rise(x: _Samples, span: _ChargeSpan | None) -> float:
    """How far the temperature rose over the charging stretch."""
    if span is None:
        return np.nan
    return float(x.temp[span.first : span.last + 1].max() - x.temp[span.first])


def _temp_rise_per_a(x: _Samples, span: _ChargeSpan | None) -> float:
    """The rise per amp of strong charge current, on charges of at least 20 minutes."""
    if span is None or not (span.duration >= 1200.0 and span.strong.size):
        return np.nan
    return _max_temp_rise(x, span) / float(span.strong.mean())


def _capacity_ah(x: _Samples, span: _ChargeSpan | None) -> float:
    """Charge integral over the charging stretch (trapezoid on close samples only) per SoC gained."""
    if span is None or not span.dsoc >= 30.0:
        return np.nan
    seg = slice(span.first, span.last + 1)
    ts, isg = x.t[seg], np.clip(x.i[seg], 0.0, None)
    dts = np.diff(ts)
    ok = dts <= STEP_MAX_DT_S
    ah = float(np.sum(0.5 * (isg[1:] + isg[:-1])[ok] * dts[ok])) / 3600.0
    return ah / (span.dsoc / 100.0)


def _top_mask(x: _Samples) -> np.ndarray:
    """Charging near full in CV."""
    return x.charging & (x.soc >= 97.0) & (x.v >= CV_VOLTAGE_V)


def _cv_floor_a(x: _Samples, span: _ChargeSpan | None) -> float:
    """Near full in CV, the current floor: a leak (soft short) keeps drawing what it loses."""
    top = _top_mask(x)
    if span is None or not top.sum() >= 3:
        return np.nan
    return float(np.percentile(x.i[top], 10))


def _top_charge_h(x: _Samples, span: _ChargeSpan | None) -> float:
    """...and never lets the charge terminate: hours spent topping up the last percent."""
    top = _top_mask(x)
    if span is None or not top.sum() >= 3:
        return np.nan
    return float(x.dt[top[:-1] & (x.dt <= STEP_MAX_DT_S)].sum()) / 3600.0


def _charged(span: _ChargeSpan | None) -> bool:
    """The session charged the pack by at least 20 % SoC."""
    return span is not None and span.dsoc >= 20.0


def _finished(x: _Samples, span: _ChargeSpan | None) -> bool:
    """A charge of at least 20 % that ran to near full with the current tapered off."""
    if span is None:
        return False
    return bool(x.soc[span.last] >= 95.0 and x.i[span.last] < 0.3 * span.icharge.max() and span.dsoc >= 20.0)


def _charge_time_ratio(x: _Samples, span: _ChargeSpan | None) -> float:
    """Charge time over the ideal time at the strong current, for finished charges."""
    if span is None or not _finished(x, span):
        return np.nan
    ideal_s = (span.dsoc / 100.0) * RATED_CAPACITY_AH / float(np.median(span.strong)) * 3600.0
    return span.duration / ideal_s


def _cv_mask(x: _Samples, span: _ChargeSpan) -> np.ndarray:
    """Charging at the CV voltage with the current below 85 % of the strong one."""
    return x.charging & (x.v >= CV_VOLTAGE_V) & (x.i < 0.85 * float(np.median(span.strong)))


def _cv_fraction(x: _Samples, span: _ChargeSpan | None) -> float:
    """Share of a finished charge spent in CV."""
    if span is None or not _finished(x, span):
        return np.nan
    cv = _cv_mask(x, span)
    return float(x.dt[cv[:-1] & x.charging[1:]].sum()) / span.duration if span.duration > 0 else np.nan


def _cv_tau(x: _Samples, span: _ChargeSpan | None) -> float:
    """Time constant of a finished charge's CV taper."""
    if span is None or not _finished(x, span):
        return np.nan
    cv = _cv_mask(x, span)
    return _cv_tau_h(x.t[cv], x.i[cv])


def _rests(x: _Samples) -> list[tuple[int, int]]:
    """Rest stretches (|current| below REST_A) of at least two samples."""
    return [(ra, rb) for ra, rb in _runs(np.abs(x.i) < REST_A) if rb - ra >= 2]


def _rest_s(x: _Samples) -> float:
    """Seconds at rest."""
    total = 0.0
    for ra, rb in _rests(x):
        total += float(x.t[rb - 1] - x.t[ra])
    return total


def _settled_rests(x: _Samples) -> list[tuple[np.ndarray, slice, np.ndarray]]:
    """Long rests after the voltage has settled: (hours since settled, the rest's samples, kept)."""
    out = []
    for ra, rb in _rests(x):
        rt = x.t[ra:rb]
        keep = (rt - rt[0]) >= REST_SETTLE_S
        if keep.sum() < 3 or rt[keep][-1] - rt[keep][0] < REST_MIN_S:
            continue
        out.append(((rt[keep] - rt[keep][0]) / 3600.0, slice(ra, rb), keep))
    return out


def _self_discharge(x: _Samples) -> list[float]:
    """SoC lost per hour on each settled long rest."""
    return [-_slope(th, x.soc[seg][keep]) for th, seg, keep in _settled_rests(x)]


def _rest_dv(x: _Samples) -> list[float]:
    """Millivolts lost per hour on each settled long rest."""
    return [-1000.0 * _slope(th, x.v[seg][keep]) for th, seg, keep in _settled_rests(x)]


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
