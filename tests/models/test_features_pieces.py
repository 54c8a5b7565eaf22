"""The per-session feature pieces, each on a tiny synthetic window, and a stored vector that
proves splitting ``_session`` into them changed nothing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models import features
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
        # equal to the last few bits: numpy releases may sum in another order (2.4 changed the
        # last bit of self_discharge_pct_h_max); a real change of the features moves far more
        assert (math.isnan(got[name]) and math.isnan(want)) or math.isclose(
            got[name], want, rel_tol=1e-12, abs_tol=1e-12
        ), (name, got[name], want)


# --- each per-session feature on a tiny hand-made window -----------------------------------


def samples(t, i, *, v=None, temp=None, soc=None) -> features._Samples:
    n = len(t)
    col = lambda a, d: np.asarray(a if a is not None else [d] * n, dtype=float)  # noqa: E731
    return features._Samples(
        np.asarray(t, dtype=float), col(v, 4.0), np.asarray(i, dtype=float), col(temp, 25.0), col(soc, 50.0)
    )


def test_refusal_counts_time_not_charging_below_full_after_ten_minutes():
    t = [0, 300, 600, 900, 1200]
    assert features._refusal_s(samples(t, [0] * 5)) == 300.0
    assert features._refusal_s(samples(t, [0] * 5, soc=[95] * 5)) == 0.0
    assert features._refusal_s(samples(t, [1] * 5)) == 0.0


def test_interruptions_are_real_charges_stopped_below_full():
    x = samples([0, 30, 60, 90, 120], [1, 1, 0, 1, 0])
    assert features._interruptions(x) == 2
    assert features._interruptions(samples([0, 30, 60, 90, 120], [1, 1, 0, 1, 0], soc=[100] * 5)) == 0


def test_topups_are_charges_started_on_a_full_pack():
    assert features._topups(samples([0, 30, 60, 90], [0, 1, 0, 1], soc=[95, 95, 50, 50])) == 1
    assert features._topups(samples([0, 30], [0, 0])) == 0


def test_internal_resistance_from_a_close_current_step_only():
    assert features._r_int(samples([0, 30, 60], [0, 1, 1], v=[4.0, 4.1, 4.1])) == pytest.approx(0.1)
    assert math.isnan(features._r_int(samples([0, 200, 230], [0, 1, 1], v=[4.0, 4.1, 4.1])))
    assert math.isnan(features._r_int(samples([0, 30, 60], [0, 1, 1], v=[4.1, 4.0, 4.0])))  # r < 0


def test_fewer_than_three_charging_samples_give_no_charge_features():
    x = samples([0, 30, 60, 90], [0, 1, 1, 0], soc=[20, 50, 80, 80])
    span = features._charge_span(x)
    assert span is None and not features._charged(span)
    for f in (features._capacity_ah, features._max_temp_rise, features._cv_floor_a, features._cv_tau):
        assert math.isnan(f(x, span))
    assert math.isnan(features._charge_current_p90(span))


def test_charge_current_p90_and_temperatures_while_charging():
    x = samples([0, 600, 1200, 1500], [2, 2, 2, 0], temp=[25, 27, 31, 40])
    span = features._charge_span(x)
    assert features._charge_current_p90(span) == 2.0
    assert features._max_temp_charging(x, span) == 31.0  # 40 is after the charge
    assert features._max_temp_rise(x, span) == 6.0
    assert features._temp_rise_per_a(x, span) == 3.0
    short = samples([0, 300, 600], [2, 2, 2], temp=[25, 27, 31])  # under 20 minutes
    assert math.isnan(features._temp_rise_per_a(short, features._charge_span(short)))
    p90 = samples([0, 1, 2, 3, 4], [1, 2, 3, 4, 5])
    assert features._charge_current_p90(features._charge_span(p90)) == pytest.approx(4.6)


def test_capacity_is_charge_throughput_per_soc_gained_from_30_percent():
    x = samples([0, 60, 120], [2, 2, 2], soc=[20, 40, 60])
    assert features._capacity_ah(x, features._charge_span(x)) == pytest.approx((240 / 3600) / 0.4)
    less = samples([0, 60, 120], [2, 2, 2], soc=[20, 30, 45])
    assert math.isnan(features._capacity_ah(less, features._charge_span(less)))


def test_cv_floor_and_top_charge_hours_near_full():
    x = samples([0, 30, 60, 90], [0.5, 0.4, 0.3, 0.2], v=[4.2] * 4, soc=[97, 98, 99, 99])
    span = features._charge_span(x)
    assert features._cv_floor_a(x, span) == pytest.approx(0.23)
    assert features._top_charge_h(x, span) == pytest.approx(90 / 3600)
    low = samples([0, 30, 60, 90], [0.5, 0.4, 0.3, 0.2], v=[4.1] * 4, soc=[97, 98, 99, 99])
    assert math.isnan(features._cv_floor_a(low, features._charge_span(low)))


def test_charged_from_20_percent_gained():
    for gained, want in ((20, True), (19, False)):
        x = samples([0, 30, 60], [1, 1, 1], soc=[50, 60, 50 + gained])
        assert features._charged(features._charge_span(x)) is want


def cc_cv(tapered: bool = True) -> features._Samples:
    """10 minutes at 2 A from 20 % SoC, then 12 minutes of CV with the current falling 10 % a minute."""
    cv = [2.0 * 0.9**k for k in range(1, 13)] if tapered else [2.0] * 12
    return samples(
        [60 * k for k in range(22)],
        [2.0] * 10 + cv,
        v=[4.0] * 10 + [4.2] * 12,
        soc=[20 + 4 * k for k in range(21)] + [100],
    )


def test_a_finished_charge_gives_time_ratio_cv_fraction_and_taper():
    x = cc_cv()
    span = features._charge_span(x)
    assert features._charge_time_ratio(x, span) == pytest.approx(1260 / 7200)  # ideal: 0.8 * 5 Ah / 2 A
    assert features._cv_fraction(x, span) == pytest.approx(600 / 1260)
    assert features._cv_tau(x, span) == pytest.approx(-1 / (60 * math.log(0.9)))


def test_an_unfinished_charge_gives_no_completion_features():
    x = cc_cv(tapered=False)
    span = features._charge_span(x)
    assert features._charged(span)
    for f in (features._charge_time_ratio, features._cv_fraction, features._cv_tau):
        assert math.isnan(f(x, span))


def test_rest_time_and_self_discharge_on_a_settled_long_rest():
    t = np.arange(0, 4001, 100.0)
    x = samples(t, [0] * t.size, v=4.2 - 0.005 * t / 3600, soc=100 - 2 * t / 3600)
    assert features._rest_s(x) == 4000.0
    assert features._self_discharge(x) == [pytest.approx(2.0)]
    assert features._rest_dv(x) == [pytest.approx(5.0)]
    short = samples(t[:31], [0] * 31, soc=100 - 2 * t[:31] / 3600)  # 3000 s: too short once settled
    assert features._rest_s(short) == 3000.0 and features._self_discharge(short) == []
    split = samples([0, 100, 200, 300, 400], [0, 0, 1, 0, 0])
    assert features._rest_s(split) == 200.0 and features._rest_dv(split) == []
