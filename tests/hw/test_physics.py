"""Battery physics and fault effects: the signals a fault predictor relies on must be there."""

from __future__ import annotations

import itertools
import random

import pytest
from hw_fixtures import make_cabinet

from drivers import register_map as rm
from hardware_sim.battery import CV_VOLTAGE, Battery, ocv
from hardware_sim.cabinet import SimActionError, SimCabinet, SimConfig
from hardware_sim.faults import ScenarioError, parse_fault, parse_scenario


def fresh(soc: float = 0.2, **kw) -> Battery:
    b = Battery(sn="PBTEST01", soc=soc, **kw)
    b.capacity_ah = b.healthy_capacity()
    return b


def charge(
    b: Battery, seconds: float, limit_a: float = 2.0, dt: float = 10.0, ambient: float = 25.0
) -> list[tuple[float, float, float]]:
    """Charge and return (current, terminal voltage, temperature) per step."""
    trace = []
    for _ in range(int(seconds / dt)):
        b.step(dt, ambient, charge_limit_a=limit_a)
        trace.append((b.current_a, b.terminal_v, b.temp_c))
    return trace


def test_ocv_curve_spans_the_cell_window_and_rises() -> None:
    assert ocv(0) == pytest.approx(3.0) and ocv(1) == pytest.approx(4.2)
    points = [ocv(s / 100) for s in range(101)]
    assert all(b > a for a, b in itertools.pairwise(points))


def test_cc_then_cv_then_full() -> None:
    b = fresh(0.1)
    trace = charge(b, 4 * 3600)
    currents = [i for i, _, _ in trace]
    assert currents[0] == pytest.approx(2.0)  # constant current at the limit
    cv = [k for k, (i, v, _) in enumerate(trace) if v >= CV_VOLTAGE - 1e-6]
    assert cv, "never reached CV"
    taper = currents[cv[0] : cv[0] + 200]
    assert all(b2 <= a2 + 1e-9 for a2, b2 in itertools.pairwise(taper))  # the CV taper falls
    assert b.full and b.current_a == 0 and b.soc > 0.95
    assert max(v for _, v, _ in trace) <= CV_VOLTAGE + 0.005  # a real charger regulates within ~0.5 %


def test_charging_heats_the_pack_and_rest_cools_it() -> None:
    b = fresh(0.2)
    charge(b, 1800, limit_a=2.0)
    hot = b.temp_c
    assert hot > 30
    slow = fresh(0.2)
    charge(slow, 1800, limit_a=0.5)
    assert 25 < slow.temp_c < hot  # heat grows with current
    for _ in range(360):
        b.step(10, 25.0)
    assert b.temp_c < 26


def test_resistance_grows_with_age_and_cycles_and_ageing_fault_speeds_it() -> None:
    young = fresh(age_days=10)
    old = fresh(age_days=600, charged_ah=800 * 5.0)
    assert old.resistance() > 1.5 * young.resistance()
    assert old.healthy_capacity() < young.healthy_capacity()
    aged = fresh(age_days=600, charged_ah=800 * 5.0, ageing_factor=20)
    assert aged.resistance() > old.resistance()


def test_voltage_step_when_current_changes_reveals_resistance() -> None:
    def step_size(b: Battery) -> float:
        b.step(1, 25, charge_limit_a=0.0)
        v0 = b.terminal_v
        b.step(1, 25, charge_limit_a=2.0)
        return b.terminal_v - v0

    assert step_size(fresh(0.3, age_days=700, charged_ah=4000)) > step_size(fresh(0.3)) * 1.5


def test_self_discharge_is_slow_and_a_soft_short_is_fast_and_hot() -> None:
    healthy, shorted = fresh(0.8), fresh(0.8)
    shorted.leak_a, shorted.leak_growth_a_per_h = 0.05, 0.05
    for _ in range(24 * 6):  # one day at rest, 10-minute steps
        healthy.step(600, 25.0)
        shorted.step(600, 25.0)
    assert 0.8 - healthy.soc == pytest.approx(0.001, abs=0.0008)  # ~3 %/month
    assert shorted.soc < 0.8 - 0.2
    assert shorted.temp_c > healthy.temp_c + 2


def test_cycle_counter_follows_charge_throughput() -> None:
    b = fresh(0.0)
    c0 = b.cycles
    charge(b, 6 * 3600)
    assert b.cycles - c0 == pytest.approx(b.soc * b.capacity_ah / 5.0 / 0.99, rel=0.05)


def test_same_seed_same_cabinet() -> None:
    a, b = SimCabinet(SimConfig(seed=42)), SimCabinet(SimConfig(seed=42))
    a.step(300)
    b.step(300)
    assert a.snapshot() == b.snapshot()
    assert SimCabinet(SimConfig(seed=43)).snapshot() != SimCabinet(SimConfig(seed=42)).snapshot()


def test_fuel_gauge_has_its_own_error() -> None:
    packs = [Battery.random(random.Random(i)) for i in range(20)]
    assert any(abs(p.gauge_soc - p.soc) > 0.005 for p in packs)
    assert all(abs(p.gauge_soc - p.soc) <= 0.03 + 1e-9 for p in packs)


def test_charge_failure_latches_charge_fail_bit() -> None:
    cab = make_cabinet(fill=1.0)
    s = cab.slot(1)
    s.battery.soc = 0.3
    s.charge_enabled = True
    cab.inject(parse_fault({"kind": "charge_failure", "slot": 1}))
    cab.step(60)
    assert s.faults & rm.SlotFault.CHARGE_FAIL
    block = cab.input_registers(1)[rm.slot_offset(0) : rm.slot_offset(1)]
    assert block[10] & rm.SlotFault.CHARGE_FAIL and block[7] == 0


def test_contact_resistance_shows_as_voltage_at_the_slot_and_latches() -> None:
    cab = make_cabinet(fill=1.0)
    s = cab.slot(2)
    s.battery.soc = 0.3
    s.charge_enabled = True
    cab.step(10)
    v_clean = cab.input_registers(1)[rm.slot_offset(1) + 6]
    cab.inject(parse_fault({"kind": "contact_resistance", "slot": 2, "ohm": 0.4}))
    cab.step(10)
    v_dirty = cab.input_registers(1)[rm.slot_offset(1) + 6]
    assert v_dirty - v_clean > 300  # mV: the slot sees the drop across the bad contact
    assert s.faults & rm.SlotFault.CONTACT


def test_cell_failure_cuts_capacity_and_charge_ends_early() -> None:
    cab = make_cabinet(fill=1.0)
    b = cab.slot(3).battery
    before = b.capacity_ah
    cab.inject(parse_fault({"kind": "cell_failure", "battery": b.sn, "capacity_left": 0.5}))
    assert b.capacity_ah == pytest.approx(before * 0.5)


def test_over_temperature_latches_and_stops_charging_until_cleared() -> None:
    cab = SimCabinet(SimConfig(slots=8, slots_per_board=8, fill=1.0, ambient_c=58.0))
    s = cab.slot(1)
    s.battery.soc = 0.2
    s.charge_enabled = True
    cab.step(1800)
    assert s.faults & rm.SlotFault.OVER_TEMP
    assert s.battery.current_a == 0
    cab.write_holding(1, rm.HOLDING_FAULT_CLEAR, [rm.FAULT_CLEAR_MAGIC])
    assert not s.faults


def test_scenario_injects_and_clears_on_sim_time() -> None:
    cab = make_cabinet(slots=8, per_board=4, fill=1.0)
    text = '[[fault]]\nat = 10\nclear_at = 20\nkind = "silent_board"\nboard = 2\n\n[[fault]]\nat = 15\nkind = "lock_jam"\nslot = 1\n'
    cab.load_scenario(parse_scenario(text, "s.toml", slots=8, boards=2))
    cab.step(9)
    assert not cab.board(2).silent
    cab.step(2)
    assert cab.board(2).silent
    cab.step(5)
    assert cab.slot(1).jammed
    cab.step(5)
    assert not cab.board(2).silent and cab.slot(1).jammed


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"kind": "nope", "slot": 1}, "unknown fault kind 'nope'"),
        ({"kind": "lock_jam"}, "needs exactly one of 'slot'"),
        ({"kind": "lock_jam", "board": 1}, "needs exactly one of 'slot'"),
        ({"kind": "slow_replies", "board": 1, "delay_s": "x"}, "'delay_s' must be a number"),
        ({"kind": "garbled_replies", "board": 1, "probability": 2}, "'probability': 2 is outside 0..1"),
        ({"kind": "lock_jam", "slot": 1, "colour": "red"}, "key 'colour' is not used"),
    ],
)
def test_fault_validation_names_the_key(raw, message) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_fault(raw, "api")


def test_battery_fault_on_an_empty_slot_is_refused() -> None:
    cab = make_cabinet(fill=0.0)
    with pytest.raises(SimActionError, match="slot 1 is empty"):
        cab.inject(parse_fault({"kind": "internal_short", "slot": 1}))


def test_bad_json_scenario_reports_the_line() -> None:
    with pytest.raises(ScenarioError, match="line 2"):
        parse_scenario('{"fault": [\n  {"at": 1,, }]}', "s.json", fmt="json")
