"""Fixtures for the fault-prediction tests: hand-made windows and a tiny trained model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from models.telemetry import BatteryTelemetry

OCV_SLOPE_V = 0.6  # a linear stand-in for the OCV curve: 3.6 V empty .. 4.2 V full


def _ocv(soc_pct: np.ndarray) -> np.ndarray:
    return 3.6 + OCV_SLOPE_V * soc_pct / 100.0


def make_window(
    sn: str = "KNOWN01",
    *,
    r_ohm: float = 0.12,
    capacity_ah: float = 5.0,
    charge_a: float = 1.5,
    sessions: int = 3,
    dt_s: float = 30.0,
    self_discharge_pct_h: float = 0.0,
    rest_h: float = 4.0,
    rest_temp_c: float = 25.0,
    rise_per_a: float = 4.0,
) -> BatteryTelemetry:
    """A clean window with known physics: ohmic steps of ``r_ohm``, a known capacity, a leak at rest.

    Each session: 10 min idle at 20 % SoC, CC charge to 100 %, then a rest at full losing
    ``self_discharge_pct_h``; sessions are 6 h apart (rented in between).
    """
    t, v, i, temp, soc, cyc = [], [], [], [], [], []
    t0 = 0.0
    for k in range(sessions):
        s = 20.0
        clock = t0
        for _ in range(20):  # idle
            (
                t.append(clock),
                v.append(_ocv(s)),
                i.append(0.0),
                temp.append(rest_temp_c),
                soc.append(s),
                cyc.append(100 + k),
            )
            clock += dt_s
        heat = 0.0
        while s < 100.0:  # constant current to full (the gauge knows the real capacity)
            s = min(100.0, s + 100.0 * charge_a * dt_s / 3600.0 / capacity_ah)
            heat = min(rise_per_a * charge_a, heat + 0.1)
            t.append(clock), v.append(_ocv(s) + charge_a * r_ohm), i.append(charge_a)
            temp.append(rest_temp_c + heat), soc.append(round(s)), cyc.append(100 + k)
            clock += dt_s
        level = 100.0
        for _ in range(int(rest_h * 3600 / dt_s)):  # rest at full, leaking
            level -= self_discharge_pct_h * dt_s / 3600.0
            t.append(clock), v.append(_ocv(level)), i.append(0.0), temp.append(rest_temp_c)
            soc.append(round(level)), cyc.append(100 + k)
            clock += dt_s
        t0 = clock + 6 * 3600.0
    arr = [np.asarray(a, dtype=float) for a in (t, v, i, temp, soc, cyc)]
    return BatteryTelemetry(sn, *arr)


@pytest.fixture
def known_window() -> Callable[..., BatteryTelemetry]:
    return make_window


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory):
    """A model trained end to end on a tiny data set (generate, train, export); seconds, not minutes."""
    pytest.importorskip("sklearn")
    pytest.importorskip("skl2onnx")
    from models.training.pipeline import run
    from models.training.train import TrainConfig

    out: Path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    return run(
        out,
        n_train=160,
        n_val=60,
        n_test=100,
        n_traj=1,
        seed=3,
        config=TrainConfig(max_iter=40),
        log=lambda s: None,
    )
