"""The app, the cloud and a real cabinet: rent from the app, offline passes, commands, config, refusals."""

from __future__ import annotations

import asyncio
import time

from cloud.fleet import view
from sync.commands import Command
from sync.signing import Signer, generate_private_key
from tests.e2e.conftest import CABINET, until


async def rental_of(cloud, rental_id: str) -> dict:
    return await asyncio.to_thread(cloud.ctx.rentals.rental, rental_id)


async def test_app_rental_ejects_a_signed_command_and_closes_on_return_in_another_slot(
    broker, make_cloud, make_site
) -> None:
    cloud = await make_cloud(broker)
    site = await make_site(broker)
    _, token = await cloud.renter()
    r = await cloud.client.post("/api/rentals", json={"cabinet_id": CABINET}, headers=cloud.auth(token))
    assert r.status == 201, await r.text()
    started = await r.json()
    rid, cmd_id = started["rental_id"], started["command"]["cmd_id"]
    await until(lambda: site.sim.cabinet.slot(1).presented, what="the cabinet to present the fullest pack")
    assert site.sim.cabinet.take(1) == "PB000001"

    async def status(want: str) -> bool:
        return (await rental_of(cloud, rid))["status"] == want

    await until(lambda: status("active"), what="rental_started to reach the cloud")
    site.sim.cabinet.insert(6, sn="PB000001")
    await until(lambda: status("closed"), what="the return to close the rental")

    async def settled() -> bool:  # a free rental: nothing to capture, the hold is released
        return (await rental_of(cloud, rid))["hold_status"] not in ("held", None, "none")

    await until(settled, what="the hold to be settled")
    rental = await rental_of(cloud, rid)
    assert (rental["battery_sn"], rental["end_cabinet_id"], rental["fee"]) == ("PB000001", CABINET, 0)
    cmd = await (await cloud.client.get(f"/api/fleet/commands/{cmd_id}", headers=cloud.auth())).json()
    assert cmd["status"] == "ok" and "PB000001" in cmd["result"]
    mine = await (await cloud.client.get("/api/me/rentals", headers=cloud.auth(token))).json()
    assert [(x["id"], x["status"]) for x in mine] == [(rid, "closed")]


async def test_eject_not_taken_aborts_the_rental_and_voids_the_hold(broker, make_cloud, make_site) -> None:
    cloud = await make_cloud(broker)
    await make_site(broker, rent={"eject_timeout_s": 1.0})
    _, token = await cloud.renter()
    r = await cloud.client.post("/api/rentals", json={"cabinet_id": CABINET}, headers=cloud.auth(token))
    rid = (await r.json())["rental_id"]

    async def aborted() -> bool:
        mine = await (await cloud.client.get("/api/me/rentals", headers=cloud.auth(token))).json()
        return mine[0]["status"] == "aborted"

    await until(aborted, what="the renter to see the rental aborted")

    async def voided() -> bool:  # the status changes first, then the provider releases the hold
        return (await rental_of(cloud, rid))["hold_status"] == "voided"

    await until(voided, what="the hold to be voided")
    assert "not_taken" in (await rental_of(cloud, rid))["abort_reason"]


async def test_offline_pass_from_the_app_rents_at_the_kiosk(broker, make_cloud, make_site) -> None:
    cloud = await make_cloud(broker)
    site = await make_site(broker)
    _, token = await cloud.renter()
    made = await (await cloud.client.post("/api/me/passes", json={}, headers=cloud.auth(token))).json()
    again = await (
        await cloud.client.get(f"/api/me/passes/{made['pass_id']}", headers=cloud.auth(token))
    ).json()
    assert again["qr_text"] == made["qr_text"] and made["qr_text"].startswith("CP1:")
    task = asyncio.create_task(site.cab.passes.submit(made["qr_text"]))
    await until(lambda: site.sim.cabinet.slot(1).presented, what="the pack to be presented")
    site.sim.cabinet.take(1)
    outcome = await asyncio.wait_for(task, 10)
    assert outcome.status == "started"

    async def active() -> bool:
        mine = await (await cloud.client.get("/api/me/rentals", headers=cloud.auth(token))).json()
        return bool(mine) and mine[0]["status"] == "active" and mine[0]["source"] == "pass"

    await until(active, what="the pass rental to reach the cloud")


async def test_operator_command_is_signed_sent_and_followed_to_its_result(
    broker, make_cloud, make_site
) -> None:
    cloud = await make_cloud(broker)
    await make_site(broker)
    r = await cloud.client.post(
        f"/api/fleet/cabinets/{CABINET}/commands",
        json={"kind": "ping", "args": {"nonce": "n-42"}},
        headers=cloud.auth(),
    )
    assert r.status == 202, await r.text()
    cmd_id = (await r.json())["cmd_id"]

    async def result() -> dict | None:
        c = await (await cloud.client.get(f"/api/fleet/commands/{cmd_id}", headers=cloud.auth())).json()
        return c if c["status"] in ("ok", "failed") else None

    done = await until(result, what="the command result")
    assert (done["status"], done["result"]) == ("ok", "pong n-42")
    bad = await cloud.client.post(
        f"/api/fleet/cabinets/{CABINET}/commands", json={"kind": "unlock", "args": {}}, headers=cloud.auth()
    )
    assert bad.status == 400 and "slot" in (await bad.json())["message"]
    unknown = await cloud.client.post(
        "/api/fleet/cabinets/CAB-NOPE/commands", json={"kind": "ping"}, headers=cloud.auth()
    )
    assert unknown.status == 404


async def test_signed_config_with_settings_takes_effect_on_the_cabinet(broker, make_cloud, make_site) -> None:
    cloud = await make_cloud(broker)
    site = await make_site(broker)
    r = await cloud.client.post(
        f"/api/fleet/cabinets/{CABINET}/config",
        json={"rentable_min_soc": 60, "battery_deny_list": ["PB000003"]},
        headers=cloud.auth(),
    )
    assert r.status == 200, await r.text()
    counter = (await r.json())["published"][0]["counter"]

    def applied() -> bool:
        cfg = site.cab.trust.config
        return cfg is not None and cfg.counter >= counter

    await until(applied, what="the signed config to be applied")
    body = site.cab.trust.config.body
    assert (body.rentable_min_soc, body.battery_deny_list) == (60, ("PB000003",))
    assert body.tariff is not None and body.tariff.unit_price_minor == 250
    assert site.cab.controller.settings.min_soc == 60
    assert "PB000003" in site.cab.trust.denied


async def test_forged_replayed_expired_and_misaddressed_commands_are_refused_and_reported(
    broker, make_cloud, make_site, cloud_keys
) -> None:
    cloud = await make_cloud(broker)
    site = await make_site(broker)
    publish = cloud.ctx.fleet.transport.publish
    cmd_topic = f"cab/v1/{CABINET}/cmd"
    now = time.time()
    await publish(cmd_topic, cloud_keys.command("ping", counter=1000, nonce="first"))
    await until(lambda: site.ledger.command_seen("C1"), what="the valid command")
    impostor = Signer(generate_private_key(), "k1")  # the right key id, the wrong key
    forged = impostor.sign(Command("X-1", CABINET, 1001, now, now + 60, "ping", {}))
    for payload in (
        forged,
        cloud_keys.command("ping", counter=900),  # far below the high-water mark
        cloud_keys.command("ping", counter=1002, issued_at=now - 3600, ttl=60),
        cloud_keys.command("ping", counter=1003, cabinet="CAB-T2"),
    ):
        await publish(cmd_topic, payload)

    async def refusals() -> set[str]:
        evs = await site.ledger.events_after(0, limit=100_000, max_bytes=1 << 30)
        return {e.body["kind"] for e in evs if e.type == "security_event"}

    want = {"forged", "replayed", "expired", "misaddressed"}
    await until(lambda: _has(refusals, want), what="four security events in the ledger")

    async def in_cloud() -> bool:
        found = await asyncio.to_thread(view.alerts, cloud.ctx.engine, CABINET)
        return want <= {a["kind"] for a in found}

    await until(in_cloud, what="the security events to reach the cloud as alerts")
    r = await cloud.client.get(f"/api/fleet/alerts?cabinet={CABINET}", headers=cloud.auth())
    assert {a["severity"] for a in await r.json() if a["kind"] in want} == {"critical"}
    assert len([e for e in await site.event_keys() if e[2] == "command_received"]) == 1


async def _has(fn, want: set[str]) -> bool:
    return want <= await fn()


async def test_fleet_view_shows_online_telemetry_and_the_last_will(broker, make_cloud, make_site) -> None:
    cloud = await make_cloud(broker)
    site = await make_site(broker, sync={"telemetry_interval_s": 1.0})

    async def detail() -> dict:
        return await (await cloud.client.get(f"/api/fleet/cabinets/{CABINET}", headers=cloud.auth())).json()

    async def live() -> bool:
        d = await detail()
        soc = {s["slot"]: s["soc"] for s in d["slots"] if s["battery_sn"]}
        # the simulator's 50 % pack, as the gauge reads it (it drifts a little while the pack charges)
        return d["online"] is True and d["telemetry_at"] is not None and 35 <= (soc.get(3) or 0) <= 65

    await until(live, what="state and telemetry in the fleet view")
    assert (await detail())["versions"]  # the cabinet reported its software versions
    await site.stop()  # the cabinet goes away: the broker publishes its last will

    async def offline() -> bool:
        return (await detail())["online"] is False

    await until(offline, what="the last will to mark the cabinet offline")
    listing = await (await cloud.client.get("/api/fleet/cabinets", headers=cloud.auth())).json()
    assert {c["id"]: c["online"] for c in listing} == {CABINET: False, "CAB-T2": False}
    _, renter = await cloud.renter("bob@example.com")
    assert (await cloud.client.get("/api/fleet/cabinets", headers=cloud.auth(renter))).status == 403
