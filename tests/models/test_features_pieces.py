"""The per-session feature pieces, each on a tiny synthetic window, and a stored vector that
proves splitting ``_session`` into them changed nothing."""

from __future__ import annotations

import math

import numpy as np

from models.features import FEATURE_NAMES, extract_features
from models.telemetry import BatteryTelemetry


def seeded_window(seed: int = 20260921) -> BatteryTelemetry:
    """A noisy window touching every feature: current steps, pauses below full, CV taper,
    top-ups, long leaking rests and rental gaps; fixed by its seed."""
    rng = np.random.default_rng(seed)
    t, v, i, temp, soc, cyc = [], [], [], [], [], []
    clock, level, cycle = 0.0, 25.0, 200.0

    def sample(cur: float, volt: float, tc: float) -> None:
        nonlocal clock
        t.append(clock), i.append(cur), v.append(volt + rng.normal(0, 0.002))
        temp.append(tc + rng.normal(0, 0.05)), soc.append(round(level)), cyc.append(cycle)
        clock += float(rng.choice([20.0, 30.0, 30.0, 40.0]))

    for k in range(5):
        cycle = 200.0 + k
        level = float(rng.uniform(15, 35))
        for _ in range(int(rng.integers(10, 40))):  # idle at first, then refusing below full
            sample(0.0, 3.6 + 0.006 * level, 25.0)
        cc = float(rng.uniform(1.2, 2.0))
        heat = 0.0
        while level < 97.0:
            if rng.random() < 0.03:  # a pause mid-charge (an interruption)
                for _ in range(3):
                    sample(0.0, 3.6 + 0.006 * level, 25.0 + heat)
            cur = cc * (0.7 if rng.random() < 0.2 else 1.0)
            level = min(100.0, level + 100.0 * cur * 30.0 / 3600.0 / 4.6)
            heat = min(5.0 * cur, heat + 0.08)
            sample(cur, min(4.2, 3.6 + 0.006 * level + cur * 0.14), 25.0 + heat)
        cur = cc
        while cur > 0.08:  # constant voltage: the current tapers
            cur *= 0.93
            level = min(100.0, level + 0.05)
            sample(cur, 4.2, 25.0 + heat)
        for n in range(int(rng.integers(150, 300))):  # rest at full, leaking, with top-ups
            level -= 0.8 * 30.0 / 3600.0
            if n % 120 == 119:
                level = 99.0
                sample(0.4, 4.19, 25.5)
            sample(0.0, 3.6 + 0.006 * level, 25.0)
        clock += float(rng.uniform(2, 9)) * 3600.0  # rented out
    arr = [np.asarray(a, dtype=float) for a in (t, v, i, temp, soc, cyc)]
    return BatteryTelemetry("SEEDED1", *arr)


EXPECTED: dict[str, float] = {  # computed with _session before it was split
    "cycle_last": 204.0,
    "cycles_in_window": 4.0,
    "n_sessions": 5.0,
    "n_charge_sessions": 5.0,
    "window_h": 40.29754318151052,
    "sample_interval_s": 30.0,
    "r_int_ohm": 0.13493420467318018,
    "r_int_trend_ohm_per_session": -0.0008318349186232088,
    "temp_rise_per_a": 4.5336993492329105,
    "temp_rise_per_a_trend": -0.13184124940544847,
    "max_temp_charging_c": 32.169760815740034,
    "max_temp_rise_c": 7.037974913814086,
    "charge_time_ratio": 1.5828082300599435,
    "cv_fraction": 0.11521873074553296,
    "cv_tau_h": 0.8781272266943093,
    "cv_floor_current_a": 0.1052177822074873,
    "top_charge_h": 0.37777777777777777,
    "capacity_ah": 4.6926993937066195,
    "capacity_ah_recent": 4.715190077712349,
    "capacity_trend_ah_per_session": 0.01669841867673192,
    "self_discharge_pct_h": 1.8822976076898448,
    "self_discharge_pct_h_max": 2.1765595753955034,
    "self_discharge_pct_h_last": 2.1419764351254083,
    "self_discharge_trend_pct_h_per_rest": -0.1726368201064567,
    "rest_voltage_drop_mv_h": 5.095077862754636,
    "topups_per_rest_h": 0.9713024282560707,
    "refusal_frac": 0.050290567724631204,
    "interruptions_per_session": 6.8,
    "charge_current_p90_a": 1.6051013037227597,
    "charge_current_trend_a_per_session": 0.06339002831426802,
    "soc_end_median": 99.0,
    "insufficient_data": 0.0,
}


def test_seeded_window_gives_the_stored_vector_exactly():
    f = extract_features(seeded_window())
    got = f.as_dict()
    assert list(got) == list(FEATURE_NAMES)
    for name in FEATURE_NAMES:
        want = EXPECTED[name]
        assert (math.isnan(got[name]) and math.isnan(want)) or got[name] == want, name
