"""The renter app against a real stack, driven in Chromium emulating a phone.

The stack is the cheapest real one the project has (as tests/e2e): a Mosquitto broker, the cloud
app in-process (aiohttp on a free port, its MQTT fleet link and its sweeper, on a SQLite file),
and two real cabinets (``tests/rigs.py``: the ``Cabinet`` against the hardware simulator) syncing
through the broker. Chromium is Debian's, under Playwright, at 360 x 740 with touch.

``CAB-T1`` (packs PB000001, PB000002, PB000003 at 50 %, PB000005) and ``CAB-T2`` (PB000201..203)
stand at two venues 1.8 km apart in Berlin; the renter's phone is between them.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from cabinet.service import Cabinet
from cloud.app import CTX, CloudContext, create_app
from cloud.config import CloudConfig
from cloud.pricing import Tariff
from tests.browser import CHROMIUM_ARGS, axe_source
from tests.helpers import free_port, until
from tests.rigs import Battery, CloudKeys, MakeRig, Rig

PASSWORD = "correct horse battery"
CABINETS = ("CAB-T1", "CAB-T2")
#: cabinet -> (venue, address, lat, lon, opening hours)
VENUES: dict[str, tuple[str, str, float, float, str]] = {
    "CAB-T1": ("Cafe Aurora Mitte", "Alexanderplatz 1, Berlin", 52.5219, 13.4132, "24/7"),
    "CAB-T2": ("Cafe Aurora Ost", "Karl-Marx-Allee 90, Berlin", 52.5176, 13.4380, "24/7"),
}
T2_PACKS: tuple[Battery, ...] = ((1, "PB000201", 0.95), (2, "PB000202", 0.90), (3, "PB000203", 0.85))
#: the tariff both cabinets rent at: 2.50 EUR an hour from the first minute, 15 EUR a day, 35 EUR in all
TARIFF = Tariff(currency="EUR", price_per_period=250, period_minutes=60, free_minutes=0, daily_cap=1500,
                total_cap=3500, timezone="Europe/Berlin")  # fmt: skip
PHONE_HERE = {"latitude": 52.5200, "longitude": 13.4250}
PHONE: dict[str, Any] = {
    "viewport": {"width": 360, "height": 740},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}


def quick(cab: Cabinet) -> None:
    """Tests do not wait for production backoff and ack timeouts (each start of a site)."""
    if cab.sync is not None:
        cab.sync.transport.backoff.initial_s = 0.1
        cab.sync.transport.backoff.max_s = 0.5
        cab.sync.transport.backoff.reset()
        cab.sync.settings = replace(cab.sync.settings, ack_timeout_s=3.0)


@dataclass
class Stack:
    """The cloud (``url``) with its fleet link, and the two cabinets by id."""

    url: str
    app: web.Application
    sites: dict[str, Rig]
    http: aiohttp.ClientSession
    emails: int = 0
    _tokens: dict[str, str] = field(default_factory=dict)

    @property
    def ctx(self) -> CloudContext:
        return self.app[CTX]

    async def renter(self, card: str | None = "tok_ok") -> tuple[str, str]:
        """A new renter account (email, token), with ``card`` on file unless None."""
        self.emails += 1
        email = f"renter{self.emails}-{uuid.uuid4().hex[:6]}@example.com"
        r = await self.http.post("/api/users", json={"email": email, "password": PASSWORD})
        assert r.status == 201, await r.text()
        r = await self.http.post("/api/login", json={"email": email, "password": PASSWORD})
        token = (await r.json())["token"]
        if card:
            r = await self.http.put("/api/me/card", json={"card_token": card}, headers=self.auth(token))
            assert r.status == 200, await r.text()
        return email, token

    @staticmethod
    def auth(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    async def rental(self, rental_id: str) -> dict[str, Any]:
        return await asyncio.to_thread(self.ctx.rentals.rental, rental_id)

    async def public(self, cabinet: str) -> dict[str, Any]:
        r = await self.http.get(f"/api/cabinets/{cabinet}/public")
        assert r.status == 200, await r.text()
        data: dict[str, Any] = await r.json()
        return data

    async def ready(self, cabinet: str, packs: int, timeout: float = 30.0) -> None:
        """Wait until the cloud's fleet view shows ``cabinet`` online with ``packs`` packs ready."""

        async def seen() -> bool:
            p = await self.public(cabinet)
            return bool(p["online"]) and p["packs_ready"] == packs

        await until(seen, timeout, f"{cabinet} online with {packs} packs ready in the fleet view", every=0.2)


async def _start_cloud(
    url: str, broker: Any, data_dir: Path, cloud_keys: CloudKeys
) -> tuple[web.AppRunner, str]:
    config = CloudConfig.from_mapping(
        {
            "database": url,
            "broker_host": broker.host,
            "broker_port": broker.port,
            "mqtt_tls": False,
            "mqtt_client_id": f"cloud-{uuid.uuid4().hex[:6]}",
            "data_dir": str(data_dir),
            "eject_timeout_s": 30,
            "sweep_interval_s": 1,
            "scrypt_n": 1024,
            "app_tile_url": "",  # tests run without tiles: the map shows the markers only
        }
    )
    app = create_app(config, signer=cloud_keys.signer)
    fleet = app[CTX].fleet
    assert fleet is not None
    fleet.settings = replace(fleet.settings, housekeeping_interval_s=0.5)
    fleet.transport.backoff.initial_s = 0.1
    fleet.transport.backoff.max_s = 0.5
    fleet.transport.backoff.reset()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await fleet.wait_connected(10)
    return runner, f"http://127.0.0.1:{port}"


def _seed(ctx: CloudContext) -> None:
    """One merchant, its default tariff, two venues with places, a cabinet at each."""
    cat = ctx.catalog
    m = cat.create_merchant("Cafe Aurora", 3000, "EUR", "Europe/Berlin")
    cat.create_tariff("standard", TARIFF, m.id, True)
    for cab, (name, address, lat, lon, hours) in VENUES.items():
        venue = ctx.places.create_venue(m.id, name, address, lat, lon, hours)
        cat.add_cabinet(cab, venue["id"])


MakeStack = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def make_stack(
    broker: Any, make_rig: MakeRig, tmp_path: Path, cloud_keys: CloudKeys, sqlite_template: Path
) -> AsyncIterator[MakeStack]:
    """``await make_stack(t1={...}, t2={...}, t1_packs=..., t2_packs=...)``: the cloud and both cabinets
    (config overrides by section for each), once the fleet view knows their packs."""
    runners: list[web.AppRunner] = []
    sessions: list[aiohttp.ClientSession] = []

    async def make(
        t1: dict[str, Any] | None = None,
        t2: dict[str, Any] | None = None,
        t1_packs: Sequence[Battery] | None = None,
        t2_packs: Sequence[Battery] = T2_PACKS,
    ) -> Stack:
        db = tmp_path / "cloud.db"
        shutil.copy(sqlite_template, db)
        runner, url = await _start_cloud(f"sqlite:///{db}", broker, tmp_path / "cloud", cloud_keys)
        runners.append(runner)
        app = runner.app
        await asyncio.to_thread(_seed, app[CTX])
        sites = {}
        for cab, over, packs in (("CAB-T1", t1 or {}, t1_packs), ("CAB-T2", t2 or {}, t2_packs)):
            data_dir = tmp_path / cab
            data_dir.mkdir()
            sync = {"telemetry_interval_s": 1.0, **over.pop("sync", {})}
            sites[cab] = await make_rig(broker=broker, data_dir=data_dir, settle_timeout=30, on_start=quick,
                                        batteries=packs, cabinet={"id": cab}, sync=sync, **over)  # fmt: skip
        http = aiohttp.ClientSession(url)
        sessions.append(http)
        return Stack(url, app, sites, http)

    try:
        yield make
    finally:
        for s in sessions:
            await s.close()
        for r in reversed(runners):
            await r.cleanup()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Debian's Chromium, headless, driven by Playwright (no browser download)."""
    from playwright.async_api import async_playwright

    exe = shutil.which("chromium") or "/usr/bin/chromium"
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


#: Chromium logs every 4xx answer as a console error; the app shows those refusals on purpose
_API_REFUSAL = re.compile(r"Failed to load resource: the server responded with a status of 4\d\d ")


@dataclass
class Phone:
    """A page in a phone-sized context, and the console errors (CSP violations included) it logged."""

    page: Any
    context: Any
    errors: list[str]

    async def sign_in(self, base: str, token: str) -> None:
        """Keep ``token`` where the app keeps it (the sign-in screen itself is tested in the journey)."""
        await self.page.goto(base + "/app/")
        await self.page.evaluate("t => localStorage.setItem('renter.token', t)", token)


@pytest.fixture
async def phone(browser: Any) -> Callable[..., Awaitable[Phone]]:
    """``await phone(locale="en-GB", geolocation=True, scale=2, service_workers="allow")``: a new phone
    (its own storage, no service worker yet); ``scale`` is the device pixel ratio (1 for the
    screenshots in docs/); ``service_workers="block"`` when a test routes the page's requests (the
    service worker's own fetches pass by ``page.route``)."""

    async def make(
        locale: str = "en-GB", geolocation: bool = True, scale: float = 2, service_workers: str = "allow"
    ) -> Phone:
        options: dict[str, Any] = {
            **PHONE,
            "locale": locale,
            "device_scale_factor": scale,
            "service_workers": service_workers,
        }
        if geolocation:
            options.update(geolocation=PHONE_HERE, permissions=["geolocation"])
        context = await browser.new_context(**options)
        page = await context.new_page()
        errors: list[str] = []
        page.on(
            "console",
            lambda m: errors.append(m.text) if m.type == "error" and not _API_REFUSAL.match(m.text) else None,
        )
        page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
        return Phone(page, context, errors)

    return make


@pytest.fixture(scope="session")
def axe() -> str:
    src = axe_source()
    if src is None:
        pytest.skip("axe-core is not available (needs npm and the npm registry once; or set CABINET_AXE_DIR)")
    return src


@pytest.fixture
def shots_dir(tmp_path: Path) -> Path:
    """Where screenshots go: CABINET_SCREENSHOTS_DIR (docs/screenshots) or the test's tmp dir."""
    out = Path(os.environ.get("CABINET_SCREENSHOTS_DIR") or tmp_path / "shots")
    out.mkdir(parents=True, exist_ok=True)
    return out
