"""The cloud's money path through Alipay fund authorization (资金预授权, credit 免押): the real
``python-alipay-sdk`` against the local fake gateway, the cloud's HTTP API on a real database, the
fake's RSA2-signed form notifications posted to ``/api/payments/alipay/notify`` (answered with
the bare ``success`` Alipay reads back).

The freeze order string goes to the renter's phone; the eject waits until the renter confirms it
in the Alipay app (the freeze notification); at the return ``alipay.trade.pay`` takes the fee
against the authorization and the rest is unfrozen. Then the books prove.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from cloud import money
from cloud.app import CTX, create_app
from cloud.config import CloudConfig
from cloud.rentals import CabinetEvent
from tests.fakes.alipay_fake import AlipayFake, generate_rsa_keypair
from tests.payments.cloud_helpers import login, merchant_with_cabinet, until

APP_ID, SELLER = "2021004100000001", "2088000000000001"
SERVICE_ID, CATEGORY = "2020042800000000000001450466", "RENT_POWERBANK"
TARIFF = {"currency": "CNY", "price_per_period": 200, "period_minutes": 30, "free_minutes": 5,
          "daily_cap": 2000, "total_cap": 9900, "timezone": "Asia/Shanghai"}  # fmt: skip


@pytest.fixture
async def world(aiohttp_client, db_url, monkeypatch, unused_tcp_port):  # type: ignore[no-untyped-def]
    app_private, app_public = generate_rsa_keypair()
    alipay_private, alipay_public = generate_rsa_keypair()
    monkeypatch.setenv("ALIPAY_APP_KEY", app_private)
    monkeypatch.setenv("ALIPAY_PUBLIC_KEY", alipay_public)
    fake = AlipayFake(app_id=APP_ID, app_public_key=app_public, alipay_private_key=alipay_private,
                      seller_id=SELLER, auth_ttl_s=7 * 86400).start()  # fmt: skip
    cfg = CloudConfig(
        database=db_url,
        provider="alipay",
        provider_settings={
            "alipay": {
                "app_id": APP_ID,
                "payee_user_id": SELLER,
                "notify_url": f"http://127.0.0.1:{unused_tcp_port}/api/payments/alipay/notify",
                "service_id": SERVICE_ID,
                "category": CATEGORY,
                "app_private_key_env": "ALIPAY_APP_KEY",
                "alipay_public_key_env": "ALIPAY_PUBLIC_KEY",
                "gateway": fake.gateway_url,
            }
        },
        scrypt_n=2**10,
        webhook_secret="whsec-test",
        mode="sandbox",
    )
    sent: list = []
    app = create_app(cfg, clock=time.time, command_sink=sent.append, background=False)
    from aiohttp.test_utils import TestServer

    client = await aiohttp_client(TestServer(app, port=unused_tcp_port))
    client.sent = sent
    ctx = client.server.app[CTX]
    ops = await login(client, "ops@example.com", operator=True)
    await merchant_with_cabinet(client, ops, "CNY", "Asia/Shanghai", TARIFF, ["alipay"])
    try:
        yield client, ctx, fake
    finally:
        fake.stop()


async def test_a_credit_freeze_ejects_on_the_confirmation_and_the_fee_is_paid_against_it(world) -> None:
    client, ctx, fake = world
    me = await login(client, "zhao@example.com")
    buyer = "2088102000000001"
    r = await client.post("/api/me/payment-methods", headers=me, json={"provider": "alipay", "token": buyer})
    assert r.status == 201
    r = await client.post("/api/rentals", headers=me, json={"cabinet_id": "CAB-1"})
    assert r.status == 202, await r.text()
    body = await r.json()
    assert body["provider"] == "alipay" and body["client_action"]["order_str"] and client.sent == []

    result = await asyncio.to_thread(fake.renter_submits, body["client_action"]["order_str"], buyer)
    assert result["resultCode"] == "9000", result
    await until(lambda: client.sent, "the eject after the freeze notification")
    assert [c.args["rental_id"] for c in client.sent] == [body["rental_id"]]
    assert ctx.rentals.rental(body["rental_id"])["hold_status"] == "held"

    ctx.rentals.on_rental_started("CAB-1", CabinetEvent("CAB-1", 1, "e1", "rental_started", time.time(), 10.0, "b",
                                                        {"rental_id": body["rental_id"], "sn": "S1"}))  # fmt: skip
    await asyncio.to_thread(
        ctx.rentals.on_battery_returned,
        "CAB-1",
        CabinetEvent("CAB-1", 2, "e2", "battery_returned", time.time(), 10.0 + 2700, "b", {"sn": "S1"}),
    )
    rental = ctx.rentals.rental(body["rental_id"])
    assert (rental["fee"], rental["captured"], rental["payment_status"]) == (400, 400, "paid")
    order = fake.order(rental["hold_ref"])
    assert fake.effect_count("pay") == 1 and order is not None
    assert len(client.sent) == 1
    assert money.check(ctx.engine) == []
