"""End-to-end fixtures: a real broker, the cloud app with its fleet link, and real cabinets.

A cabinet here (a "site") is the tests' rig (``tests/rigs.py``: the real ``Cabinet`` against the
hardware simulator, Modbus RTU over a pty, locks over the GPIO link), syncing through Mosquitto
to the cloud, which runs the real aiohttp app with its MQTT ingest on SQLite or PostgreSQL
(``db_url``, from ``tests/cloud_db.py``). The cloud signs with the key the cabinet trusts
(``cloud_keys.signer``).
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cabinet.service import Cabinet
from cloud.app import CTX, CloudContext, create_app
from cloud.config import CloudConfig
from cloud.pricing import Tariff
from tests.helpers import until as poll_until
from tests.rigs import CloudKeys, MakeRig, Rig

CABINET = "CAB-T1"


async def until(pred: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll an (a)sync predicate until it is truthy."""
    return await poll_until(pred, timeout, what, every=0.05)


def quick_reconnects(transport: Any) -> None:
    """Tests do not wait for production backoff (1 s doubling to 120 s)."""
    transport.backoff.initial_s = 0.1
    transport.backoff.max_s = 0.5
    transport.backoff.reset()


@dataclass
class Cloud:
    app: web.Application
    client: TestClient[web.Request, web.Application]
    operator: str  # bearer token

    @property
    def ctx(self) -> CloudContext:
        return self.app[CTX]

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.operator}"}

    async def renter(self, email: str = "ana@example.com", card: str = "tok_ok") -> tuple[int, str]:
        r = await self.client.post("/api/users", json={"email": email, "password": "correct horse battery"})
        uid = (await r.json())["id"]
        r = await self.client.post("/api/login", json={"email": email, "password": "correct horse battery"})
        token = (await r.json())["token"]
        await self.client.put("/api/me/card", json={"card_token": card}, headers=self.auth(token))
        return uid, token

    async def events(self, cabinet: str = CABINET) -> list[tuple[int, str, str]]:
        out: list[tuple[int, str, str]] = []
        while True:
            r = await self.client.get(
                f"/api/fleet/cabinets/{cabinet}/events?after={out[-1][0] if out else 0}&limit=5000",
                headers=self.auth(),
            )
            page = await r.json()
            out += [(e["seq"], e["id"], e["type"]) for e in page]
            if len(page) < 5000:
                return out

    async def applied_seq(self, cabinet: str = CABINET) -> int:
        fleet = self.ctx.fleet
        assert fleet is not None
        return await asyncio.to_thread(fleet.applier.applied_seq, cabinet)


async def start_cloud(
    url: str, broker: Any, data_dir: Path, signer: Any, name: str
) -> tuple[web.Application, TestClient[web.Request, web.Application]]:
    config = CloudConfig.from_mapping(
        {
            "database": url,
            "broker_host": broker.host,
            "broker_port": broker.port,
            "mqtt_tls": False,
            "mqtt_client_id": f"{name}-{uuid.uuid4().hex[:6]}",
            "data_dir": str(data_dir),
            "eject_timeout_s": 30,
            "scrypt_n": 1024,
        }
    )
    app = create_app(config, signer=signer, background=False)
    fleet = app[CTX].fleet
    assert fleet is not None
    fleet.settings = replace(fleet.settings, housekeeping_interval_s=0.5)
    quick_reconnects(fleet.transport)
    client = TestClient(TestServer(app))
    await client.start_server()
    await fleet.wait_connected(10)
    return app, client


@pytest.fixture
async def make_cloud(
    db_url: str, tmp_path: Path, cloud_keys: CloudKeys
) -> AsyncIterator[Callable[..., Awaitable[Cloud]]]:
    """``await make_cloud(broker)``: the cloud app with its fleet link; the first one seeds the catalogue."""
    clients: list[TestClient[web.Request, web.Application]] = []

    async def make(broker: Any) -> Cloud:
        app, client = await start_cloud(
            db_url, broker, tmp_path / "cloud", cloud_keys.signer, f"cloud{len(clients)}"
        )
        first = not clients
        clients.append(client)
        ctx = app[CTX]
        if first:
            cat = ctx.catalog
            m = await asyncio.to_thread(cat.create_merchant, "Cafe Aurora", 3000, "EUR", "Europe/Berlin")
            tariff = Tariff(currency="EUR", price_per_period=250, period_minutes=60, free_minutes=5,
                            daily_cap=1500, total_cap=3500)  # fmt: skip
            await asyncio.to_thread(cat.create_tariff, "standard", tariff, m.id, True)
            venue = await asyncio.to_thread(cat.create_venue, m.id, "Aurora Mitte")
            for cab in (CABINET, "CAB-T2"):
                await asyncio.to_thread(cat.add_cabinet, cab, venue)
            await asyncio.to_thread(
                ctx.accounts.register, "ops@example.com", "operator password", None, "operator"
            )
        r = await client.post(
            "/api/login", json={"email": "ops@example.com", "password": "operator password"}
        )
        return Cloud(app, client, (await r.json())["token"])

    try:
        yield make
    finally:
        for c in reversed(clients):
            await c.close()


def tune(cab: Cabinet) -> None:
    """Quick reconnects and a short ack timeout for a site's sync agent (each start and restart)."""
    if cab.sync is not None:
        quick_reconnects(cab.sync.transport)
        cab.sync.settings = replace(cab.sync.settings, ack_timeout_s=3.0)


@pytest.fixture
def make_site(make_rig: MakeRig, tmp_path: Path) -> Callable[..., Awaitable[Rig]]:
    """``await make_site(broker, **config overrides)``: a rig (simulator + cabinet) syncing to
    ``broker``, on its own data dir; ``site.restart()`` is a power cut."""
    made = itertools.count()

    async def make(broker: Any, **over: Any) -> Rig:
        data_dir = tmp_path / f"site{next(made)}"
        data_dir.mkdir()
        return await make_rig(broker=broker, data_dir=data_dir, settle_timeout=30, on_start=tune, **over)

    return make
