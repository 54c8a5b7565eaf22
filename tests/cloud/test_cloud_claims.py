"""What a cabinet may claim (issue 11.2): claims that fail are kept for a human, not applied.

Each attack is a cabinet (or a cloned cabinet certificate) telling the cloud something it has
no right to say. Before the checks in cloud/fleet/claims.py, ingest applied every one of them.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select, update

from cloud.app import CTX, create_app
from cloud.config import CloudConfig
from cloud.db import audit_log, cabinet_claims, commands, passes, rentals
from cloud.fleet import claims
from cloud.fleet.ingest import EventApplier
from cloud.fleet.view import alerts
from cloud.pricing import Tariff
from sync.messages import EventBatch, SlotSample, Telemetry, WireEvent

T0 = 1_789_963_200.0
BASE = 100_000.0  # both cabinets booted this long before T0
BOOT_A = "boot-a"
BOOT_B = "boot-b"


def ev(seq: int, type_: str, *, mono: float, boot: str, wall: float | None = None, **body) -> WireEvent:
    return WireEvent(
        seq, str(uuid.uuid4()), type_, T0 - BASE + mono if wall is None else wall, mono, boot, body
    )


def tech(seq: int, *, mono: float, boot: str) -> WireEvent:
    return ev(seq, "tech_action", mono=mono, boot=boot, technician="t1", action="check", detail="-")


def kept(engine, cabinet: str | None = None) -> list[dict]:
    return claims.list_claims(engine, "all", cabinet)


def claim_alerts(engine, cabinet: str) -> list[str]:
    return [a["kind"] for a in alerts(engine, cabinet) if a["kind"] in ("cabinet_claim", "return_unverified")]


class Fleet:
    """The world of tests/cloud/conftest.py with an applier and per-cabinet seqs and clocks."""

    def __init__(self, world) -> None:
        self.world = world
        self.applier = EventApplier(world.engine, world.service, world.clock)
        self.seq: dict[str, int] = {}

    def send(self, cabinet: str, *events: WireEvent) -> int:
        return self.applier.apply_batch(EventBatch(cabinet, tuple(events)), self.world.clock()).acked_seq

    def next(self, cabinet: str) -> int:
        self.seq[cabinet] = self.seq.get(cabinet, 0) + 1
        return self.seq[cabinet]

    def mono(self) -> float:
        """Both cabinets' monotonic clocks: seconds since their boot, BASE before T0."""
        return self.world.clock() - T0 + BASE

    def app_rental_started(self, user: int, cabinet: str = "CAB-A", sn: str = "PB000001") -> str:
        start = self.world.service.start_app_rental(user, cabinet)
        s = self.next(cabinet)
        self.send(cabinet, ev(s, "rental_started", mono=self.mono(), boot=BOOT_A, rental_id=start.rental_id,
                              sn=sn, slot=1, source="cloud", user=str(user), cmd_id=start.command.cmd_id))  # fmt: skip
        assert self.world.service.rental(start.rental_id)["status"] == "active"
        return start.rental_id

    def returned(self, cabinet: str, boot: str, sn: str, mono: float | None = None, **body) -> WireEvent:
        s = self.next(cabinet)
        return ev(s, "battery_returned", mono=self.mono() if mono is None else mono, boot=boot, slot=4,
                  sn=sn, soc=70, **body)  # fmt: skip


@pytest.fixture
def fleet(world) -> Fleet:
    return Fleet(world)


# --- returns -----------------------------------------------------------------------------------


def test_another_cabinet_cannot_close_a_rental_by_naming_it_with_another_battery(world, fleet) -> None:
    rid = fleet.app_rental_started(world.renter())
    world.clock.advance(3600)
    forged = fleet.returned("CAB-B", BOOT_B, "PB000777", rental_id=rid)
    assert fleet.send("CAB-B", forged) == 1  # acked: the cabinet's outbox moves on
    assert world.service.rental(rid)["status"] == "active"  # not closed
    (c,) = kept(world.engine, "CAB-B")
    assert (c["status"], c["applied"], c["rental_id"], c["event_id"]) == ("open", False, rid, forged.id)
    assert "PB000001" in c["reason"]
    assert claim_alerts(world.engine, "CAB-B") == ["cabinet_claim"]
    fleet.send("CAB-B", forged)  # redelivered: kept once, alerted once, still not applied
    assert len(kept(world.engine)) == 1 and claim_alerts(world.engine, "CAB-B") == ["cabinet_claim"]
    assert world.service.rental(rid)["status"] == "active"


def test_a_return_back_dated_before_the_take_is_kept_not_applied(world, fleet) -> None:
    rid = fleet.app_rental_started(world.renter())
    world.clock.advance(3 * 3600)
    # a cloned CAB-B dates the return two hours before the rental even began; a later dummy
    # event in the same batch is what anchors CAB-B's boot clock to the cloud's time
    back = fleet.returned("CAB-B", BOOT_B, "PB000001", mono=fleet.mono() - 5 * 3600)
    s = fleet.next("CAB-B")
    assert fleet.send("CAB-B", back, tech(s, mono=fleet.mono(), boot=BOOT_B)) == 2
    r = world.service.rental(rid)
    assert r["status"] == "active" and r["fee"] in (None, 0)
    (c,) = kept(world.engine, "CAB-B")
    assert c["status"] == "open" and "before rental" in c["reason"]


def test_a_return_back_dated_on_the_renting_cabinets_own_clock_is_kept(world, fleet) -> None:
    rid = fleet.app_rental_started(world.renter())  # at mono 0 of BOOT_A
    world.clock.advance(3600)
    back = fleet.returned("CAB-A", BOOT_A, "PB000001", mono=fleet.mono() - 3600 - 60)
    fleet.send("CAB-A", back)
    assert world.service.rental(rid)["status"] == "active"
    assert [c["status"] for c in kept(world.engine, "CAB-A")] == ["open"]


def test_an_honest_return_elsewhere_closes_and_waits_for_the_inventory_to_show_it(world, fleet) -> None:
    rid = fleet.app_rental_started(world.renter())
    world.clock.advance(90 * 60)
    back = fleet.returned("CAB-B", BOOT_B, "PB000001")
    fleet.send("CAB-B", back)
    r = world.service.rental(rid)
    assert (r["status"], r["end_cabinet_id"], r["fee"]) == ("closed", "CAB-B", 500)  # billed at once
    (c,) = kept(world.engine, "CAB-B")
    assert (c["status"], c["applied"], c["rental_id"]) == ("pending", True, rid)
    other = Telemetry("CAB-A", world.clock(), (SlotSample(4, world.clock(), "PB000001"),))
    assert claims.verify_from_telemetry(world.engine, other, world.clock()) == 0  # another cabinet's word
    old = Telemetry("CAB-B", back.at_wall - 1, (SlotSample(4, back.at_wall - 1, "PB000001"),))
    assert claims.verify_from_telemetry(world.engine, old, world.clock()) == 0  # taken before the return
    world.clock.advance(30)
    tm = Telemetry("CAB-B", back.at_wall + 30, (SlotSample(4, back.at_wall + 30, "PB000001", soc=72),))
    assert claims.verify_from_telemetry(world.engine, tm, world.clock()) == 1
    (c,) = kept(world.engine, "CAB-B")
    assert c["status"] == "accepted" and c["resolved_by"] is None and "telemetry" in c["resolution"]
    world.clock.advance(claims.RETURN_VERIFY_TIMEOUT_S * 2)
    assert claims.expire_pending(world.engine, world.clock()) == []
    assert claim_alerts(world.engine, "CAB-B") == []


def test_a_later_event_of_the_same_cabinet_naming_the_serial_verifies_the_return(world, fleet) -> None:
    fleet.app_rental_started(world.renter())
    world.clock.advance(600)
    fleet.send("CAB-B", fleet.returned("CAB-B", BOOT_B, "PB000001"))
    assert [c["status"] for c in kept(world.engine)] == ["pending"]
    world.clock.advance(600)  # offline: the battery is rented again from CAB-B
    s = fleet.next("CAB-B")
    fleet.send(
        "CAB-B", ev(s, "battery_removed_unexpected", mono=fleet.mono(), boot=BOOT_B, slot=4, sn="PB000001")
    )
    assert [c["status"] for c in kept(world.engine)] == ["accepted"]


def test_a_return_never_seen_in_the_inventory_is_opened_for_a_human_with_an_alert(world, fleet) -> None:
    rid = fleet.app_rental_started(world.renter())
    world.clock.advance(600)
    fleet.send("CAB-B", fleet.returned("CAB-B", BOOT_B, "PB000001"))
    world.clock.advance(claims.RETURN_VERIFY_TIMEOUT_S - 1)
    assert claims.expire_pending(world.engine, world.clock()) == []
    world.clock.advance(2)
    (cid,) = claims.expire_pending(world.engine, world.clock())
    c = claims.get_claim(world.engine, cid)
    assert (c["status"], c["applied"], c["rental_id"]) == ("open", True, rid)
    assert claim_alerts(world.engine, "CAB-B") == ["return_unverified"]
    assert claims.expire_pending(world.engine, world.clock()) == []  # once


# --- rental starts -----------------------------------------------------------------------------


def test_a_cabinet_cannot_start_an_app_rental_requested_at_another(world, fleet) -> None:
    user = world.renter()
    start = world.service.start_app_rental(user, "CAB-A")
    s = fleet.next("CAB-B")
    fleet.send("CAB-B", ev(s, "rental_started", mono=fleet.mono(), boot=BOOT_B, rental_id=start.rental_id,
                           sn="PB000001", slot=1, source="cloud", user=str(user), cmd_id=start.command.cmd_id))  # fmt: skip
    r = world.service.rental(start.rental_id)
    assert r["status"] == "pending" and r["start_event_id"] is None
    (c,) = kept(world.engine, "CAB-B")
    assert c["status"] == "open" and "CAB-A" in c["reason"]
    # nor abort it (voiding the renter's hold)
    s = fleet.next("CAB-B")
    fleet.send("CAB-B", ev(s, "rental_aborted", mono=fleet.mono(), boot=BOOT_B, rental_id=start.rental_id,
                           reason="jam", source="cloud"))  # fmt: skip
    assert world.service.rental(start.rental_id)["status"] == "pending"
    assert len(kept(world.engine, "CAB-B")) == 2


@pytest.mark.parametrize("attack", ["unknown_pass", "other_users_pass", "expired_pass", "revoked_pass"])
def test_a_pass_rental_needs_a_real_valid_pass_and_its_own_user(world, fleet, attack: str) -> None:
    victim = world.renter("victim@example.com")
    thief = world.renter("thief@example.com")
    world.service.issue_pass(victim, "P-V", world.clock() + 3600, 2)
    body = {"pass_id": "P-V", "user": str(victim)}
    match attack:
        case "unknown_pass":
            body = {"pass_id": "P-FORGED", "user": str(thief)}
        case "other_users_pass":
            body = {"pass_id": "P-V", "user": str(thief)}
        case "expired_pass":
            world.clock.advance(2 * 3600)
        case "revoked_pass":
            with world.engine.begin() as conn:
                conn.execute(update(passes).where(passes.c.pass_id == "P-V").values(revoked_at=world.clock()))
            world.clock.advance(60)
    s = fleet.next("CAB-A")
    out = fleet.send("CAB-A", ev(s, "rental_started", mono=fleet.mono(), boot=BOOT_A, rental_id="R-X",
                                 sn="PB000002", slot=2, source="pass", cmd_id=None, **body))  # fmt: skip
    assert out == 1
    with world.engine.connect() as conn:
        assert conn.execute(select(rentals.c.id).where(rentals.c.id == "R-X")).first() is None
    (c,) = kept(world.engine, "CAB-A")
    assert (c["status"], c["type"], c["rental_id"]) == ("open", "rental_started", "R-X")
    assert claim_alerts(world.engine, "CAB-A") == ["cabinet_claim"]


def test_a_valid_pass_rental_starts_for_the_passes_user(world, fleet) -> None:
    user = world.renter()
    world.service.issue_pass(user, "P-1", world.clock() + 3600, 2)
    world.clock.advance(60)
    s = fleet.next("CAB-A")
    fleet.send("CAB-A", ev(s, "rental_started", mono=fleet.mono(), boot=BOOT_A, rental_id="R-OK", sn="PB000002",
                           slot=2, source="pass", pass_id="P-1", user=str(user), cmd_id=None))  # fmt: skip
    r = world.service.rental("R-OK")
    assert (r["status"], r["user_id"], r["pass_id"]) == ("active", user, "P-1")
    assert kept(world.engine) == []


def test_a_pass_rental_from_an_unregistered_cabinet_is_kept_not_a_stuck_stream(world, fleet) -> None:
    user = world.renter()
    world.service.issue_pass(user, "P-1", world.clock() + 3600, 2)
    s = fleet.next("CAB-ROGUE")
    assert fleet.send("CAB-ROGUE", ev(s, "rental_started", mono=fleet.mono(), boot=BOOT_B, rental_id="R-R",
                                      sn="PB000002", slot=2, source="pass", pass_id="P-1", user=str(user))) == 1  # fmt: skip
    assert [c["status"] for c in kept(world.engine, "CAB-ROGUE")] == ["open"]


# --- commands ----------------------------------------------------------------------------------


def test_a_command_status_counts_only_from_the_cabinet_it_was_sent_to(world, fleet) -> None:
    start = world.service.start_app_rental(world.renter(), "CAB-A")
    cmd_id = start.command.cmd_id
    s1, s2 = fleet.next("CAB-B"), fleet.next("CAB-B")
    fleet.send("CAB-B", ev(s1, "command_received", mono=fleet.mono(), boot=BOOT_B, cmd_id=cmd_id, kind="eject", args={}),
               ev(s2, "command_result", mono=fleet.mono(), boot=BOOT_B, cmd_id=cmd_id, ok=False, detail="jammed"))  # fmt: skip
    with world.engine.connect() as conn:
        row = conn.execute(
            select(commands.c.status, commands.c.result).where(commands.c.cmd_id == cmd_id)
        ).one()
    assert (row.status, row.result) == ("queued", None)
    assert sorted(c["type"] for c in kept(world.engine, "CAB-B")) == ["command_received", "command_result"]
    assert [a["kind"] for a in alerts(world.engine, "CAB-B")] == ["cabinet_claim", "cabinet_claim"]
    s = fleet.next("CAB-A")  # the right cabinet still moves it
    fleet.send(
        "CAB-A",
        ev(s, "command_received", mono=fleet.mono(), boot=BOOT_A, cmd_id=cmd_id, kind="eject", args={}),
    )
    with world.engine.connect() as conn:
        assert (
            conn.execute(select(commands.c.status).where(commands.c.cmd_id == cmd_id)).scalar() == "received"
        )


# --- resolution --------------------------------------------------------------------------------


def test_resolve_applies_once_or_rejects(world, fleet) -> None:
    user = world.renter()
    world.service.issue_pass(user, "P-1", world.clock() + 3600, 2)
    world.clock.advance(2 * 3600)  # the cabinet's clock says the pass had expired
    s = fleet.next("CAB-A")
    fleet.send("CAB-A", ev(s, "rental_started", mono=fleet.mono(), boot=BOOT_A, rental_id="R-LATE", sn="PB000002",
                           slot=2, source="pass", pass_id="P-1", user=str(user)))  # fmt: skip
    (c,) = kept(world.engine)
    done = claims.resolve(
        world.engine, world.service, c["id"], "apply", "renter called, clock was wrong", 1, world.clock()
    )
    assert (done["status"], done["applied"], done["resolved_by"]) == ("accepted", True, 1)
    assert world.service.rental("R-LATE")["user_id"] == user
    with pytest.raises(claims.ClaimConflict):
        claims.resolve(world.engine, world.service, c["id"], "reject", "changed my mind", 1, world.clock())
    fleet.send(
        "CAB-A",
        ev(s + 1, "tech_action", mono=fleet.mono(), boot=BOOT_A, technician="t", action="a", detail="-"),
    )
    assert world.service.rental("R-LATE")["status"] == "active"


# --- the operator API --------------------------------------------------------------------------

PW = "correct horse battery"


@pytest.fixture
async def api(aiohttp_client, db_url, clock, tmp_path):
    cfg = CloudConfig(database=db_url, scrypt_n=2**10, data_dir=str(tmp_path / "cloud"))
    app = create_app(cfg, clock=clock, background=False)
    ctx = app[CTX]
    m = ctx.catalog.create_merchant("Cafe", 3000, "EUR", "UTC")
    ctx.catalog.create_tariff("t", Tariff(currency="EUR", price_per_period=250), m.id, default=True)
    venue = ctx.catalog.create_venue(m.id, "V")
    ctx.catalog.add_cabinet("CAB-A", venue)
    ctx.catalog.add_cabinet("CAB-B", venue)
    ctx.accounts.register("ops@example.com", PW, role="operator")
    renter = ctx.accounts.register("ana@example.com", PW)
    ctx.accounts.set_card(renter.id, "tok_ok")
    client = await aiohttp_client(app)
    return client, ctx, renter.id


async def login(client, email: str) -> dict[str, str]:
    r = await client.post("/api/login", json={"email": email, "password": PW})
    return {"Authorization": f"Bearer {(await r.json())['token']}"}


async def test_operators_list_and_resolve_claims_through_the_api_audited(api, clock) -> None:
    client, ctx, renter = api
    applier = EventApplier(ctx.engine, ctx.rentals, clock)
    start = ctx.rentals.start_app_rental(renter, "CAB-A")
    rid = start.rental_id
    applier.apply_batch(EventBatch("CAB-A", (ev(1, "rental_started", mono=clock() - T0 + BASE, boot=BOOT_A, rental_id=rid,
                        sn="PB000001", slot=1, source="cloud", user=str(renter), cmd_id=start.command.cmd_id),)), clock())  # fmt: skip
    clock.advance(3600)
    bad = ev(
        1,
        "battery_returned",
        mono=clock() - T0 + BASE,
        boot=BOOT_B,
        slot=3,
        sn="PB000009",
        rental_id=rid,
        soc=50,
    )
    applier.apply_batch(EventBatch("CAB-B", (bad,)), clock())
    ops, renter_auth = await login(client, "ops@example.com"), await login(client, "ana@example.com")

    assert (await client.get("/api/claims", headers=renter_auth)).status == 403
    listed = await (await client.get("/api/claims", headers=ops)).json()
    assert [(c["cabinet"], c["type"], c["status"], c["rental_id"]) for c in listed] == [
        ("CAB-B", "battery_returned", "open", rid)
    ]
    cid = listed[0]["id"]
    assert (await client.get("/api/claims?status=bogus", headers=ops)).status == 400
    r = await client.post(
        f"/api/claims/{cid}/resolve", json={"action": "apply", "reason": "x"}, headers=renter_auth
    )
    assert r.status == 403
    r = await client.post(f"/api/claims/{cid}/resolve", json={"action": "maybe", "reason": "x"}, headers=ops)
    assert r.status == 400
    assert (
        await client.post("/api/claims/999/resolve", json={"action": "reject", "reason": "x"}, headers=ops)
    ).status == 404
    r = await client.post(
        f"/api/claims/{cid}/resolve", json={"action": "reject", "reason": "cloned cert"}, headers=ops
    )
    assert r.status == 200, await r.text()
    assert (await r.json())["status"] == "rejected"
    assert ctx.rentals.rental(rid)["status"] == "active"
    again = await client.post(
        f"/api/claims/{cid}/resolve", json={"action": "apply", "reason": "x"}, headers=ops
    )
    assert again.status == 409
    with ctx.engine.connect() as conn:
        audited = conn.execute(
            select(audit_log.c.action, audit_log.c.target).where(audit_log.c.action == "resolve_claim")
        ).all()
        assert (
            conn.execute(select(cabinet_claims.c.resolved_by).where(cabinet_claims.c.id == cid)).scalar()
            is not None
        )
    assert [tuple(a) for a in audited] == [("resolve_claim", f"claim:{cid}")]
    assert "/api/claims/{claim_id}/resolve" in (await (await client.get("/api/openapi.json")).json())["paths"]
