"""The app's own API routes without a browser: one rental as the phone follows it
(``GET /api/me/rentals/{id}``) through each phase, and a pass as a QR code (``.../qr.svg``).

The cabinet's side is played by calling the rental life cycle with the events a cabinet sends
(``RentalService.on_*``), on a settable clock; the cloud runs for real on a SQLite file.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import insert

from cloud.app import CTX, create_app
from cloud.config import CloudConfig
from cloud.db import cabinet_events
from cloud.fleet.commands import set_command_status
from cloud.rentals import CabinetEvent, EjectCommand
from cloud.renter.api import abort_code
from tests.renter.conftest import PASSWORD, TARIFF

CAB = "CAB-T1"


class Clock:
    def __init__(self) -> None:
        self.now = 1_789_963_200.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Cloud:
    client: TestClient
    clock: Clock
    sent: list[EjectCommand] = field(default_factory=list)
    seq: int = 0

    @property
    def ctx(self) -> Any:
        return self.client.server.app[CTX]

    async def renter(self, email: str, card: str | None = "tok_ok") -> dict[str, str]:
        await self.client.post("/api/users", json={"email": email, "password": PASSWORD})
        r = await self.client.post("/api/login", json={"email": email, "password": PASSWORD})
        auth = {"Authorization": f"Bearer {(await r.json())['token']}"}
        if card:
            await self.client.put("/api/me/card", json={"card_token": card}, headers=auth)
        return auth

    async def view(self, rental_id: str, auth: dict[str, str]) -> dict[str, Any]:
        r = await self.client.get(f"/api/me/rentals/{rental_id}", headers=auth)
        assert r.status == 200, await r.text()
        assert r.headers["Cache-Control"] == "no-store"
        data: dict[str, Any] = await r.json()
        return data

    def event(self, type_: str, mono: float, **body: Any) -> CabinetEvent:
        """An event of ``CAB`` as it reaches the cloud (also kept in cabinet_events, as ingest does)."""
        self.seq += 1
        ev = CabinetEvent(CAB, self.seq, f"E{self.seq}", type_, self.clock(), mono, "boot-1", body)
        with self.ctx.engine.begin() as conn:
            conn.execute(
                insert(cabinet_events).values(
                    cabinet_id=CAB, seq=ev.seq, event_id=ev.id, type=type_, at_wall=ev.at_wall,
                    at_mono=mono, boot_id="boot-1", body=json.dumps(body), received_at=self.clock(),
                )
            )  # fmt: skip
        return ev


@pytest.fixture
async def cloud(tmp_path: Path, sqlite_template: Path) -> AsyncIterator[Cloud]:
    db = tmp_path / "cloud.db"
    shutil.copy(sqlite_template, db)
    clock = Clock()
    sent: list[EjectCommand] = []
    config = CloudConfig(database=f"sqlite:///{db}", data_dir=str(tmp_path), scrypt_n=16, eject_timeout_s=120)
    app = create_app(config, clock=clock, command_sink=sent.append, background=False)
    ctx = app[CTX]
    m = ctx.catalog.create_merchant("Cafe Aurora", 3000, "EUR", "Europe/Berlin")
    ctx.catalog.create_tariff("standard", TARIFF, m.id, True)
    venue = ctx.places.create_venue(m.id, "Cafe Aurora Mitte", None, 52.52, 13.41, "24/7")
    ctx.catalog.add_cabinet(CAB, venue["id"])
    async with TestClient(TestServer(app)) as client:
        yield Cloud(client, clock, sent)


async def rent(cloud: Cloud, auth: dict[str, str]) -> str:
    r = await cloud.client.post("/api/rentals", json={"cabinet_id": CAB}, headers=auth)
    assert r.status == 201, await r.text()
    rental_id: str = (await r.json())["rental_id"]
    return rental_id


async def test_a_rental_seen_through_its_eject_the_running_fee_and_the_receipt(cloud: Cloud) -> None:
    ana = await cloud.renter("ana@example.com")
    rid = await rent(cloud, ana)
    v = await cloud.view(rid, ana)
    assert (v["phase"], v["eject"]["command_status"], v["slot"], v["abort"]) == (
        "sending",
        "queued",
        None,
        None,
    )
    assert v["hold"] == {"amount": 3500, "status": "held", "released": 0}
    assert v["eject"]["deadline"] == v["eject"]["requested_at"] + 120

    cmd = cloud.sent[0]
    await asyncio.to_thread(cloud.ctx.rentals.on_rental_started, CAB,
                            cloud.event("rental_started", 100.0, rental_id=rid, sn="PB000001", slot=3,
                                        source="cloud", cmd_id=cmd.cmd_id))  # fmt: skip
    cloud.clock.now += 3700  # an hour and 100 s later: two periods of 2.50 EUR
    v = await cloud.view(rid, ana)
    assert (v["phase"], v["slot"], v["battery_sn"]) == ("active", 3, "PB000001")
    assert v["elapsed_s"] == pytest.approx(3700, abs=1)
    assert (v["fee_so_far"], v["fee_next"], v["fee_next_in_s"]) == (500, 750, pytest.approx(3500, abs=1))
    assert v["eject"] is None and v["currency"] == "EUR"

    await asyncio.to_thread(cloud.ctx.rentals.on_battery_returned, CAB,
                            cloud.event("battery_returned", 100.0 + 3800, sn="PB000001", slot=5, rental_id=rid))  # fmt: skip
    v = await cloud.view(rid, ana)
    assert (v["phase"], v["fee"], v["captured"], v["elapsed_s"]) == ("closed", 500, 500, pytest.approx(3800))
    assert v["hold"] == {"amount": 3500, "status": "captured", "released": 3000}
    receipt = await (await cloud.client.get(f"/api/me/rentals/{rid}/receipt", headers=ana)).json()
    assert (receipt["fee"], receipt["paid"]) == (v["fee"], v["captured"] - v["refunded"])


async def test_the_phases_of_an_eject_and_why_one_ended(cloud: Cloud) -> None:
    ana = await cloud.renter("ana@example.com")
    rid = await rent(cloud, ana)
    with cloud.ctx.engine.begin() as conn:  # the cabinet's command_received, as the fleet link applies it
        set_command_status(conn, "command_received", {"cmd_id": cloud.sent[0].cmd_id}, cloud.clock())
    assert (await cloud.view(rid, ana))["phase"] == "presenting"

    await asyncio.to_thread(cloud.ctx.rentals.on_rental_aborted, CAB,
                            cloud.event("rental_aborted", 50.0, rental_id=rid, slot=4, reason="not_taken",
                                        source="cloud"))  # fmt: skip
    v = await cloud.view(rid, ana)
    assert (v["phase"], v["abort"]["reason"], v["slot"]) == (
        "aborted",
        "not_taken",
        4,
    )  # the slot of its event
    assert v["hold"] == {"amount": 3500, "status": "voided", "released": 3500}

    # no answer from the cabinet at all: the sweep gives up after eject_timeout_s
    rid2 = await rent(cloud, ana)
    cloud.clock.now += 121
    await asyncio.to_thread(cloud.ctx.housekeeping)
    v = await cloud.view(rid2, ana)
    assert (v["phase"], v["abort"]["reason"], v["slot"]) == ("aborted", "cabinet_timeout", None)
    assert v["hold"]["released"] == 3500


async def test_a_declined_hold_and_other_peoples_rentals(cloud: Cloud) -> None:
    bob = await cloud.renter("bob@example.com", card="tok_decline")
    r = await cloud.client.post("/api/rentals", json={"cabinet_id": CAB}, headers=bob)
    assert (r.status, (await r.json())["error"]) == (402, "card_declined")
    (mine,) = await (await cloud.client.get("/api/me/rentals", headers=bob)).json()
    v = await cloud.view(mine["id"], bob)
    assert (v["phase"], v["abort"]["reason"], v["hold"]["status"]) == ("aborted", "hold_refused", "declined")

    ana = await cloud.renter("ana@example.com")
    r = await cloud.client.get(f"/api/me/rentals/{mine['id']}", headers=ana)
    assert (r.status, (await r.json())["error"]) == (404, "not_found")
    r = await cloud.client.get(f"/api/me/rentals/{mine['id']}")
    assert r.status == 401


def test_abort_reasons_are_one_word_each() -> None:
    assert [abort_code(x) for x in ("not_taken", "lock_jammed", "no_rentable_battery", "interrupted")] == [
        "not_taken", "lock_jammed", "no_rentable_battery", "interrupted",
    ]  # fmt: skip
    assert abort_code("hold not confirmed within 300 s") == "not_confirmed"
    assert abort_code("hold refused: insufficient_funds") == "hold_refused"
    assert abort_code(None) == abort_code("something new") == "other"


async def test_a_pass_as_a_qr_code_only_for_its_owner(cloud: Cloud) -> None:
    ana = await cloud.renter("ana@example.com")
    made = await (await cloud.client.post("/api/me/passes", json={}, headers=ana)).json()
    r = await cloud.client.get(f"/api/me/passes/{made['pass_id']}/qr.svg", headers=ana)
    assert r.status == 200 and r.content_type == "image/svg+xml" and r.headers["Cache-Control"] == "no-store"
    svg = await r.text()
    assert svg.startswith("<svg") and 'xmlns="http://www.w3.org/2000/svg"' in svg and "<path" in svg
    assert "<title>offline pass</title>" in svg and made["qr_text"] not in svg  # drawn, not written out
    bob = await cloud.renter("bob@example.com")
    r = await cloud.client.get(f"/api/me/passes/{made['pass_id']}/qr.svg", headers=bob)
    assert (r.status, (await r.json())["error"]) == (404, "not_found")
