"""A cabinet offline for a while catches up with the cloud: every event once, in order, nothing lost.

Real parts: Mosquitto, the cabinet against the hardware simulator, the cloud app with its MQTT
ingest on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from cabinet.controller import RentRequest
from cloud.db import passes
from tests.e2e.conftest import CABINET, until


async def offline_work(site, cloud, n_records: int, *, pass_id: str) -> str:
    """What a cabinet does while its link is down: technician records, an offline rent and a return."""
    for i in range(n_records):
        await site.ledger.record("tech_action", technician="t-7", action="inspect", detail=f"round {i}")
    rental = f"R-offline-{pass_id}"
    with cloud.ctx.engine.connect() as conn:  # the pass's own user, as a real scan names (issue 11.2)
        user = str(conn.execute(select(passes.c.user_id).where(passes.c.pass_id == pass_id)).scalar_one())
    task = asyncio.create_task(
        site.cab.controller.rent(RentRequest(rental, "pass", user=user, pass_id=pass_id))
    )
    await until(lambda: site.sim.cabinet.slot(1).presented, what="slot 1 to present its pack")
    site.sim.cabinet.take(1)
    assert (await asyncio.wait_for(task, 10)).status == "started"
    site.sim.cabinet.insert(4, sn="PB000001")
    await until(lambda: site.ledger.battery("PB000001"), what="the return")

    async def returned() -> bool:
        b = await site.ledger.battery("PB000001")
        return b is not None and b.place == "slot"

    await until(returned, what="the return to be recorded")
    return rental


async def drained(site, cloud, timeout: float = 30.0) -> int:
    """Wait until the cloud applied, and the cabinet saw acked, everything in the ledger; returns that seq."""

    async def done() -> int:
        last = await site.last_seq()
        ok = await cloud.applied_seq() >= last and site.cab.sync.acked_seq >= last
        return last if ok and last == await site.last_seq() else 0

    return await until(done, timeout, "the cloud to apply and ack the whole ledger")


async def in_step(site, cloud) -> bool:
    """The cloud holds exactly the cabinet's events, same seqs, ids and types, in order.

    The cabinet may record more meanwhile (a config arriving): the cloud's copy must then be a
    prefix of the ledger that covers everything drained.
    """
    last = await drained(site, cloud)
    theirs, ours = await cloud.events(), await site.event_keys()
    assert len(theirs) >= last and theirs == ours[: len(theirs)]
    return True


async def issue_pass(cloud) -> str:
    _, token = await cloud.renter()
    r = await cloud.client.post("/api/me/passes", json={"max_rentals": 2}, headers=cloud.auth(token))
    assert r.status == 201, await r.text()
    return (await r.json())["pass_id"]


async def test_offline_backlog_reaches_the_cloud_once_in_order_and_bills_the_offline_rental(
    broker, make_cloud, make_site
) -> None:
    cloud = await make_cloud(broker)
    site = await make_site(broker)
    pass_id = await issue_pass(cloud)
    await drained(site, cloud)
    broker.stop()
    rental = await offline_work(site, cloud, 300, pass_id=pass_id)
    assert await site.last_seq() > 300
    broker.start()
    assert await in_step(site, cloud)
    r = await asyncio.to_thread(cloud.ctx.rentals.rental, rental)
    assert (r["status"], r["source"], r["pass_id"], r["end_cabinet_id"]) == (
        "closed",
        "pass",
        pass_id,
        CABINET,
    )
    view = await (await cloud.client.get(f"/api/fleet/cabinets/{CABINET}", headers=cloud.auth())).json()
    assert view["online"] is True and view["applied_seq"] == await site.last_seq()
    assert {s["slot"]: s["battery_sn"] for s in view["slots"] if s["battery_sn"]} == {
        2: "PB000002", 3: "PB000003", 4: "PB000001", 5: "PB000005"
    }  # fmt: skip


async def test_broker_killed_and_restarted_mid_drain_loses_and_doubles_nothing(
    broker, make_cloud, make_site
) -> None:
    cloud = await make_cloud(broker)
    site = await make_site(broker, sync={"batch_max_events": 10, "window": 2})
    await drained(site, cloud)
    broker.stop()
    for i in range(400):
        await site.ledger.record("tech_action", technician="t-7", action="inspect", detail=f"round {i}")
    broker.start()
    await until(lambda: cloud.applied_seq(), what="the drain to start")
    broker.stop()  # mid-drain
    assert await cloud.applied_seq() < await site.last_seq()
    await asyncio.sleep(0.3)
    broker.start()
    await drained(site, cloud)
    assert await in_step(site, cloud)


async def test_cabinet_restarted_mid_drain_resumes_from_its_acked_seq(broker, make_cloud, make_site) -> None:
    cloud = await make_cloud(broker)
    site = await make_site(broker, sync={"batch_max_events": 10, "window": 2})
    await drained(site, cloud)
    broker.stop()
    for i in range(400):
        await site.ledger.record("tech_action", technician="t-7", action="inspect", detail=f"round {i}")
    broker.start()
    await until(lambda: cloud.applied_seq(), what="the drain to start")
    await site.restart()  # mid-drain: whatever was in flight is sent again
    assert site.cab.sync.acked_seq < await site.last_seq()
    assert await in_step(site, cloud)


@pytest.mark.postgres
async def test_two_cloud_workers_share_the_fleet_and_apply_every_event_once(
    broker, make_cloud, make_site, db_url
) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("several cloud workers need PostgreSQL (SQLite: one cloud process)")
    first = await make_cloud(broker)
    second = await make_cloud(broker)
    sites = [await make_site(broker, sync={"batch_max_events": 10}),
             await make_site(broker, cabinet={"id": "CAB-T2"}, sync={"batch_max_events": 10})]  # fmt: skip
    broker.stop()
    for site in sites:
        for i in range(300):
            await site.ledger.record("tech_action", technician="t-7", action="inspect", detail=f"round {i}")
    broker.start()
    for site in sites:
        await drained(site, first)
    for site, cab in zip(sites, (CABINET, "CAB-T2"), strict=True):
        ours = await site.event_keys()
        assert await first.events(cab) == ours[: len(await first.events(cab))]
        assert len(await first.events(cab)) >= 300
    assert first.ctx.fleet.batches > 0 and second.ctx.fleet.batches > 0  # the broker shared the load
