"""A soft internal short in the simulator: the cabinet quarantines that battery before its fault
criterion (3 %/h self-discharge, i.e. a 150 mA leak) is reached, and leaves the healthy one alone.

The simulator runs 600x faster than real time; the cabinet times telemetry by the slot boards'
uptime (hardware time), so the model sees the batteries' own pace.
"""

from __future__ import annotations

import pytest

from hardware_sim.faults import Fault

pytestmark = pytest.mark.slow

CRITERION_LEAK_A = 0.150  # 3 % of 5 Ah per hour


async def test_soft_short_is_quarantined_before_its_criterion_and_a_healthy_pack_is_not(make_rig) -> None:
    rig = await make_rig(
        health={"interval_s": 2.0}, speed=600.0, batteries=((1, "PB000001", 0.6), (2, "PB000002", 0.6))
    )
    rig.simcab.inject(
        Fault("internal_short", battery="PB000001", params={"leak_ma": 90.0, "growth_ma_per_h": 10.0})
    )
    battery = rig.simcab.find_battery("PB000001")[0]

    async def quarantined() -> bool:
        return (await rig.ledger.battery("PB000001")).quarantined

    await rig.until(quarantined, timeout=90, what="the shorted battery to be quarantined")
    assert battery.leak_a < CRITERION_LEAK_A, f"quarantined only at {battery.leak_a * 1000:.0f} mA"
    (event,) = [e for e in await rig.events("battery_quarantined") if e.body["sn"] == "PB000001"]
    assert event.body["risk"] >= 0.7 and "fault risk" in event.body["reason"]
    assert not (await rig.ledger.battery("PB000002")).quarantined
    assert rig.cab.health.risks["PB000002"].risk < 0.3
    await rig.until(
        lambda: not rig.simcab.slot(1).charge_enabled, what="charging of the quarantined pack to stop"
    )
