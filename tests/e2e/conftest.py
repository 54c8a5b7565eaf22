"""End-to-end fixtures: a real broker, the cloud app with its fleet link, and real cabinets.

A cabinet here is the real ``Cabinet`` against the hardware simulator (Modbus RTU over a pty,
locks over the GPIO link), syncing through Mosquitto to the cloud, which runs the real
aiohttp app with its MQTT ingest on SQLite or PostgreSQL. The cloud signs with the key the
cabinet trusts (``cloud_keys.signer``).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
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
from hardware_sim.cabinet import SimConfig
from hardware_sim.server import SimServer
from tests.cabinet.conftest import CloudKeys, cloud_keys, make_config  # noqa: F401 - fixture
from tests.cloud.conftest import db_url, pg_database_url, sqlite_template  # noqa: F401 - fixtures
from tests.conftest import until as poll_until

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
    client: TestClient
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
        return await asyncio.to_thread(self.ctx.fleet.applier.applied_seq, cabinet)


async def start_cloud(
    url: str, broker: Any, data_dir: Path, signer: Any, name: str
) -> tuple[web.Application, TestClient]:
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
async def make_cloud(db_url: str, tmp_path: Path, cloud_keys: CloudKeys):  # noqa: F811 - fixtures
    """``await make_cloud(broker)``: the cloud app with its fleet link; the first one seeds the catalogue."""
    clients: list[TestClient] = []

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


@dataclass
class Site:
    """One simulated cabinet (hardware simulator + the cabinet process) that can be restarted."""

    sim: SimServer
    cab: Cabinet
    data_dir: Path
    over: dict[str, Any]
    monkeypatch: pytest.MonkeyPatch

    @property
    def ledger(self) -> Any:
        return self.cab.ledger

    async def events(self) -> list[tuple[int, str, str]]:
        evs = await self.ledger.events_after(0, limit=1_000_000, max_bytes=1 << 40)
        return [(e.seq, e.id, e.type) for e in evs]

    async def last_seq(self) -> int:
        return await self.ledger.run(lambda led: led.last_seq)

    async def start(self) -> None:
        over = {**self.over, "locks": {"sim_address": self.sim.gpio_address, **self.over.get("locks", {})}}
        self.cab = Cabinet(make_config(self.data_dir, self.sim.pty_path, 8, **over))
        await self.cab.start()
        tune(self.cab)

    async def stop(self) -> None:
        if self.cab is None:
            return
        stopping = asyncio.create_task(self.cab.stop())
        while not stopping.done():
            await asyncio.wait({stopping}, timeout=2.0)
            # Cabinet.stop() can wait forever for its bus poller when a cancel is swallowed inside
            # a scan (seen 1 run in ~10; reported to the cabinet owner): ask again
            for t in getattr(self.cab, "_tasks", ()):
                t.cancel()
        with contextlib.suppress(Exception):
            stopping.result()
        self.cab = None  # type: ignore[assignment]
        await self.sim.__aexit__(None, None, None)

    async def restart(self) -> None:
        """A power cut: the cabinet process and its hardware stop, and start again on the same data dir.

        The simulator restarts too: a cabinet restarted against a simulator that kept running can
        freeze in a blocking pty write (reported to the drivers/simulator owners).
        """
        await self.stop()
        self.sim = await start_sim()
        await self.start()


async def start_sim() -> SimServer:
    sim = SimServer(SimConfig(slots=8, slots_per_board=4, seed=7, fill=0.0), speed=1.0)
    await sim.__aenter__()
    for slot, soc in ((1, 0.95), (2, 0.90), (3, 0.50), (5, 0.85)):
        sim.cabinet.insert(slot, sn=f"PB00000{slot}", soc=soc)
    return sim


def tune(cab: Cabinet) -> None:
    if cab.sync is not None:
        quick_reconnects(cab.sync.transport)
        cab.sync.settings = replace(cab.sync.settings, ack_timeout_s=3.0)


@pytest.fixture
async def make_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cloud_keys: CloudKeys):  # noqa: F811
    """``await make_site(broker, **config overrides)``: a simulator and a cabinet syncing to ``broker``."""
    sites: list[Site] = []

    async def make(broker: Any, **over: dict[str, Any]) -> Site:
        sync = {"enabled": True, "broker_host": broker.host, "broker_port": broker.port, "tls": False,
                "cloud_keys": [cloud_keys.config_entry]}  # fmt: skip
        over["sync"] = {**sync, **over.get("sync", {})}
        over.setdefault("web", {"enabled": False})  # no kiosk server (it would want port 8080)
        data_dir = tmp_path / f"site{len(sites)}"
        data_dir.mkdir()
        site = Site(await start_sim(), None, data_dir, over, monkeypatch)  # type: ignore[arg-type]
        sites.append(site)
        await site.start()

        async def known() -> bool:
            slots = {s.slot: s.sn for s in await site.ledger.slots()}
            return all(slots.get(n) == f"PB00000{n}" for n in (1, 2, 3, 5))

        await until(known, 30, what="the cabinet to know every battery")
        return site

    try:
        yield make
    finally:
        for s in reversed(sites):
            await s.stop()
