"""Fleet and pass routes of the HTTP API on a cloud without a broker (the MQTT side is in tests/e2e)."""

from __future__ import annotations

import pytest

from cloud.app import CTX, create_app
from cloud.config import CloudConfig
from cloud.pricing import Tariff
from sync.signing import MemoryReplayStore, Signer, Verifier, generate_private_key

PW = "correct horse battery"


@pytest.fixture
def signer() -> Signer:
    return Signer(generate_private_key(), "k-test")


@pytest.fixture
async def client(aiohttp_client, db_url, clock, tmp_path, signer):
    cfg = CloudConfig(database=db_url, scrypt_n=2**10, data_dir=str(tmp_path / "cloud"))
    app = create_app(cfg, clock=clock, background=False, signer=signer)
    ctx = app[CTX]
    m = ctx.catalog.create_merchant("Cafe", 3000, "EUR", "UTC")
    ctx.catalog.create_tariff("t", Tariff(currency="EUR", price_per_period=250), m.id, default=True)
    ctx.catalog.add_cabinet("CAB-A", ctx.catalog.create_venue(m.id, "V"), name="Front door")
    ctx.accounts.register("ops@example.com", PW, role="operator")
    return await aiohttp_client(app)


async def token(client, email: str, card: str | None = None) -> dict[str, str]:
    if email != "ops@example.com":
        await client.post("/api/users", json={"email": email, "password": PW})
    r = await client.post("/api/login", json={"email": email, "password": PW})
    auth = {"Authorization": f"Bearer {(await r.json())['token']}"}
    if card:
        await client.put("/api/me/card", json={"card_token": card}, headers=auth)
    return auth


async def test_registered_cabinet_is_listed_offline_before_it_ever_connects(client) -> None:
    ops = await token(client, "ops@example.com")
    listing = await (await client.get("/api/fleet/cabinets", headers=ops)).json()
    assert [(c["id"], c["name"], c["online"], c["stale"], c["applied_seq"]) for c in listing] == [
        ("CAB-A", "Front door", False, True, 0)
    ]
    assert await (await client.get("/api/fleet/cabinets/CAB-A/events", headers=ops)).json() == []
    assert (await client.get("/api/fleet/cabinets/CAB-NONE", headers=ops)).status == 404
    assert await (await client.get("/api/fleet/alerts", headers=ops)).json() == []


async def test_commands_need_a_fleet_link_and_operators(client) -> None:
    ops = await token(client, "ops@example.com")
    r = await client.post("/api/fleet/cabinets/CAB-A/commands", json={"kind": "ping"}, headers=ops)
    assert (r.status, (await r.json())["error"]) == (503, "no_fleet_link")
    renter = await token(client, "ana@example.com")
    r = await client.post("/api/fleet/cabinets/CAB-A/commands", json={"kind": "ping"}, headers=renter)
    assert r.status == 403
    r = await client.post("/api/fleet/cabinets/CAB-A/config", json={"battery_deny_list": [3]}, headers=ops)
    assert r.status == 400 and "battery_deny_list[0]" in (await r.json())["message"]


async def test_pass_is_signed_by_the_cloud_key_and_needs_a_card(client, signer, clock) -> None:
    no_card = await token(client, "bob@example.com")
    r = await client.post("/api/me/passes", json={}, headers=no_card)
    assert (r.status, (await r.json())["error"]) == (402, "no_card")
    ana = await token(client, "ana@example.com", card="tok_ok")
    r = await client.post("/api/me/passes", json={"max_rentals": 2, "ttl_s": 3600}, headers=ana)
    assert r.status == 201
    made = await r.json()
    verifier = Verifier({"k-test": signer.public_key}, "CAB-A", MemoryReplayStore(), clock=clock)
    p = verifier.verify_pass(made["qr_text"])
    assert (p.pass_id, p.max_rentals, p.expires_at) == (made["pass_id"], 2, clock() + 3600)
    r = await client.get(f"/api/me/passes/{made['pass_id']}", headers=no_card)
    assert r.status == 404  # someone else's pass
