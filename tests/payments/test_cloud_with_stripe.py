"""The cloud's whole money path through Stripe: the real ``stripe`` SDK against the local fake,
the cloud's HTTP API on a real database, notifications posted by the fake to
``/api/payments/stripe/notify`` with its ``Stripe-Signature``.

A renter saves a card (SetupIntent), rents (a manual-capture PaymentIntent holds the cap),
returns (the fee is captured, the rest released), and the operator reconciles the day's balance
transactions and pays the merchant's share out through Connect. Then the books prove.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from cloud import money
from cloud.app import CTX, create_app
from cloud.config import CloudConfig
from cloud.reconcile import reconcile
from cloud.rentals import CabinetEvent
from tests.fakes.stripe_fake import StripeFake
from tests.payments.cloud_helpers import login, merchant_with_cabinet

START = datetime(2026, 3, 2, 10, 0, tzinfo=UTC).timestamp()
TARIFF = {"currency": "EUR", "price_per_period": 200, "period_minutes": 30, "free_minutes": 5,
          "daily_cap": 2000, "total_cap": 3000, "timezone": "Europe/Berlin"}  # fmt: skip


@pytest.fixture
def fake(monkeypatch):  # type: ignore[no-untyped-def]
    with StripeFake(start_at=START) as f:
        monkeypatch.setenv("STRIPE_SECRET_KEY", f.api_key)
        monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", f.webhook_secret)
        yield f


@pytest.fixture
async def client(aiohttp_client, db_url, fake, monkeypatch):  # type: ignore[no-untyped-def]
    cfg = CloudConfig(
        database=db_url,
        provider="stripe",
        provider_settings={"stripe": {"stripe_api_base": fake.url}},
        scrypt_n=2**10,
        webhook_secret="whsec-test",
        mode="sandbox",
    )
    sent: list = []
    app = create_app(cfg, clock=fake.now, command_sink=sent.append, background=False)
    c = await aiohttp_client(app)
    fake.webhook_url = str(c.make_url("/api/payments/stripe/notify"))
    c.sent = sent
    return c


async def test_a_rental_paid_through_stripe_from_card_to_payout(client, fake) -> None:
    ctx = client.server.app[CTX]
    stripe = ctx.providers["stripe"]
    ops = await login(client, "ops@example.com", operator=True)
    account = fake.add_account()
    mid = await merchant_with_cabinet(client, ops, "EUR", "Europe/Berlin", TARIFF, ["stripe"], account)

    me = await login(client, "ana@example.com")
    setup = await asyncio.to_thread(stripe.save_card, None, "user:ana:setup:0")
    assert setup["client_secret"]  # what the phone confirms with Stripe.js
    fake.confirm_setup(setup["setup_intent"], "4242424242424242")
    token = await asyncio.to_thread(stripe.confirmed_card_token, setup["setup_intent"])
    r = await client.post("/api/me/payment-methods", headers=me, json={"provider": "stripe", "token": token})
    assert r.status == 201, await r.text()

    r = await client.post("/api/rentals", headers=me, json={"cabinet_id": "CAB-1"})
    assert r.status == 201, await r.text()
    rent = await r.json()
    assert (rent["provider"], rent["hold_amount"], rent["status"]) == ("stripe", 3000, "ejecting")
    assert [c.cmd_id for c in client.sent] == [rent["command"]["cmd_id"]]
    rental = ctx.rentals.rental(rent["rental_id"])
    pi = fake.obj(rental["hold_ref"])
    assert (pi["capture_method"], pi["amount"], pi["status"]) == ("manual", 3000, "requires_capture")

    ctx.rentals.on_rental_started("CAB-1", CabinetEvent("CAB-1", 1, "e1", "rental_started", fake.now(), 10.0, "b",
                                                        {"rental_id": rent["rental_id"], "sn": "S1"}))  # fmt: skip
    fake.advance(45 * 60)
    ctx.rentals.on_battery_returned("CAB-1", CabinetEvent("CAB-1", 2, "e2", "battery_returned", fake.now(),
                                                          10.0 + 2700, "b", {"sn": "S1"}))  # fmt: skip
    rental = ctx.rentals.rental(rent["rental_id"])
    assert (rental["fee"], rental["captured"], rental["payment_status"]) == (400, 400, "paid")
    pi = fake.obj(rental["hold_ref"])
    assert (pi["status"], pi["amount_received"]) == ("succeeded", 400)  # the rest of the hold released

    deliveries = await asyncio.to_thread(fake.deliver, "fifo", 2)  # every event twice
    assert deliveries and all(200 <= d.status < 300 for d in deliveries), [
        (d.status, d.body[:80]) for d in deliveries
    ]

    day = datetime.fromtimestamp(fake.now(), UTC).date()
    lines = await asyncio.to_thread(stripe.statement, day)
    result = reconcile(ctx.engine, "stripe", lines, day, fake.now)
    assert result.ok, [str(m) for m in result.mismatches]
    assert result.matched >= 1 and result.fees.get("EUR", 0) < 0  # Stripe's fee is a line of its own

    r = await client.post(f"/api/merchants/{mid}/payouts", headers=ops,
                          json={"amount": 100, "currency": "EUR", "reference": "2026-03"})  # fmt: skip
    assert r.status == 201, await r.text()
    payout = await r.json()
    assert payout["status"] in ("pending", "paid") and payout["payout_ref"].startswith("tr_")
    assert fake.obj(payout["payout_ref"])["destination"] == account
    again = await client.post(f"/api/merchants/{mid}/payouts", headers=ops,
                              json={"amount": 100, "currency": "EUR", "reference": "2026-03"})  # fmt: skip
    assert (await again.json())["payout_ref"] == payout["payout_ref"] and fake.count("transfers.create") == 1
    assert money.check(ctx.engine) == []


async def test_a_card_that_needs_3d_secure_waits_for_the_renter_then_ejects(client, fake) -> None:
    ctx = client.server.app[CTX]
    stripe = ctx.providers["stripe"]
    ops = await login(client, "ops@example.com", operator=True)
    await merchant_with_cabinet(client, ops, "EUR", "Europe/Berlin", TARIFF, ["stripe"])
    me = await login(client, "bo@example.com")
    setup = await asyncio.to_thread(stripe.save_card, None, "user:bo:setup:0")
    fake.confirm_setup(setup["setup_intent"], "4000002760003184")  # every payment needs 3-D Secure
    token = await asyncio.to_thread(stripe.confirmed_card_token, setup["setup_intent"])
    await client.post("/api/me/payment-methods", headers=me, json={"provider": "stripe", "token": token})

    r = await client.post("/api/rentals", headers=me, json={"cabinet_id": "CAB-1"})
    assert r.status == 202, await r.text()
    body = await r.json()
    assert body["status"] == "awaiting_confirmation" and body["client_action"]["client_secret"]
    assert client.sent == []  # nothing ejects before the renter confirms
    fake.authenticate(body["client_action"]["payment_intent"])
    await asyncio.to_thread(fake.deliver, "fifo", 2)
    assert [c.args["rental_id"] for c in client.sent] == [
        body["rental_id"]
    ]  # one eject, from the notification
    assert ctx.rentals.rental(body["rental_id"])["hold_status"] == "held"
    assert money.check(ctx.engine) == []
