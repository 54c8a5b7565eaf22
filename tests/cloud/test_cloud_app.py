"""The HTTP API: a renter's and an operator's journeys, JSON errors for bad input, OpenAPI coverage."""

from __future__ import annotations

import json

import pytest

from cloud.api_schema import ROUTES
from cloud.app import CTX, create_app
from cloud.config import CloudConfig
from cloud.payments import SIGNATURE_HEADER, sign
from cloud.rentals import CabinetEvent

PW = "correct horse battery"


@pytest.fixture
def sent():
    return []


@pytest.fixture
async def client(aiohttp_client, db_url, clock, sent):
    cfg = CloudConfig(database=db_url, scrypt_n=2**10, webhook_secret="whsec", login_max_failures_account=3)
    app = create_app(cfg, clock=clock, command_sink=sent.append, background=False)
    return await aiohttp_client(app)


async def login(client, email, role="renter"):
    ctx = client.server.app[CTX]
    if role == "operator":
        ctx.accounts.register(email, PW, role="operator")
    else:
        r = await client.post("/api/users", json={"email": email, "password": PW, "name": "Ana"})
        assert r.status == 201, await r.text()
    r = await client.post("/api/login", json={"email": email, "password": PW})
    assert r.status == 200
    return {"Authorization": f"Bearer {(await r.json())['token']}"}


async def setup_merchant(client, ops):
    r = await client.post(
        "/api/merchants",
        headers=ops,
        json={
            "name": "Cafe Aurora",
            "revenue_share_bp": 2500,
            "currency": "EUR",
            "timezone": "Europe/Berlin",
        },
    )
    assert r.status == 201, await r.text()
    mid = (await r.json())["id"]
    r = await client.post(f"/api/merchants/{mid}/venues", headers=ops, json={"name": "Mitte"})
    vid = (await r.json())["id"]
    tariff = {
        "currency": "EUR",
        "price_per_period": 200,
        "period_minutes": 30,
        "free_minutes": 5,
        "daily_cap": 2000,
        "total_cap": 3000,
        "timezone": "Europe/Berlin",
    }
    r = await client.post(
        "/api/tariffs",
        headers=ops,
        json={"name": "std", "merchant_id": mid, "default": True, "tariff": tariff},
    )
    assert r.status == 201, await r.text()
    r = await client.post("/api/cabinets", headers=ops, json={"id": "CAB-1", "venue_id": vid})
    assert r.status == 201, await r.text()
    return mid  # fmt: skip


async def test_renter_rents_returns_and_sees_receipt_and_operator_settles(client, clock, sent):
    ops = await login(client, "ops@example.com", "operator")
    mid = await setup_merchant(client, ops)
    me = await login(client, "ana@example.com")
    r = await client.post("/api/rentals", headers=me, json={"cabinet_id": "CAB-1"})
    assert r.status == 402 and (await r.json())["error"] == "no_card"
    assert (await client.put("/api/me/card", headers=me, json={"card_token": "tok_ok"})).status == 200
    r = await client.post("/api/rentals", headers=me, json={"cabinet_id": "CAB-1"})
    assert r.status == 201, await r.text()
    rent = await r.json()
    assert rent["hold_amount"] == 3000 and rent["command"]["kind"] == "eject"
    assert [c.cmd_id for c in sent] == [rent["command"]["cmd_id"]]
    # what the MQTT ingest will do when the cabinet reports
    service = client.server.app[CTX].rentals
    ev = CabinetEvent(
        "CAB-1", 1, "e1", "rental_started", clock(), 10.0, "b", {"rental_id": rent["rental_id"], "sn": "S1"}
    )
    service.on_rental_started("CAB-1", ev)
    clock.advance(45 * 60)
    service.on_battery_returned(
        "CAB-1", CabinetEvent("CAB-1", 2, "e2", "battery_returned", clock(), 10.0 + 2700, "b", {"sn": "S1"})
    )
    r = await client.get(f"/api/me/rentals/{rent['rental_id']}/receipt", headers=me)
    receipt = await r.json()
    assert (receipt["fee"], receipt["paid"], receipt["payment_status"]) == (400, 400, "paid")
    rows = await (await client.get("/api/me/rentals", headers=me)).json()
    assert [x["id"] for x in rows] == [rent["rental_id"]]
    r = await client.post(
        f"/api/rentals/{rent['rental_id']}/refunds", headers=ops, json={"amount": 100, "reason": "slow"}
    )
    assert (await r.json())["refunded"] == 100
    day = "2026-09-21"
    r = await client.get(
        f"/api/merchants/{mid}/settlement", headers=ops, params={"from": day, "to": "2026-09-22"}
    )
    report = await r.json()
    assert (report["fees"], report["refunds"], report["merchant_share"]) == (400, 100, 75)
    r = await client.get(
        f"/api/merchants/{mid}/settlement",
        headers=ops,
        params={"from": day, "to": "2026-09-22", "format": "csv"},
    )
    assert r.content_type == "text/csv" and (await r.text()).splitlines()[-1].startswith("TOTAL,1 rentals")
    check = await (await client.get("/api/money/check", headers=ops)).json()
    assert check == {"ok": True, "problems": []}


async def test_auth_and_roles_are_enforced(client):
    r = await client.get("/api/me")
    assert r.status == 401 and (await r.json())["error"] == "not_authenticated"
    r = await client.get("/api/me", headers={"Authorization": "Bearer nonsense"})
    assert r.status == 401
    me = await login(client, "ana@example.com")
    r = await client.get("/api/merchants", headers=me)
    assert r.status == 403 and (await r.json())["message"] == "operators only"
    assert (await client.post("/api/logout", headers=me)).status == 204
    assert (await client.get("/api/me", headers=me)).status == 401


async def test_login_throttle_answers_429_with_retry_after(client):
    await login(client, "ana@example.com")
    for _ in range(3):
        r = await client.post(
            "/api/login", json={"email": "ana@example.com", "password": "wrong wrong wrong"}
        )
        assert r.status == 401
    r = await client.post("/api/login", json={"email": "ana@example.com", "password": PW})
    assert r.status == 429 and int(r.headers["Retry-After"]) > 0


async def test_delete_account_via_api(client):
    me = await login(client, "ana@example.com")
    assert (await client.delete("/api/me", headers=me)).status == 204
    r = await client.post("/api/login", json={"email": "ana@example.com", "password": PW})
    assert r.status == 401


BAD_BODIES = [b"", b"not json", b"[]", b"null", b"42", b'"x"', b"{}", b'{"unknown": 1}',
              json.dumps({"email": 5, "password": None, "cabinet_id": ["x"], "amount": 10**30, "reason": "\u0000",
                          "name": {"a": 1}, "revenue_share_bp": True, "currency": "euro", "card_token": ""}).encode()]  # fmt: skip


async def test_bad_input_is_a_json_4xx_never_a_500(client):
    ops = await login(client, "ops@example.com", "operator")
    for route in ROUTES:
        if route.method == "GET" or route.body is None:
            continue
        path = (
            route.path.replace("{merchant_id}", "1")
            .replace("{rental_id}", "R-1")
            .replace("{provider}", "sandbox")
        )
        for body in BAD_BODIES:
            r = await client.request(
                route.method, path, data=body, headers={**ops, "Content-Type": "application/json"}
            )
            assert 400 <= r.status < 500, (route.path, body, r.status, await r.text())
            err = await r.json()
            assert set(err) == {"error", "message"} and err["message"], (route.path, body)
    r = await client.get("/api/merchants/abc/settlement", headers=ops)
    assert r.status == 404
    r = await client.get(
        "/api/merchants/1/settlement", headers=ops, params={"from": "yesterday", "to": "2026-01-01"}
    )
    assert r.status == 400 and "not a date" in (await r.json())["message"]
    r = await client.get("/api/nowhere")
    assert r.status == 404 and (await r.json())["error"] == "not_found"
    r = await client.post("/api/rentals/nope/refunds", headers=ops, json={"amount": 5, "reason": "x"})
    assert r.status == 404


async def test_webhook_endpoint_verifies_and_dedupes(client, clock):
    body = json.dumps({"id": "evt_1", "type": "hold.voided", "data": {"ref": "void_x"}}).encode()
    headers = {SIGNATURE_HEADER: sign("whsec", body, int(clock())), "Content-Type": "application/json"}
    r1 = await client.post("/api/webhooks/sandbox", data=body, headers=headers)
    r2 = await client.post("/api/webhooks/sandbox", data=body, headers=headers)
    assert [(await r1.json())["duplicate"], (await r2.json())["duplicate"]] == [False, True]
    headers[SIGNATURE_HEADER] = sign("not-the-secret", body, int(clock()))
    r = await client.post("/api/webhooks/sandbox", data=body, headers=headers)
    assert r.status == 400 and (await r.json())["error"] == "webhook_rejected"


async def test_openapi_document_describes_every_served_route(client):
    doc = await (await client.get("/api/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    routes = {
        (r.method, r.resource.canonical) for r in client.server.app.router.routes() if r.method != "HEAD"
    }
    served = {(m, p) for m, p in routes if p.startswith("/api/")}
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert served == documented
    pages = routes - served  # the renter app's pages (cloud/renter): HTML, scripts, its service worker
    assert pages and all(m == "GET" and (p == "/app" or p.startswith("/app/")) for m, p in pages)
    assert doc["paths"]["/api/rentals"]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "required"
    ] == ["cabinet_id"]
    health = await (await client.get("/api/health")).json()
    assert health == {"ok": True, "schema": "0010"}
