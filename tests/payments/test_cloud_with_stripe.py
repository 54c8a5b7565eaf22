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


async def paid_rental(client, fake) -> tuple:  # type: ignore[no-untyped-def]
    """A renter with a saved card rents for 45 minutes and pays 4.00 EUR; (ctx, rental row)."""
    ctx = client.server.app[CTX]
    stripe = ctx.providers["stripe"]
    ops = await login(client, "ops@example.com", operator=True)
    await merchant_with_cabinet(client, ops, "EUR", "Europe/Berlin", TARIFF, ["stripe"], fake.add_account())
    me = await login(client, "cy@example.com")
    setup = await asyncio.to_thread(stripe.save_card, None, "user:cy:setup:0")
    fake.confirm_setup(setup["setup_intent"], "4242424242424242")
    token = await asyncio.to_thread(stripe.confirmed_card_token, setup["setup_intent"])
    await client.post("/api/me/payment-methods", headers=me, json={"provider": "stripe", "token": token})
    rent = await (await client.post("/api/rentals", headers=me, json={"cabinet_id": "CAB-1"})).json()
    ctx.rentals.on_rental_started("CAB-1", CabinetEvent("CAB-1", 1, "e1", "rental_started", fake.now(), 10.0, "b",
                                                        {"rental_id": rent["rental_id"], "sn": "S1"}))  # fmt: skip
    fake.advance(45 * 60)
    ctx.rentals.on_battery_returned("CAB-1", CabinetEvent("CAB-1", 2, "e2", "battery_returned", fake.now(),
                                                          10.0 + 2700, "b", {"sn": "S1"}))  # fmt: skip
    await asyncio.to_thread(fake.deliver, "fifo")
    rental = ctx.rentals.rental(rent["rental_id"])
    assert (rental["captured"], rental["payment_status"]) == (400, "paid")
    return ctx, rental


@pytest.mark.parametrize("won", [True, False], ids=["won", "lost"])
@pytest.mark.parametrize("order", ["fifo", "lifo"])
async def test_a_dispute_is_booked_as_stripe_moves_the_money_and_the_day_reconciles(
    client, fake, won: bool, order: str
) -> None:
    """Stripe takes the disputed amount (and its fee) out of the balance when the dispute opens,
    and gives the amount back if it is won. The journal books the withdrawal and the
    reinstatement (before, a won dispute's reinstatement was a line the journal did not have,
    and reconciliation reported it), whatever order the notifications arrive in, each once."""
    ctx, rental = await paid_rental(client, fake)
    dp = fake.open_dispute(rental["hold_ref"])
    await asyncio.to_thread(fake.deliver, order, 2)
    r = ctx.rentals.rental(rental["id"])
    assert r["flag"] == "chargeback_open"
    assert money.check(ctx.engine) == []  # withheld while open: clearing + disputed still add up
    with ctx.engine.connect() as conn:
        assert money.balances(conn)[(money.PROVIDER_DISPUTED, "EUR")] == 400

    fake.close_dispute(dp, won=won)
    await asyncio.to_thread(fake.deliver, order, 2)
    r = ctx.rentals.rental(rental["id"])
    assert r["flag"] == ("chargeback_won" if won else "chargeback_lost")
    assert (r["refunded"], r["payment_status"]) == ((0, "paid") if won else (400, "due"))
    with ctx.engine.connect() as conn:
        assert money.balances(conn).get((money.PROVIDER_DISPUTED, "EUR"), 0) == 0
        assert money.balances(conn).get((money.PROVIDER_CLEARING, "EUR"), 0) == (400 if won else 0)
    assert money.check(ctx.engine) == []

    day = datetime.fromtimestamp(fake.now(), UTC).date()
    lines = await asyncio.to_thread(ctx.providers["stripe"].statement, day)
    assert {ln.provider_ref for ln in lines if ln.kind == "dispute"} == (
        {dp, f"{dp}:reinstated"} if won else {dp}
    )
    result = reconcile(ctx.engine, "stripe", lines, day, fake.now)
    assert result.ok, [str(m) for m in result.mismatches]


@pytest.fixture
async def two_rails(aiohttp_client, db_url, fake):  # type: ignore[no-untyped-def]
    """A cloud that speaks Stripe and the sandbox."""
    cfg = CloudConfig(
        database=db_url,
        provider="stripe",
        providers=["sandbox"],
        provider_settings={"stripe": {"stripe_api_base": fake.url}},
        scrypt_n=2**10,
        webhook_secret="whsec-test",
        mode="sandbox",
    )
    app = create_app(cfg, clock=fake.now, command_sink=lambda c: None, background=False)
    c = await aiohttp_client(app)
    fake.webhook_url = str(c.make_url("/api/payments/stripe/notify"))
    return c


async def test_a_rentals_later_holds_stay_with_the_provider_of_its_first(two_rails, fake) -> None:
    """The renter adds a sandbox card after renting with Stripe. The Stripe hold lapses during a
    long rental, so the fee needs a new hold at the return: it is placed at Stripe again, where
    the rental's captures and refunds go, not with the newer method at another provider."""
    client = two_rails
    ctx = client.server.app[CTX]
    stripe = ctx.providers["stripe"]
    ops = await login(client, "ops@example.com", operator=True)
    # the merchant prefers the sandbox rail; the renter has only a Stripe card at first
    await merchant_with_cabinet(client, ops, "EUR", "Europe/Berlin", TARIFF, ["sandbox", "stripe"])
    me = await login(client, "di@example.com")
    setup = await asyncio.to_thread(stripe.save_card, None, "user:di:setup:0")
    fake.confirm_setup(setup["setup_intent"], "4242424242424242")
    token = await asyncio.to_thread(stripe.confirmed_card_token, setup["setup_intent"])
    await client.post("/api/me/payment-methods", headers=me, json={"provider": "stripe", "token": token})
    rent = await (await client.post("/api/rentals", headers=me, json={"cabinet_id": "CAB-1"})).json()
    assert rent["provider"] == "stripe"
    first_hold = ctx.rentals.rental(rent["rental_id"])["hold_ref"]
    r = await client.post(
        "/api/me/payment-methods", headers=me, json={"provider": "sandbox", "token": "tok_ok"}
    )
    assert r.status == 201, await r.text()  # newer than the Stripe card, and the merchant prefers it

    ctx.rentals.on_rental_started("CAB-1", CabinetEvent("CAB-1", 1, "e1", "rental_started", fake.now(), 10.0, "b",
                                                        {"rental_id": rent["rental_id"], "sn": "S1"}))  # fmt: skip
    fake.advance(8 * 86400)  # past any card's authorization window: Stripe cancels the hold
    await asyncio.to_thread(fake.deliver, "fifo")
    ctx.rentals.on_battery_returned("CAB-1", CabinetEvent("CAB-1", 2, "e2", "battery_returned", fake.now(),
                                                          10.0 + 8 * 86400, "b", {"sn": "S1"}))  # fmt: skip
    rental = ctx.rentals.rental(rent["rental_id"])
    assert (rental["provider"], rental["fee"], rental["captured"], rental["payment_status"]) == (
        "stripe",
        3000,
        3000,
        "paid",
    )
    assert rental["hold_ref"] != first_hold and fake.obj(rental["hold_ref"])["object"] == "payment_intent"
    with ctx.engine.connect() as conn:
        from sqlalchemy import select

        from cloud.db import payments

        providers = set(
            conn.execute(
                select(payments.c.provider).where(payments.c.rental_id == rent["rental_id"])
            ).scalars()
        )
    assert providers == {"stripe"}
    assert money.check(ctx.engine) == []
