"""Health: the shipped fault model runs over the cabinet's stored telemetry and quarantines risky packs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cabinet.health import Health
from cabinet.ledger import AsyncLedger
from cabinet.observations import Observation
from cabinet.telemetry import TelemetryStore
from models.training import datagen, physics


def simulated(kind: str, sn: str, seed: int):
    """A telemetry window from the training physics: ``kind`` 0 cycles before its fault shows."""
    rng = np.random.default_rng(seed)
    pack = datagen.random_pack(rng, kind, 600.0, 0.0, sn=sn)
    setting = physics.CabinetSetting(
        ambient_c=25.0, ambient_swing_c=2.0, charge_a=1.5, sample_s=30.0, sessions=10
    )
    return physics.simulate_window(pack, 600.0, setting, rng)


def store_window(store: TelemetryStore, slot: int, w, start: float = 1.7e9) -> None:
    for k in range(len(w)):
        ob = Observation(
            slot=slot,
            known=True,
            present=True,
            seated=True,
            sn=w.battery_sn,
            soc=int(w.soc_pct[k]),
            voltage_v=float(w.voltage_v[k]),
            current_a=float(w.current_a[k]),
            temp_c=float(w.temp_c[k]),
            cycles=int(w.cycle[k]),
        )
        store.add([ob], now=start + float(w.t_s[k]))


async def test_risky_battery_is_quarantined_and_a_healthy_old_one_is_not(tmp_path: Path) -> None:
    ledger = await AsyncLedger.open(tmp_path / "ledger.db", "CAB-H")
    store = TelemetryStore(tmp_path / "telemetry.db", interval_s=0)
    try:
        short = simulated("short", "PB0000A1", seed=21)
        old = simulated("healthy_old", "PB0000B2", seed=22)
        for slot, w in ((1, short), (2, old)):
            await ledger.record("battery_seen", slot=slot, sn=w.battery_sn)
            store_window(store, slot, w)
        health = Health(ledger, store, None, risk_quarantine=0.7, interval_s=3600)
        await health.start()
        assert health.problem is None, health.problem
        predictions = {p.battery_sn: p for p in await health.run_once()}
        await health.stop()
        assert predictions["PB0000A1"].risk >= 0.7 > predictions["PB0000B2"].risk
        assert (await ledger.battery("PB0000A1")).quarantined
        assert not (await ledger.battery("PB0000B2")).quarantined
        events = await ledger.events_after(0, limit=1000, max_bytes=1 << 30)
        q = [e for e in events if e.type == "battery_quarantined"]
        assert [e.body["sn"] for e in q] == ["PB0000A1"] and "fault risk" in q[0].body["reason"]
        assert health.risks["PB0000A1"].risk == predictions["PB0000A1"].risk
    finally:
        store.close()
        await ledger.close()


async def test_missing_model_leaves_the_cabinet_renting_and_says_why(tmp_path: Path) -> None:
    ledger = await AsyncLedger.open(tmp_path / "ledger.db", "CAB-H")
    store = TelemetryStore(tmp_path / "telemetry.db")
    try:
        health = Health(ledger, store, str(tmp_path / "nope.onnx"))
        await health.start()
        assert health.problem and "nope.onnx" in health.problem
        assert await health.run_once() == []
    finally:
        store.close()
        await ledger.close()


async def test_a_few_samples_never_quarantine_a_battery(tmp_path: Path) -> None:
    ledger = await AsyncLedger.open(tmp_path / "ledger.db", "CAB-H")
    store = TelemetryStore(tmp_path / "telemetry.db", interval_s=0)
    try:
        await ledger.record("battery_seen", slot=1, sn="PB0000C3")
        for k in range(3):  # three samples at rest: nothing to judge a battery by
            store.add(
                [
                    Observation(
                        slot=1,
                        known=True,
                        present=True,
                        seated=True,
                        sn="PB0000C3",
                        soc=60,
                        voltage_v=3.9,
                        current_a=0.0,
                        temp_c=25.0,
                        cycles=100,
                    )
                ],
                now=1.7e9 + 30 * k,
            )
        health = Health(ledger, store, None)
        await health.start()
        (p,) = await health.run_once()
        await health.stop()
        assert "insufficient_data" in p.flags
        assert not (await ledger.battery("PB0000C3")).quarantined
    finally:
        store.close()
        await ledger.close()


async def test_a_risk_whose_strongest_reason_was_not_measured_does_not_quarantine(tmp_path: Path) -> None:
    from models.predictor import FeatureContribution, Prediction

    ledger = await AsyncLedger.open(tmp_path / "ledger.db", "CAB-H")
    store = TelemetryStore(tmp_path / "telemetry.db", interval_s=0)
    try:
        await ledger.record("battery_seen", slot=1, sn="PB0000D4")
        await ledger.record("battery_seen", slot=2, sn="PB0000E5")
        for sn, slot in (("PB0000D4", 1), ("PB0000E5", 2)):  # long enough windows: 3 h at rest
            for k in range(40):
                store.add(
                    [
                        Observation(
                            slot=slot,
                            known=True,
                            present=True,
                            seated=True,
                            sn=sn,
                            soc=95,
                            voltage_v=4.1,
                            temp_c=25.0,
                            cycles=10,
                        )
                    ],
                    now=1.7e9 + 300 * k,
                    t_hw=300.0 * k,
                )
        nan = float("nan")

        class Stub:  # a model that is sure of itself for the wrong reasons, and one right one
            model_id = "stub"

            def predict(self, windows):
                return [
                    Prediction(
                        "PB0000D4",
                        0.98,
                        (),
                        (
                            FeatureContribution("capacity_ah", nan, 0.5),
                            FeatureContribution("cv_tau_h", 0.5, 0.2),
                        ),
                    ),
                    Prediction("PB0000E5", 0.98, (), (FeatureContribution("temp_rise_per_a", 9.0, 0.5),)),
                ]

        health = Health(ledger, store, None)
        health.predictor = Stub()
        await health.run_once()
        assert not (await ledger.battery("PB0000D4")).quarantined
        assert (await ledger.battery("PB0000E5")).quarantined
    finally:
        store.close()
        await ledger.close()
