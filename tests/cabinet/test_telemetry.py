"""Telemetry store and hardware time: the model's clock never jumps with the wall clock."""

from __future__ import annotations

from pathlib import Path

from cabinet.observations import Observation
from cabinet.telemetry import HardwareClock, TelemetryStore


class FakeMonotonic:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_hardware_clock_follows_board_uptime_and_bridges_a_board_restart() -> None:
    mono = FakeMonotonic()
    clock = HardwareClock(mono)
    assert clock.update([(1, 1000), (2, 990)]) == 0.0
    mono.t += 1
    assert clock.update([(1, 1030), (2, 1020)]) == 30.0  # a simulator 30x faster than real time
    mono.t += 2
    assert clock.update([(1, 5), (2, 1080)]) == 32.0  # board 1 restarted: bridged by 2 s of real time
    mono.t += 1
    assert clock.update([(1, 10), (2, 1090)]) == 37.0
    mono.t += 4
    assert (
        clock.update([(1, None), (2, 1200)]) == 41.0
    )  # board 1 silent: board 2 takes over, real time bridges
    mono.t += 1
    assert clock.update([(1, None), (2, 1210)]) == 51.0
    mono.t += 3
    assert clock.update([]) == 54.0  # no board at all: real time


def test_window_keeps_sampling_order_when_the_wall_clock_jumps_back(tmp_path: Path) -> None:
    store = TelemetryStore(tmp_path / "t.db", interval_s=30)
    ob = Observation(slot=1, known=True, present=True, seated=True, sn="PB000001", soc=50, voltage_v=3.9)
    stored = [
        store.add([ob], now=2_000_000_000.0, t_hw=0.0),
        store.add([ob], now=2_000_000_001.0, t_hw=10.0),  # too soon in hardware time: skipped
        store.add([ob], now=1_000_000_000.0, t_hw=40.0),  # wall clock thrown back 30 years
        store.add([ob], now=1_000_000_030.0, t_hw=80.0),
    ]
    assert stored == [1, 0, 1, 1]
    assert [s.t_hw for s in store.window("PB000001")] == [0.0, 40.0, 80.0]
    store.close()


def test_old_telemetry_file_without_hardware_time_is_upgraded(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "t.db"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE samples (sn TEXT NOT NULL, at_wall REAL NOT NULL, slot INTEGER NOT NULL, voltage_v REAL NOT NULL,"
        " current_a REAL NOT NULL, temp_c REAL NOT NULL, soc INTEGER NOT NULL, cycle INTEGER NOT NULL) STRICT"
    )
    conn.execute("INSERT INTO samples VALUES ('PB000009', 1.0, 2, 3.9, 0.0, 25.0, 50, 7)")
    conn.commit()
    conn.close()
    store = TelemetryStore(path)
    (old,) = store.window("PB000009")
    assert (old.sn, old.t_hw) == ("PB000009", None)
    store.close()
