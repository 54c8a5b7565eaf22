"""Feature extraction on windows whose physics is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.features import FEATURE_NAMES, extract_features, extract_many
from models.telemetry import BatteryTelemetry


def test_internal_resistance_estimate_is_near_the_true_one(known_window):
    for r in (0.08, 0.15, 0.3):
        f = extract_features(known_window(r_ohm=r))
        assert f["r_int_ohm"] == pytest.approx(r, rel=0.1)


def test_capacity_estimate_follows_the_charge_throughput(known_window):
    assert extract_features(known_window(capacity_ah=4.0))["capacity_ah"] == pytest.approx(4.0, rel=0.05)
    assert extract_features(known_window(capacity_ah=5.0))["capacity_ah"] == pytest.approx(5.0, rel=0.05)


def test_self_discharge_rate_at_rest_is_measured(known_window):
    leaking = extract_features(known_window(self_discharge_pct_h=2.0, rest_h=5.0))
    tight = extract_features(known_window(self_discharge_pct_h=0.0, rest_h=5.0))
    assert leaking["self_discharge_pct_h"] == pytest.approx(2.0, abs=0.3)
    assert tight["self_discharge_pct_h"] == pytest.approx(0.0, abs=0.05)
    assert leaking["rest_voltage_drop_mv_h"] > 5.0 > tight["rest_voltage_drop_mv_h"]


def test_temperature_rise_per_amp_and_max_while_charging(known_window):
    f = extract_features(known_window(rise_per_a=6.0, charge_a=1.5, rest_temp_c=30.0))
    assert f["temp_rise_per_a"] == pytest.approx(6.0, rel=0.05)
    assert f["max_temp_charging_c"] == pytest.approx(39.0, abs=0.01)


def test_sessions_are_split_at_rental_gaps(known_window):
    f = extract_features(known_window(sessions=4))
    assert f["n_sessions"] == 4 and f["n_charge_sessions"] == 4
    assert f["cycles_in_window"] == 3 and f["cycle_last"] == 103
    assert not f.insufficient_data and f["insufficient_data"] == 0.0


def test_too_little_data_still_gives_a_full_vector_with_the_flag(known_window):
    w = known_window(sessions=1)
    short = BatteryTelemetry(
        w.battery_sn,
        *(getattr(w, c)[:8] for c in ("t_s", "voltage_v", "current_a", "temp_c", "soc_pct", "cycle")),
    )
    f = extract_features(short)
    assert f.insufficient_data and f["insufficient_data"] == 1.0
    assert f.values.shape == (len(FEATURE_NAMES),)
    assert math.isnan(f["capacity_ah"])


def test_an_empty_window_is_insufficient_not_an_error():
    empty = BatteryTelemetry("E", *(np.empty(0) for _ in range(6)))
    f = extract_features(empty)
    assert f.insufficient_data and f.values.shape == (len(FEATURE_NAMES),)


def test_feature_matrix_rows_follow_the_windows(known_window):
    x = extract_many([known_window(r_ohm=0.1), known_window(r_ohm=0.2)])
    assert x.shape == (2, len(FEATURE_NAMES))
    col = FEATURE_NAMES.index("r_int_ohm")
    assert x[0, col] < x[1, col]


def test_simulated_pack_resistance_is_recovered():
    """The training simulator and the extractor agree on what internal resistance means."""
    physics = pytest.importorskip("models.training.physics")
    import dataclasses

    rng = np.random.default_rng(0)
    pack = physics.PackSpec(
        battery_sn="SIM",
        kind="healthy",
        capacity_ah=5.0,
        fade_per_cycle=1e-4,
        r0_ohm=0.1,
        r_growth_per_cycle=0.0,
        r1_ohm=0.0,
        tau1_s=30.0,
        rth_k_per_w=10.0,
        tau_th_s=900.0,
        charger_loss=0.05,
        sd_base_pct_h=0.02,
        contact_ohm=0.03,
    )
    cab = physics.CabinetSetting(ambient_c=25.0, ambient_swing_c=1.0, charge_a=2.0, sample_s=20.0, sessions=8)
    f = extract_features(physics.simulate_window(pack, 200.0, cab, rng))
    assert f["r_int_ohm"] == pytest.approx(0.1, rel=0.15)
    worse = dataclasses.replace(pack, r0_ohm=0.2)
    assert extract_features(physics.simulate_window(worse, 200.0, cab, rng))["r_int_ohm"] == pytest.approx(
        0.2, rel=0.15
    )
