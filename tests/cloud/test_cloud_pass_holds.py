"""Offline passes are paid for before use (issue 11.1): holds at issue, revocation, fleet-wide over-use.

Before the fix a pass rental got its hold only when its start reached the cloud, on whatever
card was on file then: a renter could take a pass, swap the card for one that declines (or
delete the account) and walk off with packs. These tests fail on that code.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace

import pytest
from sqlalchemy import select

from cloud import money
from cloud.app import CTX, create_app
from cloud.config import CloudConfig
from cloud.db import fleet_alerts, pass_holds, passes, sandbox_holds
from cloud.pricing import Tariff
from cloud.rentals import RentalRefused
from sync.signing import MemoryReplayStore, Signer, Verifier, generate_private_key
from sync.topics import Channel, topic
from sync.transport import MqttOptions, MqttTransport
from tests.conftest import until

HOUR = 3600.0
CAP = 3500  # EUROPE_TARIFF's total_cap: the most one rental can cost


def books_balance(world) -> None:
    assert money.check(world.engine) == []


def holds_of(world, pass_id: str) -> list[dict]:
    with world.engine.connect() as conn:
        rows = conn.execute(
            select(pass_holds, sandbox_holds.c.status.label("at_provider"), sandbox_holds.c.card_token)
            .join(sandbox_holds, sandbox_holds.c.id == pass_holds.c.hold_ref, isouter=True)
            .where(pass_holds.c.pass_id == pass_id)
            .order_by(pass_holds.c.k)
        ).mappings()
        return [dict(r) for r in rows]


def pass_row(world, pass_id: str) -> dict:
    with world.engine.connect() as conn:
        return dict(conn.execute(select(passes).where(passes.c.pass_id == pass_id)).mappings().one())


def renter_holds_balance(world, user: int) -> int:
    with world.engine.connect() as conn:
        return money.balances(conn).get((money.renter_holds(user), "EUR"), 0)


def rent_and_return(world, cabinet: str, pass_id: str, rental_id: str, sn: str, hours: float) -> None:
    t0 = world.clock()
    start = world.event(cabinet, "rental_started", wall=t0, mono=10.0, boot=f"{cabinet}-b", rental_id=rental_id,
                        sn=sn, slot=1, source="pass", pass_id=pass_id)  # fmt: skip
    world.service.on_rental_started(cabinet, start)
    end = world.event(cabinet, "battery_returned", wall=t0 + hours * HOUR, mono=10.0 + hours * HOUR,
                      boot=f"{cabinet}-b", sn=sn, rental_id=rental_id)  # fmt: skip
    world.service.on_battery_returned(cabinet, end)


def test_pass_holds_are_placed_at_issue_for_the_most_the_pass_can_cost(world) -> None:
    user = world.renter()
    world.service.issue_pass(user, "P-3", world.clock() + 86400, 3)
    held = holds_of(world, "P-3")
    assert [(h["status"], h["amount"], h["at_provider"], h["card_token"]) for h in held] == [
        ("held", CAP, "held", "tok_ok")
    ] * 3
    assert pass_row(world, "P-3")["hold_status"] == "held"
    assert renter_holds_balance(world, user) == 3 * CAP
    books_balance(world)


def test_a_card_that_refuses_the_holds_refuses_the_pass_and_holds_nothing(world, monkeypatch) -> None:
    user = world.renter(card="tok_limit_3000")  # below one rental's cap
    with pytest.raises(RentalRefused) as refused:
        world.service.issue_pass(user, "P-NO", world.clock() + 86400, 2)
    assert refused.value.code == "insufficient_funds"
    assert [h["status"] for h in holds_of(world, "P-NO")] == ["declined", "declined"]
    # a card that takes the first hold and refuses the second: the first is voided, all or nothing
    authorize = world.sandbox.authorize

    def second_refused(card, amount, currency, key):
        return authorize("tok_insufficient" if key.endswith(":1") else card, amount, currency, key)

    monkeypatch.setattr(world.sandbox, "authorize", second_refused)
    world.accounts.set_card(user, "tok_ok")
    with pytest.raises(RentalRefused, match=r"2 x 35\.00 EUR"):
        world.service.issue_pass(user, "P-HALF", world.clock() + 86400, 2)
    assert [(h["status"], h["at_provider"]) for h in holds_of(world, "P-HALF")] == [
        ("released", "voided"),
        ("declined", None),
    ]
    assert {pass_row(world, p)["hold_status"] for p in ("P-NO", "P-HALF")} == {"declined"}
    assert renter_holds_balance(world, user) == 0
    books_balance(world)


def test_a_card_swapped_after_issue_still_pays_the_pass_rental_from_the_issue_hold(world) -> None:
    user = world.renter()
    world.service.issue_pass(user, "P-SWAP", world.clock() + 86400, 1)
    world.accounts.set_card(user, "tok_decline")  # the attack: a card that declines everything
    p = pass_row(world, "P-SWAP")
    assert (p["revoked_at"] is not None, p["revoke_reason"]) == (True, "card changed")
    # a cabinet that has not had the new config yet still rents on the pass
    rent_and_return(world, "CAB-A", "P-SWAP", "R-SWAP", "SN-1", 2.0)
    r = world.service.rental("R-SWAP")
    assert (r["status"], r["fee"], r["captured"], r["payment_status"]) == ("closed", 500, 500, "paid")
    assert r["hold_ref"] == holds_of(world, "P-SWAP")[0]["hold_ref"]
    assert renter_holds_balance(world, user) == 0
    books_balance(world)


def test_deleting_the_account_revokes_the_pass_and_its_late_rental_still_settles(world) -> None:
    user = world.renter()
    world.service.issue_pass(user, "P-DEL", world.clock() + 86400, 1)
    world.accounts.delete(user)  # no rental is open in the cloud yet: the cabinet is offline
    assert pass_row(world, "P-DEL")["revoke_reason"] == "account deleted"
    rent_and_return(world, "CAB-A", "P-DEL", "R-DEL", "SN-2", 1.0)
    r = world.service.rental("R-DEL")
    assert (r["fee"], r["captured"], r["payment_status"]) == (250, 250, "paid")
    books_balance(world)


def test_over_use_across_cabinets_is_recorded_billed_alerted_and_revokes_the_pass(world) -> None:
    user = world.renter()
    world.service.issue_pass(user, "P-ONE", world.clock() + 86400, 1)
    world.accounts.set_card(user, "tok_decline")
    rent_and_return(world, "CAB-A", "P-ONE", "R-A", "SN-A", 1.0)
    rent_and_return(world, "CAB-B", "P-ONE", "R-B", "SN-B", 1.0)  # each cabinet saw one use only
    first, second = world.service.rental("R-A"), world.service.rental("R-B")
    assert (first["status"], first["payment_status"], first["captured"]) == ("closed", "paid", 250)
    # the pack is out: recorded and billed; the declining card leaves a debt the renter sees
    assert (second["status"], second["fee"], second["payment_status"]) == ("closed", 250, "due")
    with world.engine.connect() as conn:
        found = conn.execute(select(fleet_alerts.c.cabinet_id, fleet_alerts.c.kind, fleet_alerts.c.severity,
                                    fleet_alerts.c.detail)).all()  # fmt: skip
    assert [(a.cabinet_id, a.kind, a.severity) for a in found] == [("CAB-B", "pass_overuse", "critical")]
    assert "number 2" in found[0].detail and "R-B" in found[0].detail
    world.service.on_rental_started("CAB-B", world.event("CAB-B", "rental_started", rental_id="R-B", sn="SN-B",
                                                         source="pass", pass_id="P-ONE"))  # fmt: skip
    with world.engine.connect() as conn:
        assert len(conn.execute(select(fleet_alerts.c.id)).all()) == 1  # a redelivery alerts once
    books_balance(world)


def test_over_use_with_a_good_card_is_charged_separately(world) -> None:
    user = world.renter()
    world.service.issue_pass(user, "P-OK", world.clock() + 86400, 1)
    rent_and_return(world, "CAB-A", "P-OK", "R-1", "SN-1", 1.0)
    rent_and_return(world, "CAB-B", "P-OK", "R-2", "SN-2", 1.0)
    second = world.service.rental("R-2")
    assert (second["payment_status"], second["captured"]) == ("paid", 250)
    assert second["hold_ref"] not in {h["hold_ref"] for h in holds_of(world, "P-OK")}
    assert pass_row(world, "P-OK")["revoke_reason"] == "over-use"
    books_balance(world)


def test_unused_pass_holds_are_released_once_the_pass_has_expired(world, clock) -> None:
    user = world.renter()
    world.service.issue_pass(user, "P-EXP", clock() + 4 * HOUR, 2)
    rent_and_return(world, "CAB-A", "P-EXP", "R-E", "SN-E", 1.0)
    clock.advance(4 * HOUR + 1)
    assert world.service.sweep().passes_released == []  # a late-syncing cabinet's rental may still come
    assert holds_of(world, "P-EXP")[1]["status"] == "held"
    clock.advance(world.service.pass_hold_grace_s)
    assert world.service.sweep().passes_released == ["P-EXP"]
    assert [(h["status"], h["at_provider"]) for h in holds_of(world, "P-EXP")] == [
        ("assigned", "captured"),
        ("released", "voided"),
    ]
    assert pass_row(world, "P-EXP")["hold_status"] == "released"
    assert world.service.sweep().passes_released == []
    assert renter_holds_balance(world, user) == 0
    books_balance(world)


# --- HTTP and the broker -----------------------------------------------------------------


def _seed(ctx) -> None:
    m = ctx.catalog.create_merchant("Cafe", 3000, "EUR", "UTC")
    ctx.catalog.create_tariff(
        "t", Tariff(currency="EUR", price_per_period=250, total_cap=CAP), m.id, default=True
    )
    venue = ctx.catalog.create_venue(m.id, "V")
    for cab in ("CAB-A", "CAB-B"):
        ctx.catalog.add_cabinet(cab, venue)


async def _renter(client, email: str, card: str) -> dict[str, str]:
    pw = "correct horse battery"
    await client.post("/api/users", json={"email": email, "password": pw})
    r = await client.post("/api/login", json={"email": email, "password": pw})
    auth = {"Authorization": f"Bearer {(await r.json())['token']}"}
    await client.put("/api/me/card", json={"card_token": card}, headers=auth)
    return auth


async def test_pass_refused_by_the_card_is_a_402_and_no_pass_exists(
    aiohttp_client, db_url, clock, tmp_path
) -> None:
    cfg = CloudConfig(database=db_url, scrypt_n=2**10, data_dir=str(tmp_path / "cloud"))
    app = create_app(cfg, clock=clock, background=False, signer=Signer(generate_private_key(), "k-test"))
    _seed(app[CTX])
    client = await aiohttp_client(app)
    ana = await _renter(client, "ana@example.com", "tok_decline")
    r = await client.post("/api/me/passes", json={"max_rentals": 2}, headers=ana)
    assert (r.status, (await r.json())["error"]) == (402, "card_declined")
    r = await client.post("/api/me/passes", json={"currency": "CNY"}, headers=ana)
    assert (r.status, (await r.json())["error"]) == (400, "bad_request")
    with app[CTX].engine.connect() as conn:
        refused = conn.execute(select(passes.c.pass_id, passes.c.hold_status)).all()
    assert [h for _, h in refused] == ["declined"]
    r = await client.get(f"/api/me/passes/{refused[0].pass_id}", headers=ana)
    assert r.status == 404  # never signed


async def test_a_card_change_republishes_every_cabinets_config_with_the_pass_revoked(
    aiohttp_client, db_url, tmp_path, broker
) -> None:
    signer = Signer(generate_private_key(), "k-test")
    cfg = CloudConfig.from_mapping(
        {"database": db_url, "broker_host": broker.host, "broker_port": broker.port, "mqtt_tls": False,
         "mqtt_client_id": f"cloud-{uuid.uuid4().hex[:6]}", "data_dir": str(tmp_path / "cloud"), "scrypt_n": 1024}
    )  # fmt: skip
    app = create_app(cfg, signer=signer, background=False)
    ctx = app[CTX]
    # no housekeeping during the test: only the revocation itself may publish the new configs
    ctx.fleet.settings = replace(ctx.fleet.settings, housekeeping_interval_s=3600)
    await asyncio.to_thread(_seed, ctx)
    client = await aiohttp_client(app)
    await ctx.fleet.wait_connected(10)
    ana = await _renter(client, "ana@example.com", "tok_ok")
    made = await (await client.post("/api/me/passes", json={"max_rentals": 1}, headers=ana)).json()
    for cab in ("CAB-A", "CAB-B"):  # the configs the cabinets hold before the revocation
        await ctx.fleet.publish_config(cab)

    watcher = MqttTransport(
        MqttOptions(host=broker.host, port=broker.port, client_id=f"watch-{uuid.uuid4().hex[:6]}",
                    clean_start=True, session_expiry_s=0),
        [(topic(cab, Channel.CFG), 1) for cab in ("CAB-A", "CAB-B")],
    )  # fmt: skip
    await watcher.start()
    revoked_at: dict[str, tuple[str, ...]] = {}

    async def read() -> None:
        verifiers = {
            c: Verifier({"k-test": signer.public_key}, c, MemoryReplayStore()) for c in ("CAB-A", "CAB-B")
        }
        async for msg in watcher.messages():
            cab = msg.topic.split("/")[2]
            revoked_at[cab] = verifiers[cab].verify_config(msg.payload).body.revoked_passes

    reader = asyncio.create_task(read())
    try:
        await until(lambda: len(revoked_at) == 2, 10, "the retained configs")
        assert revoked_at == {"CAB-A": (), "CAB-B": ()}
        r = await client.put("/api/me/card", json={"card_token": "tok_decline"}, headers=ana)
        assert r.status == 200
        await until(
            lambda: all(made["pass_id"] in v for v in revoked_at.values()),
            10,
            "the revocation on every cabinet",
        )
        assert await asyncio.to_thread(ctx.signatures.configs_behind_revocations) == []
    finally:
        reader.cancel()
        await watcher.close(publish_will=False)
