"""Disputes: a renter opens one per rental, an operator refunds (through billing) or rejects, audited."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from cloud import money
from cloud.app import CTX, create_app
from cloud.config import CloudConfig
from cloud.db import audit_log, disputes, journal_entries, payments
from cloud.disputes import DisputeConflict, DisputeError, DisputeNotFound, Disputes
from cloud.rentals import CabinetEvent

HOUR = 3600
PW = "correct horse battery"


def finished_rental(world, clock, user, hours=4, sn="SN-1"):
    """A rental taken at CAB-A and returned ``hours`` later; the fee is captured."""
    start = world.service.start_app_rental(user, "CAB-A")
    world.service.on_rental_started(
        "CAB-A",
        world.event("CAB-A", "rental_started", mono=100.0, boot="a1", rental_id=start.rental_id, sn=sn),
    )
    clock.advance(hours * HOUR)
    world.service.on_battery_returned(
        "CAB-A", world.event("CAB-A", "battery_returned", mono=100.0 + hours * HOUR, boot="a1", sn=sn)
    )
    return start.rental_id


def assert_books_balance(engine):
    problems = money.check(engine)
    assert problems == [], "\n".join(map(str, problems))


def audit_rows(engine, action):
    with engine.connect() as conn:
        return conn.execute(select(audit_log).where(audit_log.c.action == action)).mappings().all()


@pytest.fixture
def desk(world, clock):
    return Disputes(world.engine, world.service.billing, clock)


def test_refund_decision_pays_back_through_billing_and_the_books_balance(world, clock, desk):
    user = world.renter()
    ops = world.accounts.register("ops@example.com", PW, role="operator").id
    rental_id = finished_rental(world, clock, user)  # fee 1000, merchant share 30 %
    d = desk.open(user, rental_id, "  charged although I returned it at once  ", amount_claimed=400)
    assert (d.status, d.reason, d.amount_claimed, d.currency) == (
        "open",
        "charged although I returned it at once",
        400,
        "EUR",
    )
    assert [x.id for x in desk.find("open")] == [d.id]
    resolved = desk.resolve(d.id, "refund", "return sensor was late", ops)  # amount: the claim
    assert (resolved.status, resolved.refund_amount, resolved.resolved_by) == ("refunded", 400, ops)
    assert desk.find("open") == [] and [x.id for x in desk.find("refunded")] == [d.id]
    r = world.service.rental(rental_id)
    assert (r["captured"], r["refunded"]) == (1000, 400)
    assert world.sandbox.hold_status(r["hold_ref"])["refunded"] == 400
    with world.engine.connect() as conn:
        refunds = conn.execute(select(payments).where(payments.c.kind == "refund")).mappings().all()
        entries = conn.execute(select(journal_entries.c.kind).where(journal_entries.c.kind == "refund")).all()
        bal = money.balances(conn)
    assert [(p["amount"], json.loads(p["detail"])["reason"]) for p in refunds] == [
        (400, f"dispute {d.id}: return sensor was late")
    ]
    assert len(entries) == 1
    assert bal[(money.merchant_payable(world.merchant.id), "EUR")] == -180  # 30 % of 600
    [audit] = audit_rows(world.engine, "dispute_refunded")
    assert (audit["actor_user_id"], audit["target"]) == (ops, f"dispute:{d.id}")
    assert json.loads(audit["detail"])["amount"] == 400
    assert len(audit_rows(world.engine, "refund")) == 1  # billing's own audit row of the money
    assert_books_balance(world.engine)


def test_reject_moves_no_money_is_audited_and_frees_the_rental_for_a_new_dispute(world, clock, desk):
    user = world.renter()
    rental_id = finished_rental(world, clock, user)
    d = desk.open(user, rental_id, "too expensive")
    with pytest.raises(DisputeConflict, match="already has an open dispute"):
        desk.open(user, rental_id, "still too expensive")
    rejected = desk.resolve(d.id, "reject", "the tariff was shown before renting", 7)
    assert (rejected.status, rejected.refund_amount, rejected.note) == (
        "rejected",
        None,
        "the tariff was shown before renting",
    )
    assert world.service.rental(rental_id)["refunded"] == 0
    assert json.loads(audit_rows(world.engine, "dispute_rejected")[0]["detail"])["decision"] == "reject"
    with pytest.raises(DisputeConflict, match="is rejected, not open"):
        desk.resolve(d.id, "refund", "changed my mind", 7, amount=10)
    again = desk.open(user, rental_id, "I have a receipt now")
    assert [x.id for x in desk.of_user(user)] == [again.id, d.id]
    assert_books_balance(world.engine)


def test_amounts_out_of_range_and_foreign_rentals_are_refused(world, clock, desk):
    user = world.renter()
    other = world.renter("bo@example.com")
    rental_id = finished_rental(world, clock, user)  # paid 1000
    with pytest.raises(DisputeNotFound):
        desk.open(other, rental_id, "not mine")
    with pytest.raises(DisputeNotFound):
        desk.open(user, "R-nope", "no such rental")
    with pytest.raises(DisputeError, match=r"amount_claimed must be 1\.\.1000"):
        desk.open(user, rental_id, "too much", amount_claimed=1001)
    with pytest.raises(DisputeError, match="reason"):
        desk.open(user, rental_id, "   ")
    d = desk.open(user, rental_id, "slow charging")
    with pytest.raises(DisputeError, match="claims no amount"):
        desk.resolve(d.id, "refund", "ok", 7)
    with pytest.raises(DisputeError, match="only for decision 'refund'"):
        desk.resolve(d.id, "reject", "no", 7, amount=5)
    desk.resolve(d.id, "refund", "partly right", 7, amount=700)
    d2 = desk.open(user, rental_id, "and the rest")
    with pytest.raises(DisputeError, match=r"refund must be 1\.\.300 .*refunded 700"):
        desk.resolve(d2.id, "refund", "all of it", 7, amount=301)
    assert desk.dispute(d2.id).status == "open"
    pending = world.service.start_app_rental(other, "CAB-B").rental_id  # nothing paid yet
    with pytest.raises(DisputeError, match="nothing is paid"):
        desk.open(other, pending, "wrong hold", amount_claimed=1)
    assert desk.open(other, pending, "the battery never came out").status == "open"
    assert_books_balance(world.engine)


def test_a_refund_billing_refuses_leaves_the_dispute_open(make_world, clock):
    world = make_world(hold_ttl_s=20 * HOUR)
    desk = Disputes(world.engine, world.service.billing, clock)
    user = world.renter()
    start = world.service.start_app_rental(user, "CAB-A")
    world.service.on_rental_started(
        "CAB-A",
        world.event("CAB-A", "rental_started", mono=1.0, boot="a1", rental_id=start.rental_id, sn="S"),
    )
    clock.advance(15 * HOUR)
    assert world.service.sweep().captured_early == [start.rental_id]  # paid 3500, still active
    d = desk.open(user, start.rental_id, "I returned it hours ago", amount_claimed=1000)
    with pytest.raises(ValueError, match="only finished rentals are refunded"):
        desk.resolve(d.id, "refund", "return lost", 7)
    assert desk.dispute(d.id).status == "open"
    assert audit_rows(world.engine, "dispute_refunded") == []
    assert_books_balance(world.engine)


def test_two_operators_resolving_at_once_refund_once(world, clock, desk):
    user = world.renter()
    rental_id = finished_rental(world, clock, user)
    d = desk.open(user, rental_id, "double charge", amount_claimed=300)

    def resolve(actor):
        try:
            return desk.resolve(d.id, "refund", f"operator {actor}", actor).status
        except DisputeConflict:
            return "conflict"

    with ThreadPoolExecutor(4) as pool:
        outcomes = sorted(pool.map(resolve, [1, 2, 3, 4]))
    assert outcomes == ["conflict"] * 3 + ["refunded"]
    assert world.service.rental(rental_id)["refunded"] == 300
    assert len(audit_rows(world.engine, "dispute_refunded")) == 1
    assert_books_balance(world.engine)


def test_database_allows_one_unresolved_dispute_per_rental(world, clock, desk):
    user = world.renter()
    rental_id = finished_rental(world, clock, user)
    desk.open(user, rental_id, "first")
    row = dict(rental_id=rental_id, user_id=user, reason="x", currency="EUR", opened_at=clock())
    with world.engine.begin() as conn:
        conn.execute(insert(disputes).values(**row, status="rejected"))  # resolved ones may pile up
    with pytest.raises(IntegrityError):
        with world.engine.begin() as conn:
            conn.execute(insert(disputes).values(**row, status="resolving"))
    with ThreadPoolExecutor(4) as pool:
        other = finished_rental(world, clock, user, sn="SN-2")

        def try_open(i):
            try:
                return desk.open(user, other, f"try {i}").status
            except DisputeConflict:
                return "conflict"

        assert sorted(pool.map(try_open, range(4))) == ["conflict"] * 3 + ["open"]


# --- over HTTP -----------------------------------------------------------------------------


@pytest.fixture
async def client(aiohttp_client, db_url, clock):
    cfg = CloudConfig(database=db_url, scrypt_n=2**10, webhook_secret="whsec")
    app = create_app(cfg, clock=clock, command_sink=lambda cmd: None, background=False)
    return await aiohttp_client(app)


async def bearer(client, email, role="renter"):
    ctx = client.server.app[CTX]
    await asyncio.to_thread(ctx.accounts.register, email, PW, role=role)
    r = await client.post("/api/login", json={"email": email, "password": PW})
    assert r.status == 200, await r.text()
    return {"Authorization": f"Bearer {(await r.json())['token']}"}


async def paid_rental(client, clock, renter):
    """Set up a merchant and cabinet over the API, rent 45 min as ``renter``: fee 400 paid."""
    ops = await bearer(client, "setup-ops@example.com", "operator")
    r = await client.post(
        "/api/merchants", headers=ops, json={"name": "Cafe", "revenue_share_bp": 2500, "currency": "EUR"}
    )
    mid = (await r.json())["id"]
    vid = (await (await client.post(f"/api/merchants/{mid}/venues", headers=ops, json={"name": "V"})).json())[
        "id"
    ]
    tariff = {
        "currency": "EUR",
        "price_per_period": 200,
        "period_minutes": 30,
        "free_minutes": 5,
        "total_cap": 3000,
    }
    r = await client.post(
        "/api/tariffs",
        headers=ops,
        json={"name": "std", "merchant_id": mid, "default": True, "tariff": tariff},
    )
    assert r.status == 201, await r.text()
    assert (
        await client.post("/api/cabinets", headers=ops, json={"id": "CAB-1", "venue_id": vid})
    ).status == 201
    assert (await client.put("/api/me/card", headers=renter, json={"card_token": "tok_ok"})).status == 200
    r = await client.post("/api/rentals", headers=renter, json={"cabinet_id": "CAB-1"})
    rental_id = (await r.json())["rental_id"]
    service = client.server.app[CTX].rentals
    body = {"rental_id": rental_id, "sn": "S1"}
    service.on_rental_started(
        "CAB-1", CabinetEvent("CAB-1", 1, "e1", "rental_started", clock(), 10.0, "b", body)
    )
    clock.advance(45 * 60)
    service.on_battery_returned(
        "CAB-1", CabinetEvent("CAB-1", 2, "e2", "battery_returned", clock(), 2710.0, "b", {"sn": "S1"})
    )
    return rental_id


async def test_renter_disputes_and_operator_refunds_over_http(client, clock):
    ana = await bearer(client, "ana@example.com")
    bo = await bearer(client, "bo@example.com")
    ops = await bearer(client, "ops@example.com", "operator")
    rental_id = await paid_rental(client, clock, ana)
    url = f"/api/me/rentals/{rental_id}/disputes"
    r = await client.post(url, headers=bo, json={"reason": "not my rental"})
    assert r.status == 404 and (await r.json())["error"] == "not_found"
    r = await client.post(url, headers=ana, json={"reason": "too much", "amount_claimed": 401})
    assert r.status == 400 and "1..400" in (await r.json())["message"]
    r = await client.post(url, headers=ana, json={"reason": "charged twice", "amount_claimed": 200})
    assert r.status == 201, await r.text()
    dispute = await r.json()
    assert (dispute["status"], dispute["amount_claimed"], "resolved_by" in dispute) == ("open", 200, False)
    r = await client.post(url, headers=ana, json={"reason": "again"})
    assert r.status == 409 and (await r.json())["error"] == "conflict"
    assert [d["id"] for d in await (await client.get("/api/me/disputes", headers=ana)).json()] == [
        dispute["id"]
    ]
    assert await (await client.get("/api/me/disputes", headers=bo)).json() == []
    assert (await client.get("/api/disputes", headers=ana)).status == 403
    listed = await (await client.get("/api/disputes", headers=ops, params={"status": "open"})).json()
    assert [d["id"] for d in listed] == [dispute["id"]]
    r = await client.get("/api/disputes", headers=ops, params={"status": "closed"})
    assert r.status == 400
    r = await client.get("/api/disputes", headers=ops, params={"user_id": "me"})
    assert r.status == 400
    resolve = f"/api/disputes/{dispute['id']}/resolve"
    r = await client.post(resolve, headers=ops, json={"decision": "refund", "amount": 401, "note": "x"})
    assert r.status == 400 and "refund must be 1..400" in (await r.json())["message"]
    r = await client.post(resolve, headers=ops, json={"decision": "refund", "amount": 150, "note": "partly"})
    assert r.status == 200, await r.text()
    assert ((await r.json())["status"], (await r.json())["refund_amount"]) == ("refunded", 150)
    r = await client.post(resolve, headers=ops, json={"decision": "reject", "note": "again"})
    assert r.status == 409
    for path in ("/api/disputes/abc/resolve", "/api/disputes/999/resolve"):
        r = await client.post(path, headers=ops, json={"decision": "reject", "note": "n"})
        assert r.status == 404, path
    r = await client.post(resolve, headers=ops, json={"decision": "maybe", "note": "n"})
    assert r.status == 400
    receipt = await (await client.get(f"/api/me/rentals/{rental_id}/receipt", headers=ana)).json()
    assert (receipt["refunded"], receipt["paid"]) == (150, 250)
    ana_id = (await (await client.get("/api/me", headers=ana)).json())["id"]
    r = await client.get("/api/disputes", headers=ops, params={"status": "all", "user_id": str(ana_id)})
    assert [(d["id"], d["status"]) for d in await r.json()] == [(dispute["id"], "refunded")]
    assert await (await client.get("/api/money/check", headers=ops)).json() == {"ok": True, "problems": []}


@pytest.mark.parametrize("raw", ["²", "٣", "1" * 30, "9" * 5000, "-1", "+1", " 1"])
async def test_a_path_or_query_number_that_is_not_plain_ascii_digits_is_a_4xx_not_a_500(client, raw):
    """str.isdigit took '²' and '٣' (int() refuses them) and int() refuses 5,000 digits: each was a 500."""
    ops = await bearer(client, "ops-digits@example.com", "operator")
    for path in (f"/api/disputes/{raw}/resolve", f"/api/merchants/{raw}/venues"):
        r = await client.post(path, headers=ops, json={"action": "reject", "reason": "x", "name": "V"})
        assert r.status in (400, 404), (path, r.status, await r.text())
    r = await client.get("/api/disputes", headers=ops, params={"user_id": raw})
    assert r.status == 400, (r.status, await r.text())
    r = await client.post(f"/api/fleet/alerts/{raw}/ack", headers=ops)
    assert r.status in (400, 404), (r.status, await r.text())


def test_decimal_takes_only_small_ascii_numbers():
    from cloud.params import decimal

    assert [decimal(x) for x in ("0", "42", str(2**62))] == [0, 42, 2**62]
    assert [decimal(x) for x in (None, "", "²", "4 2", str(2**62 + 1), "1" * 20)] == [None] * 6
    assert decimal("7", lo=1, hi=5) is None and decimal("3", lo=1, hi=5) == 3
