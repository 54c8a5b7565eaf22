"""The cloud's money path through WeChat Pay Score: the real ``wechatpayv3`` SDK against the local
fake, the cloud's HTTP API on a real database, the fake's encrypted and signed notifications
posted to ``/api/payments/wechat/notify``.

A deposit-free rental: the service order is created when the renter asks, the eject waits until
the renter confirms in the Pay Score mini program (the fake's USER_CONFIRM notification), the
order is completed with the fee at the return and WeChat collects it (USER_PAID). A renter who
never confirms gets nothing ejected and the order is cancelled. Then the books prove.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from cloud import money
from cloud.app import CTX, create_app
from cloud.config import CloudConfig
from cloud.db import payments, webhooks_received
from cloud.rentals import CabinetEvent
from tests.fakes.wechat_fake import WeChatPayFake
from tests.payments.cloud_helpers import login, merchant_with_cabinet, until

PARTNER, PARTNER_NAME = "1900000200", "某某充电宝运营有限公司"  # the merchant's own WeChat Pay account
MCHID, APPID, SERVICE_ID = "1900000109", "wxd678efh567hg6787", "2002000000000558128851361561536"
SERIAL, PUBLIC_KEY_ID = "3775B6A45ACD588826D15E583A95F5DD2F8E0D0A", "PUB_KEY_ID_0119000001092025061800000000"
TARIFF = {"currency": "CNY", "price_per_period": 200, "period_minutes": 30, "free_minutes": 5,
          "daily_cap": 2000, "total_cap": 9900, "timezone": "Asia/Shanghai"}  # fmt: skip


class Clock:
    """Real time plus an offset the test moves."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def pem(key: rsa.RSAPrivateKey, public: bool = False) -> str:
    if public:
        return (
            key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture
async def world(aiohttp_client, db_url, tmp_path, monkeypatch, unused_tcp_port):  # type: ignore[no-untyped-def]
    merchant, platform = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))
    apiv3 = "a12d3924fd499edac8a5efc0e1b2c3d4"
    fake = WeChatPayFake(mchid=MCHID, appid=APPID, service_id=SERVICE_ID, merchant_serial_no=SERIAL,
                         merchant_public_key=merchant.public_key(), platform_private_key=platform,
                         apiv3_key=apiv3, platform_public_key_id=PUBLIC_KEY_ID).start()  # fmt: skip
    key_file = tmp_path / "apiclient_key.pem"
    key_file.write_text(pem(merchant))
    monkeypatch.setenv("WECHAT_APIV3_KEY", apiv3)
    monkeypatch.setenv("WECHAT_PAY_PUBLIC_KEY", pem(platform, public=True))
    notify = f"http://127.0.0.1:{unused_tcp_port}/api/payments/wechat/notify"
    cfg = CloudConfig(
        database=db_url,
        provider="wechat",
        provider_settings={
            "wechat": {
                "mchid": MCHID,
                "appid": APPID,
                "service_id": SERVICE_ID,
                "merchant_serial_no": SERIAL,
                "notify_url": notify,
                "private_key_file": str(key_file),
                "apiv3_key_env": "WECHAT_APIV3_KEY",
                "platform_public_key_id": PUBLIC_KEY_ID,
                "platform_public_key_env": "WECHAT_PAY_PUBLIC_KEY",
                "gateway": fake.base_url,
                "profit_sharing": True,
            }
        },
        scrypt_n=2**10,
        webhook_secret="whsec-test",
        mode="sandbox",
        confirm_timeout_s=60,
    )
    sent: list = []
    # the cloud's own clock (the adapter signs its requests with it; WeChat allows 5 minutes of skew)
    clock = Clock()
    app = create_app(cfg, clock=clock, command_sink=sent.append, background=False)
    from aiohttp.test_utils import TestServer

    client = await aiohttp_client(TestServer(app, port=unused_tcp_port))
    client.sent = sent
    client.clock = clock
    ctx = client.server.app[CTX]
    ops = await login(client, "ops@example.com", operator=True)
    fake.known_merchants[PARTNER] = PARTNER_NAME
    mid = await merchant_with_cabinet(client, ops, "CNY", "Asia/Shanghai", TARIFF, ["wechat"], PARTNER)
    client.ops, client.mid = ops, mid
    try:
        yield client, ctx, fake
    finally:
        fake.stop()


async def renter(client, email: str, openid: str) -> dict:  # type: ignore[no-untyped-def]
    me = await login(client, email)
    r = await client.post("/api/me/payment-methods", headers=me, json={"provider": "wechat", "token": openid})
    assert r.status == 201, await r.text()
    return me


async def test_a_deposit_free_rental_ejects_on_the_confirmation_and_is_paid_at_the_return(world) -> None:
    await deposit_free_rental(world)


async def test_notifications_sent_before_the_answers_they_confirm_still_take_effect(world) -> None:
    """WeChat may notify before its API answers: USER_CONFIRM before the create call returns,
    USER_PAID while the complete call is still running, so before the capture is recorded. The
    sweep applies such a notification again once its answer is recorded (a flake of the suite
    under load, made deterministic here)."""
    world[2].notify_before_answer = True
    await deposit_free_rental(world)


async def deposit_free_rental(world) -> None:  # type: ignore[no-untyped-def]
    client, ctx, fake = world
    me = await renter(client, "li@example.com", "o-renter-1")
    r = await client.post("/api/rentals", headers=me, json={"cabinet_id": "CAB-1"})
    assert r.status == 202, await r.text()
    body = await r.json()
    assert (body["provider"], body["hold_amount"], body["status"]) == (
        "wechat",
        9900,
        "awaiting_confirmation",
    )
    assert body["client_action"]["businessType"] == "wxpayScoreUse" and client.sent == []
    hold_ref = ctx.rentals.rental(body["rental_id"])["hold_ref"]

    assert await asyncio.to_thread(
        fake.user_confirm, hold_ref, "o-renter-1", dict(body["client_action"]["extraData"])
    )
    await until(lambda: client.sent, "the eject after the renter's confirmation")
    assert [c.args["rental_id"] for c in client.sent] == [body["rental_id"]]
    ctx.rentals.on_rental_started("CAB-1", CabinetEvent("CAB-1", 1, "e1", "rental_started", client.clock(), 10.0, "b",
                                                        {"rental_id": body["rental_id"], "sn": "S1"}))  # fmt: skip
    await asyncio.to_thread(
        ctx.rentals.on_battery_returned,
        "CAB-1",
        CabinetEvent("CAB-1", 2, "e2", "battery_returned", client.clock(), 10.0 + 2700, "b", {"sn": "S1"}),
    )
    rental = ctx.rentals.rental(body["rental_id"])
    assert (rental["fee"], rental["captured"], rental["payment_status"]) == (400, 400, "paid")

    def confirmed() -> bool:
        with ctx.engine.connect() as conn:
            return (
                "confirmed"
                in conn.execute(
                    select(payments.c.status).where(
                        payments.c.rental_id == body["rental_id"], payments.c.kind == "capture"
                    )
                )
                .scalars()
                .all()
            )

    def notified() -> bool:
        with ctx.engine.connect() as conn:
            return (
                conn.execute(
                    select(webhooks_received.c.event_id).where(webhooks_received.c.type == "hold.captured")
                ).first()
                is not None
            )

    await until(notified, "WeChat's USER_PAID notification")
    if not confirmed():  # it came before the capture was recorded: the sweep applies it again
        await asyncio.to_thread(ctx.housekeeping)
    assert confirmed()
    assert len(client.sent) == 1  # the later notifications eject nothing more
    assert money.check(ctx.engine) == []

    # the merchant's share, paid out of that payment by profit sharing (分账), once per reference
    await asyncio.to_thread(ctx.providers["wechat"].add_receiver, PARTNER, PARTNER_NAME, "PARTNER")
    share = 400 * 2500 // 10_000
    r = await client.post(f"/api/merchants/{client.mid}/payouts", headers=client.ops,
                          json={"amount": share, "currency": "CNY", "reference": "2026-12"})  # fmt: skip
    assert r.status == 201, await r.text()
    payout = await r.json()
    assert [(p["amount"], p["provider"]) for p in payout["pieces"]] == [(share, "wechat")]
    again = await (await client.post(f"/api/merchants/{client.mid}/payouts", headers=client.ops,
                                     json={"amount": share, "currency": "CNY", "reference": "2026-12"})).json()  # fmt: skip
    assert again["pieces"] == payout["pieces"] and fake.effects["profitsharing"] == 1
    r = await client.post(f"/api/merchants/{client.mid}/payouts", headers=client.ops,
                          json={"amount": 1, "currency": "CNY", "reference": "2026-12b"})  # fmt: skip
    assert r.status == 400  # nothing of that payment's share is left to pay out
    assert money.check(ctx.engine) == []


async def test_a_renter_who_never_confirms_gets_nothing_and_the_order_is_cancelled(world) -> None:
    client, ctx, fake = world
    me = await renter(client, "wang@example.com", "o-renter-2")
    body = await (await client.post("/api/rentals", headers=me, json={"cabinet_id": "CAB-1"})).json()
    hold_ref = ctx.rentals.rental(body["rental_id"])["hold_ref"]
    client.clock.advance(61)  # past confirm_timeout_s
    await asyncio.to_thread(ctx.housekeeping)
    rental = ctx.rentals.rental(body["rental_id"])
    assert (rental["status"], rental["hold_status"]) == ("aborted", "voided") and client.sent == []
    assert fake.orders[hold_ref]["state"] == "REVOKED"
    assert money.check(ctx.engine) == []
