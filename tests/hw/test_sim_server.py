"""SimServer and cabinet-sim: the control API, the CLI, and drivers against a running simulator."""

from __future__ import annotations

import asyncio
import json
import sys

import aiohttp
import pytest
from hw_fixtures import eventually

from drivers.battery_bus import BatteryBus
from drivers.locks import LockBank, OpenOutcome
from hardware_sim.cabinet import SimConfig
from hardware_sim.cli import main
from hardware_sim.pins import SimLinkFactory, lock_pin, seat_pin
from hardware_sim.server import SimServer


async def test_control_api_take_insert_inject_clear_over_http(tmp_path) -> None:
    config = SimConfig(slots=8, slots_per_board=4, seed=5, fill=1.0)
    async with (
        SimServer(config, speed=100, pty=tmp_path / "ttySIM", tcp_port=0) as sim,
        aiohttp.ClientSession() as http,
    ):
        assert sim.pty_path == str(tmp_path / "ttySIM")

        async def post(path: str, body: dict) -> tuple[int, dict]:
            async with http.post(sim.control_url + path, json=body) as r:
                return r.status, await r.json()

        status, err = await post("/take", {"slot": 2})
        assert status == 400 and "latched in" in err["error"]
        status, body = await post("/inject", {"kind": "lock_jam", "slot": 3})
        assert status == 200 and body["id"] == 1
        status, err = await post("/inject", {"kind": "lock_jam", "slot": 30})
        assert status == 400 and "'slot'" in err["error"]
        assert (await post("/clear", {"id": 1}))[0] == 200
        sim.cabinet.set_lock(2, True)
        sim.cabinet.set_lock(2, False)
        status, body = await post("/take", {"slot": 2})
        assert status == 200 and body["sn"].startswith("PB")
        status, body2 = await post("/insert", {"slot": 2, "sn": body["sn"], "soc": 0.2})
        assert status == 200 and body2["sn"] == body["sn"]
        async with http.get(sim.control_url + "/state") as r:
            state = await r.json()
        assert state["slots"][1]["battery"]["sn"] == body["sn"]
        t0 = state["time_s"]
        assert (await post("/advance", {"seconds": 600}))[1]["time_s"] >= t0 + 600
        # the clock runs on its own at the speed-up factor
        await eventually(lambda: sim.cabinet.time > t0 + 620, within=3)


async def test_cabinet_process_drives_running_simulator_over_pty_and_gpio_link() -> None:
    config = SimConfig(slots=16, slots_per_board=8, seed=9, fill=1.0, reseat_after_s=5)
    async with SimServer(config, speed=50, pty=True) as sim:
        factory = await asyncio.to_thread(SimLinkFactory, sim.gpio_address)
        bank = LockBank(
            [lock_pin(k) for k in range(1, 17)],
            [seat_pin(k) for k in range(1, 17)],
            pin_factory=factory,
            pulse_s=0.05,
        )
        try:
            bank.start()
            async with BatteryBus(sim.pty_path, [(1, 8), (2, 8)], timeout_s=0.2) as bus:
                before = await bus.scan()
                assert all(r.known and r.seated for r in before)
                assert (await bank.open(11, timeout=2)).outcome is OpenOutcome.OPENED
                after = await bus.scan()
                assert after[10].present and not after[10].seated and after[10].sn == ""
                sim.cabinet.take(11)
                assert not (await bus.scan())[10].present
        finally:
            bank.close()
            factory.close()


def test_scenario_check_reports_the_line_of_a_bad_fault(tmp_path, capsys) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(
        '[[fault]]\nat = 5\nkind = "lock_jam"\nslot = 2\n\n[[fault]]\nat = 9\nkind = "internal_short"\nslot = 3\nleak_ma = -4\n'
    )
    assert main(["scenario", "check", str(f)]) == 2
    err = capsys.readouterr().err
    assert "bad.toml line 6 (fault #2)" in err and "'leak_ma'" in err
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"fault": [{"at": 1, "kind": "silent_board", "board": 2, "clear_at": 4}]}))
    assert main(["scenario", "check", str(good), "--boards", "3"]) == 0
    assert "silent_board on board 2" in capsys.readouterr().out


async def test_cli_run_serves_and_client_commands_act_on_it(tmp_path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hardware_sim.cli", "run", "--slots", "8", "--fill", "1", "--control", "0", "--gpio", "0",
        "--pty", str(tmp_path / "tty"), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        info = json.loads(line)
        assert info["slots"] == 8 and info["pty"] == str(tmp_path / "tty")
        code = await asyncio.to_thread(main, ["inject", "lock_jam", "slot=4", "--url", info["control"]])
        assert code == 0
        code = await asyncio.to_thread(main, ["take", "4", "--url", info["control"]])
        assert code == 1  # latched in
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
    assert proc.returncode == 0


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["scenario", "check", "--help"]])
def test_help_explains_subcommands(argv, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    assert "usage: cabinet-sim" in capsys.readouterr().out
