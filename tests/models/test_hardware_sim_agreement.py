"""Cross-check against the other physics model in the project (hardware_sim's battery).

The model is trained only on models/training's simulator; the demo runs hardware_sim's. These
tests drive hardware_sim's ``Battery`` through slot sessions and rentals, record telemetry the
way the cabinet does, and check the shipped model agrees: a soft short is taken out before it
reaches 3 %/h, and healthy packs stay well below the cabinet's quarantine risk.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

battery = pytest.importorskip("hardware_sim.battery")

from models.predictor import FaultPredictor  # noqa: E402
from models.telemetry import BatteryTelemetry  # noqa: E402

QUARANTINE_RISK = 0.7  # the cabinet's default (cabinet/health.py)
CRITERION_LEAK_A = 0.03 * battery.RATED_CAPACITY_AH  # 3 % of rated capacity per hour


class Recorder:
    """Runs one pack through slot sessions and rentals, sampling it as a slot board would."""

    def __init__(self, pack, seed: int, sample_s: float = 30.0, step_s: float = 10.0):
        self.pack, self.rng = pack, random.Random(seed)
        self.sample_s, self.step_s = sample_s, step_s
        self.rows: list[tuple[float, ...]] = []
        self.t = 0.0

    def session(self, hours: float, ambient_c: float = 25.0) -> None:
        end, next_sample = self.t + hours * 3600.0, self.t
        while self.t < end:
            self.pack.step(self.step_s, ambient_c, charge_limit_a=2.0)
            self.t += self.step_s
            if self.t >= next_sample:
                p = self.pack
                self.rows.append(
                    (
                        self.t,
                        p.terminal_v,
                        p.current_a,
                        p.temp_c,
                        round(p.gauge_soc * 100),
                        math.floor(p.cycles),
                    )
                )
                next_sample += self.sample_s

    def rental(self, hours: float) -> None:
        for _ in range(int(hours * 60)):
            self.pack.step(60.0, 25.0, load_a=1.0)
        self.t += hours * 3600.0

    def window(self, sessions_kept: int = 10) -> BatteryTelemetry:
        a = np.array(self.rows, dtype=float)
        starts = np.flatnonzero(np.diff(a[:, 0], prepend=-1e9) > 600.0)
        a = a[starts[-sessions_kept] if len(starts) >= sessions_kept else 0 :]
        a[:, 0] -= a[0, 0]
        return BatteryTelemetry(self.pack.sn, *(a[:, j].copy() for j in range(6)))


@pytest.fixture(scope="module")
def predictor() -> FaultPredictor:
    return FaultPredictor()


def test_growing_soft_short_is_quarantined_before_it_reaches_3_percent_per_hour(predictor: FaultPredictor):
    rng = random.Random(4)
    pack = battery.Battery.random(rng)
    rec = Recorder(pack, seed=4)
    for _ in range(6):  # a normal life first
        rec.session(rng.uniform(3.0, 6.0))
        rec.rental(rng.uniform(1.0, 3.0))
    pack.leak_a, pack.leak_growth_a_per_h = 0.02, 0.005  # hardware_sim's internal_short fault
    quarantined_at_leak = None
    while pack.leak_a < CRITERION_LEAK_A:
        rec.session(4.0)
        (pred,) = predictor.predict([rec.window()])
        if pred.risk >= QUARANTINE_RISK:
            quarantined_at_leak = pack.leak_a
            break
        rec.rental(2.0)
    assert quarantined_at_leak is not None, f"not quarantined before the leak reached {CRITERION_LEAK_A} A"
    assert quarantined_at_leak < CRITERION_LEAK_A


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_healthy_simulator_packs_stay_below_the_quarantine_risk(predictor: FaultPredictor, seed: int):
    rng = random.Random(seed)
    pack = battery.Battery.random(rng)
    rec = Recorder(pack, seed=seed)
    for _ in range(10):
        rec.session(rng.uniform(2.0, 8.0))
        rec.rental(rng.uniform(1.0, 4.0))
    (pred,) = predictor.predict([rec.window()])
    assert pred.risk < QUARANTINE_RISK / 2
