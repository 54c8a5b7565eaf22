"""``cabinet status`` from the API, and a cabinet whose ledger is unusable still shows it loudly."""

from __future__ import annotations

import asyncio
import sys

from cabinet.service import Cabinet
from hardware_sim.cabinet import SimConfig
from hardware_sim.server import SimServer
from tests.conftest import free_port
from tests.rigs import make_config
from tests.web.conftest import Web


async def _status(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cabinet.cli",
        "status",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode, out.decode(), err.decode()


async def test_status_prints_the_slot_table_and_health(web: Web) -> None:
    code, out, err = await _status("--url", web.url)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("Cabinet CAB-T1")
    row1 = next(line for line in lines if line.split()[:1] == ["1"])
    assert "PB000001" in row1
    row4 = next(line for line in lines if line.split()[:1] == ["4"])
    assert row4.split()[1] == "empty"
    assert any(line.startswith("bus: 2/2 boards online") for line in lines)
    assert "sync: disabled" in out


async def test_status_says_when_the_api_cannot_be_reached() -> None:
    code, _, err = await _status("--url", f"http://127.0.0.1:{free_port()}")
    assert code == 2 and "cannot read the cabinet's API" in err


async def test_unusable_ledger_is_shown_and_renting_refused(tmp_path, monkeypatch) -> None:
    (tmp_path / "ledger.db").write_bytes(b"this is not a database at all" * 100)
    port = free_port()
    async with SimServer(SimConfig(slots=8, slots_per_board=4, seed=1, fill=0.0), speed=1.0) as sim:
        monkeypatch.setenv("CABINET_SIM_GPIO", sim.gpio_address)
        cab = Cabinet(
            make_config(tmp_path, sim.pty_path, 8, web={"enabled": True, "host": "127.0.0.1", "port": port})
        )
        await cab.start()
        try:
            deadline = asyncio.get_running_loop().time() + 10
            while cab.web.bound_port is None:
                assert asyncio.get_running_loop().time() < deadline, "web UI did not start"
                await asyncio.sleep(0.02)
            web = Web(rig=None, url=f"http://127.0.0.1:{port}")  # type: ignore[arg-type]
            async with web.client() as s:
                health = await (await s.get("/api/health")).json()
                scan = await (await s.post("/api/scan", json={"code": "anything"})).json()
                login_page = await (await s.get("/tech/login")).text()
            assert health["renting"] is False and "not an SQLite database" in health["ledger_problem"]
            assert (scan["status"], scan["reason"]) == ("refused", "ledger_unusable")
            assert "LEDGER UNUSABLE" in login_page
            code, out, _ = await _status("--url", web.url)
            assert code == 1 and "LEDGER UNUSABLE" in out
        finally:
            await cab.stop()
