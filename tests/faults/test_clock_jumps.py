"""The cabinet's wall clock jumps back and forward (no RTC after a power cut, then NTP).

Expiry of commands and passes uses the trusted floor (never earlier than the newest issue time
the cabinet has accepted), so a clock thrown back cannot revive an expired eject or pass; ledger
events keep a monotonic CLOCK_BOOTTIME and the boot id whatever the wall clock says; telemetry
stored across the jumps still gives the fault model windows it can run on.
"""

from __future__ import annotations

import time

import pytest

from cabinet.ledger import Ledger, verify
from cabinet.observations import Observation
from cabinet.telemetry import TelemetryStore
from models.telemetry import TelemetryError

DAY = 86400.0


class JumpyClock:
    """A wall clock that follows the real one, plus an offset the test moves."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


async def test_clock_thrown_back_cannot_revive_an_expired_command_or_pass(fault_rig, cloud_keys) -> None:
    from cabinet.commands import CommandHandler

    rig = await fault_rig()
    clock = JumpyClock()
    rig.cab.trust.clock = clock
    handler = CommandHandler(rig.ledger, rig.controller, rig.cab.trust)
    now = time.time()
    assert await handler.handle(cloud_keys.command("ping", nonce="n1")) is not None  # floor = now

    clock.offset = -2 * DAY  # power cut, no RTC: the cabinet wakes up two days in the past
    stale = cloud_keys.command("quarantine_slot", slot=2, reason="old", issued_at=now - 3 * 3600, ttl=3600)
    assert await handler.handle(stale) is None
    refused = (await rig.events("security_event"))[-1]
    assert refused.body["kind"] == "expired" and "expired" in refused.body["detail"]
    assert not (await rig.ledger.slot(2)).quarantined

    out = await rig.cab.passes.submit(cloud_keys.offline_pass("P-old", ttl=3600, age=3 * 3600))
    assert (out.status, out.reason) == ("refused", "pass_expired")

    # a fresh command still works while the clock is wrong (it is newer than the floor)
    assert await handler.handle(cloud_keys.command("ping", nonce="n2")) is not None


async def test_clock_far_ahead_refuses_fresh_commands_clearly_until_it_is_corrected(
    fault_rig, cloud_keys
) -> None:
    from cabinet.commands import CommandHandler

    rig = await fault_rig()
    clock = JumpyClock()
    rig.cab.trust.clock = clock
    handler = CommandHandler(rig.ledger, rig.controller, rig.cab.trust)
    clock.offset = +1 * DAY  # a bad NTP answer
    assert await handler.handle(cloud_keys.command("ping", nonce="ahead")) is None
    assert (await rig.events("security_event"))[-1].body["kind"] == "expired"
    clock.offset = 0.0  # NTP corrects it: the next command is accepted, nothing stuck
    assert await handler.handle(cloud_keys.command("ping", nonce="fixed")) is not None


def test_ledger_events_keep_boot_time_and_boot_id_monotonic_while_the_wall_clock_jumps(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = time.time
    offset = [0.0]
    monkeypatch.setattr(time, "time", lambda: real() + offset[0])
    path = tmp_path / "ledger.db"
    with Ledger.open(path, "CAB-T1") as lg:
        for i, jump in enumerate([0, -2 * DAY, +5 * DAY, -DAY, 0, -30 * DAY]):
            offset[0] = jump
            lg.record("security_event", kind="clock_probe", detail=f"wall offset {jump}")
            lg.record("battery_seen", slot=i + 1, sn=f"PB00000{i + 1}")
        events = lg.events_after(0, limit=1000)
    walls = [e.at_wall for e in events]
    monos = [e.at_mono for e in events]
    assert monos == sorted(monos), "at_mono went backwards"
    assert len({e.boot_id for e in events}) == 1
    assert walls != sorted(walls)  # the wall clock really did jump back in this run
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert verify(path).ok


async def test_telemetry_across_clock_jumps_gives_windows_the_fault_model_runs_on(fault_rig) -> None:
    rig = await fault_rig()
    store: TelemetryStore = rig.cab.telemetry
    t = time.time()
    # the wall clock as the store sees it: normal, back two days, forward again, tiny steps
    for i, jump in enumerate([0, 60, 120, -2 * DAY, -2 * DAY + 60, 180, 240, 240.0001, 5 * DAY]):
        obs = [
            Observation(
                slot=s,
                known=True,
                present=True,
                seated=True,
                sn=f"PB00000{s}",
                soc=90 - i,
                voltage_v=4.0 + 0.01 * i,
                current_a=1.0,
                temp_c=25.0 + i,
                cycles=3,
                faults=0,
                charging=True,
            )
            for s in (1, 2, 5)
        ]
        store.add(obs, now=t + jump)
    windows = rig.cab.health.windows(["PB000001", "PB000002", "PB000005"])
    assert {w.battery_sn for w in windows} == {"PB000001", "PB000002", "PB000005"}
    for w in windows:
        assert list(w.t_s) == sorted(w.t_s)
    predictions = await rig.cab.health.run_once()
    assert {p.battery_sn for p in predictions} >= {"PB000001", "PB000002", "PB000005"}
    assert all(0.0 <= p.risk <= 1.0 for p in predictions)
    with pytest.raises(TelemetryError):  # what windows() guards against, should the store ever disorder
        from models.telemetry import BatteryTelemetry, TelemetrySample

        BatteryTelemetry.from_samples("PB000001", [TelemetrySample(10, 4, 1, 25, 50, 3),
                                                   TelemetrySample(5, 4, 1, 25, 50, 3)])  # fmt: skip
