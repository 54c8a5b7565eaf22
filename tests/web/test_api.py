"""The local JSON API against a running cabinet and the simulator."""

from __future__ import annotations

import asyncio
import json

from tests.web.conftest import Web


async def test_slots_show_ledger_and_bus_state(web: Web) -> None:
    async with web.client() as s:
        r = await s.get("/api/slots")
        assert r.status == 200
        slots = {x["slot"]: x for x in (await r.json())["slots"]}
    assert len(slots) == 8
    assert (slots[1]["sn"], slots[1]["present"]) == ("PB000001", True) and slots[1]["soc"] >= 95
    assert slots[1]["state"] in ("ready", "charging")
    assert slots[3]["state"] in ("low", "charging") and 30 <= slots[3]["soc"] < 80
    assert slots[4]["state"] == "empty" and slots[4]["sn"] is None
    assert [n for n, x in slots.items() if x["rentable"]] == [1, 2, 5]  # slot 3 is below rent.min_soc
    if getattr(web.rig.cab.health, "risks", None) is None:
        assert slots[1]["risk"] is None  # no fault model part: "no prediction yet"


async def test_batteries_rentals_and_health(web: Web) -> None:
    async with web.client() as s:
        batteries = (await (await s.get("/api/batteries")).json())["batteries"]
        rentals = (await (await s.get("/api/rentals")).json())["rentals"]
        health = await (await s.get("/api/health")).json()
        one = await s.get("/api/batteries/PB000005")
        missing = await s.get("/api/batteries/NOPE")
    assert sorted(b["sn"] for b in batteries) == ["PB000001", "PB000002", "PB000003", "PB000005"]
    assert rentals == []
    assert (await one.json())["slot"] == 5 and missing.status == 404
    assert health["cabinet"] == "CAB-T1" and health["renting"] is True and health["ledger_problem"] is None
    assert health["bus"]["boards_online"] == 2 and len(health["bus"]["boards"]) == 2
    assert health["sync"] == {"enabled": False, "connected": False}
    assert health["disk"]["free_bytes"] > 0 and health["uptime_s"] >= 0
    assert health["versions"]["software"]
    assert health["model_version"] == getattr(web.rig.cab.health, "model_version", None)


async def test_scan_with_a_good_pass_hands_out_a_battery(web: Web, cloud_keys) -> None:
    rig = web.rig
    async with web.client() as s:
        post = asyncio.create_task(s.post("/api/scan", json={"code": cloud_keys.offline_pass("P-API-1")}))
        await rig.until(lambda: rig.simcab.slot(1).presented, what="slot 1 to present its battery")
        rig.simcab.take(1)
        r = await asyncio.wait_for(post, 10)
        out = await r.json()
        rentals = (await (await s.get("/api/rentals?open=1")).json())["rentals"]
    assert (out["status"], out["slot"], out["sn"], out["reason"]) == ("started", 1, "PB000001", "")
    assert [(x["rental_id"], x["state"]) for x in rentals] == [(out["rental_id"], "open")]


async def test_scan_refuses_garbage_in_plain_words(web: Web) -> None:
    async with web.client() as s:
        out = await (await s.post("/api/scan", json={"code": "not a pass"})).json()
        bad = await s.post(
            "/api/scan", data="code=x", headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
    assert out["status"] == "refused" and out["reason"] == "pass_unreadable"
    assert "could not be read" in out["message"]
    assert bad.status == 400


async def test_stream_sends_state_then_domain_events(web: Web, cloud_keys) -> None:
    rig = web.rig
    async with web.client() as s:
        r = await s.get("/api/events/stream")
        assert r.headers["Content-Type"].startswith("text/event-stream")
        seen: list[tuple[str, dict]] = []

        async def read_until(*kinds: str, within: float = 10.0) -> dict:
            event = None
            deadline = asyncio.get_running_loop().time() + within
            while True:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    raise AssertionError(f"no {kinds} event within {within} s; got {[k for k, _ in seen]}")
                try:
                    raw = await asyncio.wait_for(r.content.readline(), left)
                except TimeoutError:
                    raise AssertionError(
                        f"no {kinds} event within {within} s; got {[k for k, _ in seen]}; "
                        f"ledger: {[e.type for e in await rig.events()][-5:]}; slot 4 seen as "
                        f"{rig.controller.observed.get(4)}"
                    ) from None
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event:
                    seen.append((event, json.loads(line[6:])))
                    if event in kinds:
                        return seen[-1][1]

        slots = await read_until("slots")
        assert len(slots["slots"]) == 8
        await read_until("health")
        rig.simcab.insert(4, sn="PB0000A4", soc=0.9)
        # a pack the cabinet has never seen: recorded as seen or as a return, live either way
        returned = await read_until("battery_seen", "battery_returned")
        assert returned["slot"] == 4 and returned["sn"] == "PB0000A4"


async def test_read_api_refuses_other_hosts_without_a_session(web: Web) -> None:
    from aiohttp.test_utils import make_mocked_request

    from cabinet.web.api import get_slots

    req = make_mocked_request("GET", "/api/slots", app=web.ui.app)
    req._transport_peername = ("192.168.1.50", 40000)  # a laptop on the cabinet's LAN
    try:
        await get_slots(req)
    except Exception as e:  # aiohttp raises the HTTP error as an exception
        assert getattr(e, "status", None) == 401
    else:
        raise AssertionError("a LAN client without a session could read the API")
