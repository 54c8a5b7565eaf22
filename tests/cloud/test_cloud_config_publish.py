"""Config publishing for one bad cabinet never stops it for the others (issue 11.6).

A cabinet row whose id the topics refuse (registered before ``POST /api/cabinets`` used the
protocol's rule, e.g. with a ``.``, which the old schema allowed) sorts first in the fleet. Before
the fix, its exception ended the fleet-wide publish (``POST /api/fleet/cabinets/*/config``) and
every housekeeping round, so no other cabinet got its config re-signed before it expired.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace

from sqlalchemy import insert, select

from cloud.app import CTX, create_app
from cloud.config import CloudConfig
from cloud.db import cabinets, config_versions, fleet_alerts
from sync.signing import Signer, generate_private_key
from tests.conftest import until

LEGACY = "CAB-0.legacy"  # sorts before CAB-A and CAB-B


def _seed(ctx) -> None:
    venue = ctx.catalog.create_venue(ctx.catalog.create_merchant("Cafe", 3000, "EUR", "UTC").id, "V")
    for cab in ("CAB-A", "CAB-B"):
        ctx.catalog.add_cabinet(cab, venue)
    with ctx.engine.begin() as conn:  # not through the catalog: it refuses this id now
        conn.execute(insert(cabinets).values(id=LEGACY, venue_id=venue, created_at=0.0))


def _app(db_url, tmp_path, broker, housekeeping_s: float):
    cfg = CloudConfig.from_mapping(
        {"database": db_url, "broker_host": broker.host, "broker_port": broker.port, "mqtt_tls": False,
         "mqtt_client_id": f"cloud-{uuid.uuid4().hex[:6]}", "data_dir": str(tmp_path / "cloud"), "scrypt_n": 1024}
    )  # fmt: skip
    app = create_app(cfg, signer=Signer(generate_private_key(), "k-test"), background=False)
    ctx = app[CTX]
    ctx.fleet.settings = replace(ctx.fleet.settings, housekeeping_interval_s=housekeeping_s)
    _seed(ctx)
    return app, ctx


def _published(ctx) -> set[str]:
    with ctx.engine.connect() as conn:
        rows = conn.execute(
            select(config_versions.c.cabinet_id).where(config_versions.c.published_at.is_not(None))
        ).scalars()
        return set(rows)


def _alerts(ctx) -> list[dict]:
    with ctx.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(fleet_alerts).where(fleet_alerts.c.kind == "config_publish_failed")).mappings()]  # fmt: skip


async def test_fleet_wide_config_publish_skips_a_bad_cabinet_and_alerts(
    aiohttp_client, db_url, tmp_path, broker
) -> None:
    app, ctx = await asyncio.to_thread(_app, db_url, tmp_path, broker, 3600)  # no housekeeping here
    client = await aiohttp_client(app)
    await ctx.fleet.wait_connected(10)
    ops = await _operator(ctx, client)
    r = await client.post("/api/fleet/cabinets/*/config", json={"power_budget_w": 900}, headers=ops)
    body = await r.json()
    assert r.status == 200, body
    assert sorted(p["cabinet"] for p in body["published"]) == ["CAB-A", "CAB-B"]
    assert [f["cabinet"] for f in body["failed"]] == [LEGACY]
    assert _published(ctx) == {"CAB-A", "CAB-B"}
    (alert,) = _alerts(ctx)
    assert alert["cabinet_id"] == LEGACY and alert["cleared_at"] is None and LEGACY in alert["detail"]


async def test_housekeeping_re_signs_every_other_cabinets_config(
    aiohttp_client, db_url, tmp_path, broker
) -> None:
    app, ctx = await asyncio.to_thread(_app, db_url, tmp_path, broker, 0.05)
    await aiohttp_client(app)
    await ctx.fleet.wait_connected(10)
    await until(lambda: _published(ctx) == {"CAB-A", "CAB-B"}, 10, "configs of the good cabinets")
    await until(lambda: _alerts(ctx), 10, "the alert naming the bad cabinet")
    assert {a["cabinet_id"] for a in _alerts(ctx)} == {LEGACY}  # one open alert, however many rounds


async def _operator(ctx, client) -> dict[str, str]:
    email, pw = "ops@example.com", "correct horse battery"
    await asyncio.to_thread(ctx.accounts.register, email, pw, role="operator")
    r = await client.post("/api/login", json={"email": email, "password": pw})
    return {"Authorization": f"Bearer {(await r.json())['token']}"}
