"""Venues' coordinates and opening hours, and the nearby query: nearest first, bounded, indexed.

Distances are checked against geometry, not against the code: on the equator 0.01 degree is
1/36000 of the Earth's circumference (2 pi x 6,371,008.8 m), 1,112 m, in either direction.
"""

from __future__ import annotations

import math

import pytest
from sqlalchemy import insert, text

from cloud.app import CTX, create_app
from cloud.config import CloudConfig
from cloud.db import cabinet_settings, cabinets, fleet_slots, merchants, venues
from cloud.fleet.view import apply_state, apply_telemetry
from cloud.places import CANDIDATES_PER_RESULT, bounding_box, distance_m, nearby_query
from sync.messages import SlotSample, State, Telemetry

PW = "correct horse battery"
DEG_AT_EQUATOR_M = 2 * math.pi * 6_371_008.8 / 360
WEEK_HOURS = "Mo-Fr 07:00-22:00; Sa-Su 09:00-20:00"


@pytest.fixture
async def client(aiohttp_client, db_url, clock):
    cfg = CloudConfig(database=db_url, scrypt_n=2**10, webhook_secret="whsec")
    return await aiohttp_client(create_app(cfg, clock=clock, command_sink=lambda c: None, background=False))


async def token(client, email: str, role: str = "operator") -> dict[str, str]:
    client.server.app[CTX].accounts.register(email, PW, role=role)
    r = await client.post("/api/login", json={"email": email, "password": PW})
    return {"Authorization": f"Bearer {(await r.json())['token']}"}


async def merchant(client, ops) -> int:
    r = await client.post("/api/merchants", headers=ops, json={"name": "Cafe", "revenue_share_bp": 2500,
                                                               "currency": "EUR", "timezone": "Europe/Berlin"})  # fmt: skip
    mid = (await r.json())["id"]
    tariff = {"currency": "EUR", "price_per_period": 200, "period_minutes": 60, "total_cap": 3500}
    r = await client.post("/api/tariffs", headers=ops,
                          json={"name": "std", "merchant_id": mid, "default": True, "tariff": tariff})  # fmt: skip
    assert r.status == 201
    return mid


async def place(client, ops, mid: int, cab: str, lat: float, lon: float, hours: str | None = None) -> int:
    r = await client.post(f"/api/merchants/{mid}/venues", headers=ops,
                          json={"name": f"at {cab}", "lat": lat, "lon": lon, "opening_hours": hours})  # fmt: skip
    assert r.status == 201, await r.text()
    venue = await r.json()
    r = await client.post("/api/cabinets", headers=ops, json={"id": cab, "venue_id": venue["id"]})
    assert r.status == 201, await r.text()
    return venue["id"]


async def nearby(client, query: str) -> list[dict]:
    r = await client.get(f"/api/cabinets/nearby?{query}")
    assert r.status == 200, await r.text()
    return (await r.json())["cabinets"]


# --- venues ------------------------------------------------------------------------------------


async def test_venues_take_coordinates_and_opening_hours_and_refuse_bad_ones(client) -> None:
    ops = await token(client, "ops@example.com")
    mid = await merchant(client, ops)
    r = await client.post(f"/api/merchants/{mid}/venues", headers=ops,
                          json={"name": "Hall", "lat": 52.5219, "lon": 13.4132, "opening_hours": WEEK_HOURS})  # fmt: skip
    assert r.status == 201, await r.text()
    venue = await r.json()
    assert (venue["lat"], venue["lon"], venue["opening_hours"], venue["merchant_id"]) == (
        52.5219,
        13.4132,
        WEEK_HOURS,
        mid,
    )
    bad = [
        ({"lat": 90.5, "lon": 0}, "lat"),
        ({"lat": 0, "lon": -180.01}, "lon"),
        ({"lat": 10}, "lat and lon go together"),
        ({"lat": "52.5", "lon": 13}, "lat"),
        ({"lat": True, "lon": 13}, "lat"),
        ({"opening_hours": "Mo-Xx 10:00-12:00"}, "not OpenStreetMap opening_hours syntax at character 4"),
        ({"opening_hours": "whenever"}, "opening_hours"),
        ({"opening_hours": "   "}, "empty"),
        ({"opening_hours": "Mo 10:00-12:00;\x0bTu 10:00-12:00"}, "control characters"),
    ]
    for fields, words in bad:
        r = await client.post(f"/api/merchants/{mid}/venues", headers=ops, json={"name": "X", **fields})
        assert r.status == 400, (fields, r.status)
        assert words in (await r.json())["message"], (fields, await r.json())
    for raw in (b'{"name": "X", "lat": NaN, "lon": 0}', b'{"name": "X", "lat": 1e999, "lon": 0}',
                b'{"name": "X", "lat": -Infinity, "lon": 0}'):  # fmt: skip
        r = await client.post(f"/api/merchants/{mid}/venues", headers={**ops, "Content-Type": "application/json"},
                              data=raw)  # fmt: skip
        assert r.status == 400, raw
        assert "finite" in (await r.json())["message"]
    r = await client.post("/api/merchants/999/venues", headers=ops, json={"name": "X"})
    assert r.status == 404


async def test_operators_move_a_venue_and_change_its_hours_audited(client) -> None:
    ops = await token(client, "ops@example.com")
    renter = await token(client, "ana@example.com", "renter")
    mid = await merchant(client, ops)
    vid = await place(client, ops, mid, "CAB-0001", 0.0, 0.0)
    r = await client.patch(f"/api/venues/{vid}", headers=ops,
                           json={"lat": 0.01, "lon": 0.0, "opening_hours": "24/7", "address": "Gate 3"})  # fmt: skip
    assert r.status == 200, await r.text()
    v = await r.json()
    assert (v["lat"], v["lon"], v["opening_hours"], v["address"], v["open_now"]) == (
        0.01,
        0.0,
        "24/7",
        "Gate 3",
        True,
    )
    assert (await nearby(client, "lat=0&lon=0&radius_m=2000"))[0]["distance_m"] == round(
        0.01 * DEG_AT_EQUATOR_M
    )
    r = await client.patch(
        f"/api/venues/{vid}", headers=ops, json={"lat": None, "lon": None, "opening_hours": None}
    )
    assert r.status == 200 and (await r.json())["lat"] is None
    assert await nearby(client, "lat=0&lon=0") == []  # no place: not found nearby
    assert (await client.patch(f"/api/venues/{vid}", headers=ops, json={"lat": 1.0})).status == 400
    assert (await client.patch(f"/api/venues/{vid}", headers=ops, json={})).status == 400
    assert (
        await client.patch(f"/api/venues/{vid}", headers=ops, json={"opening_hours": "Mo 25:00"})
    ).status == 400
    assert (await client.patch("/api/venues/9999", headers=ops, json={"name": "Y"})).status == 404
    assert (await client.patch("/api/venues/abc", headers=ops, json={"name": "Y"})).status == 404
    assert (await client.patch(f"/api/venues/{vid}", headers=renter, json={"name": "Y"})).status == 403
    assert (await client.patch(f"/api/venues/{vid}", json={"name": "Y"})).status == 401
    with client.server.app[CTX].engine.connect() as conn:
        actions = conn.execute(text("select action, target from audit_log order by id")).all()
    assert [tuple(a) for a in actions] == [("venue_update", f"venue:{vid}")] * 2


# --- nearby ------------------------------------------------------------------------------------


async def test_nearby_is_sorted_by_distance_within_the_radius_and_the_limit(client) -> None:
    ops = await token(client, "ops@example.com")
    mid = await merchant(client, ops)
    await place(client, ops, mid, "CAB-FAR", 0.0, 0.04)  # 4,448 m east
    await place(client, ops, mid, "CAB-NEAR", 0.01, 0.0)  # 1,112 m north
    await place(client, ops, mid, "CAB-MID", 0.0, -0.02)  # 2,224 m west
    await place(client, ops, mid, "CAB-AWAY", 1.0, 1.0)  # 157 km: outside any radius allowed
    found = await nearby(client, "lat=0&lon=0")
    assert [c["id"] for c in found] == ["CAB-NEAR", "CAB-MID", "CAB-FAR"]
    assert [c["distance_m"] for c in found] == [round(d * DEG_AT_EQUATOR_M) for d in (0.01, 0.02, 0.04)]
    assert set(found[0]) >= {
        "id",
        "venue",
        "distance_m",
        "online",
        "packs_ready",
        "free_slots",
        "tariff_text",
    }
    assert set(found[0]["venue"]) == {"id", "name", "address", "lat", "lon", "opening_hours", "open_now"}
    assert found[0]["tariff_text"]["en"] == "2.00 EUR per 60 min, 35.00 EUR in total"
    assert [c["id"] for c in await nearby(client, "lat=0&lon=0&radius_m=2500")] == ["CAB-NEAR", "CAB-MID"]
    assert [c["id"] for c in await nearby(client, "lat=0&lon=0&limit=1")] == ["CAB-NEAR"]
    assert [c["id"] for c in await nearby(client, "lat=0.0&lon=0.04&limit=2")] == ["CAB-FAR", "CAB-NEAR"]


async def test_nearby_crosses_the_antimeridian_and_the_poles(client) -> None:
    ops = await token(client, "ops@example.com")
    mid = await merchant(client, ops)
    await place(client, ops, mid, "CAB-FIJI", 0.0, 179.999)
    await place(client, ops, mid, "CAB-POLE", 89.999, 180.0)
    found = await nearby(client, "lat=0&lon=-179.999")
    assert [c["id"] for c in found] == ["CAB-FIJI"]
    assert found[0]["distance_m"] == round(0.002 * DEG_AT_EQUATOR_M)
    # at the pole every longitude is near: 89.999 N, 0 E is 222 m from 89.999 N, 180 E
    found = await nearby(client, "lat=89.999&lon=0")
    assert [c["id"] for c in found] == ["CAB-POLE"] and found[0]["distance_m"] == round(
        0.002 * DEG_AT_EQUATOR_M
    )


async def test_nearby_shows_stock_online_and_opening_from_the_fleet_view(client, clock) -> None:
    ops = await token(client, "ops@example.com")
    mid = await merchant(client, ops)
    await place(client, ops, mid, "CAB-0001", 52.5219, 13.4132, WEEK_HOURS)
    await place(client, ops, mid, "CAB-0002", 52.5225, 13.4020, "24/7")
    engine = client.server.app[CTX].engine
    now = clock()  # 2026-09-21, a Monday, 06:00 in Berlin: the first venue opens at 07:00
    apply_state(engine, State("CAB-0001", True, now, counts={"slots": 8}), now)
    apply_telemetry(engine, Telemetry("CAB-0001", now, (SlotSample(1, now, "PB1", soc=95),
                                                         SlotSample(2, now, "PB2", soc=60))), now)  # fmt: skip
    with engine.begin() as conn:
        conn.execute(
            insert(fleet_slots).values(cabinet_id="CAB-0001", slot=3, quarantined=True, updated_at=now)
        )
    first, second = await nearby(client, "lat=52.5219&lon=13.4132")
    assert first["id"] == "CAB-0001" and second["id"] == "CAB-0002"
    assert (first["online"], first["packs_ready"], first["free_slots"]) == (
        True,
        1,
        5,
    )  # 8 - 2 packs - quarantined
    assert (second["online"], second["packs_ready"], second["free_slots"]) == (False, 0, None)
    assert (first["venue"]["open_now"], second["venue"]["open_now"]) == (False, True)
    with engine.begin() as conn:  # the operator lowered the fleet's rentable minimum, and denied PB1
        conn.execute(insert(cabinet_settings).values(cabinet_id="*", rentable_min_soc=50, updated_at=now))
        conn.execute(
            insert(cabinet_settings).values(
                cabinet_id="CAB-0001", battery_deny_list='["PB1"]', updated_at=now
            )
        )
    clock.advance(90 * 60)  # 07:30: open
    first = (await nearby(client, "lat=52.5219&lon=13.4132"))[0]
    assert (first["packs_ready"], first["venue"]["open_now"], first["online"]) == (1, True, False)


async def test_nearby_refuses_bad_queries_with_a_400_never_a_500(client) -> None:
    bad = [
        "",
        "lat=1",
        "lon=1",
        "lat=abc&lon=1",
        "lat=nan&lon=1",
        "lat=inf&lon=1",
        "lat=91&lon=1",
        "lat=1&lon=-180.5",
        "lat=1_0&lon=1",
        "lat=%201&lon=1",
        "lat=1e999&lon=1",
        "lat=%ff&lon=1",
        "lat=1&lon=1&limit=0",
        "lat=1&lon=1&limit=101",
        "lat=1&lon=1&limit=-5",
        "lat=1&lon=1&radius_m=0",
        "lat=1&lon=1&radius_m=50001",
        "lat=1&lon=1&radius_m=1.5",
        "lat=" + "1" * 5000 + "&lon=1",
    ]
    for query in bad:
        r = await client.get(f"/api/cabinets/nearby?{query}")
        assert r.status == 400, (query[:40], r.status, await r.text())
        assert (await r.json())["error"] == "bad_request"
    assert (await client.get("/api/cabinets/nearby?lat=-1.5e1&lon=%2B2")).status == 200


# --- bounded work, on the index --------------------------------------------------------------


def test_the_bounding_box_holds_the_whole_circle() -> None:
    for lat, lon in ((0.0, 0.0), (52.5, 13.4), (-33.9, 151.2), (70.0, -179.9), (89.99, 10.0)):
        box = bounding_box(lat, lon, 5000)
        for bearing in range(0, 360, 15):  # points on the circle, by the direct geodesic problem
            d, b, p1, l1 = 5000 / 6_371_008.8, math.radians(bearing), math.radians(lat), math.radians(lon)
            p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(b))
            l2 = l1 + math.atan2(
                math.sin(b) * math.sin(d) * math.cos(p1), math.cos(d) - math.sin(p1) * math.sin(p2)
            )
            plat, plon = math.degrees(p2), (math.degrees(l2) + 540) % 360 - 180
            assert abs(distance_m(lat, lon, plat, plon) - 5000) < 0.01
            assert box.lat_min - 1e-9 <= plat <= box.lat_max + 1e-9
            assert box.lon_ranges is None or any(lo - 1e-9 <= plon <= hi + 1e-9 for lo, hi in box.lon_ranges)


def _seed(engine, n: int, at: tuple[float, float], step: float = 1e-5) -> None:
    """``n`` cabinets, each at its own venue, on a square grid from ``at`` with ``step`` degrees."""
    side = math.ceil(math.sqrt(n))
    with engine.begin() as conn:
        mid = conn.execute(
            insert(merchants)
            .values(name="M", revenue_share_bp=0, currency="EUR", timezone="UTC", created_at=0.0)
            .returning(merchants.c.id)
        ).scalar_one()
        rows = [
            {"merchant_id": mid, "name": f"v{i}", "created_at": 0.0, "lat": at[0] + (i // side) * step,
             "lon": at[1] + (i % side) * step}
            for i in range(n)
        ]  # fmt: skip
        ids = (
            conn.execute(insert(venues).returning(venues.c.id, sort_by_parameter_order=True), rows)
            .scalars()
            .all()
        )
        conn.execute(
            insert(cabinets),
            [{"id": f"CAB-{i:05d}", "venue_id": v, "created_at": 0.0} for i, v in enumerate(ids)],
        )


def test_the_query_hands_over_a_bounded_number_of_candidates(engine) -> None:
    _seed(engine, 200, (10.0, 10.0))  # 200 cabinets within 22 m: all inside the box
    with engine.connect() as conn:
        rows = conn.execute(nearby_query(10.0, 10.0, 5000, 5 * CANDIDATES_PER_RESULT)).all()
    assert len(rows) == 5 * CANDIDATES_PER_RESULT
    # nearest first on the 15-wide grid: the origin, 1e-5 degree east (x cos 10 deg), 1e-5 degree north
    assert [r.cabinet_id for r in rows[:3]] == ["CAB-00000", "CAB-00001", "CAB-00015"]


def _plan(conn, query) -> str:
    compiled = query.compile(conn, compile_kwargs={"literal_binds": True})
    if conn.dialect.name == "sqlite":
        return " | ".join(str(r[-1]) for r in conn.execute(text(f"EXPLAIN QUERY PLAN {compiled}")))
    return " | ".join(str(r[0]) for r in conn.execute(text(f"EXPLAIN {compiled}")))


def test_the_nearby_query_is_a_range_scan_on_the_coordinates_index(engine) -> None:
    _seed(engine, 2500, (45.0, 5.0), step=0.2)  # a 10 x 10 degree grid: a 5 km box holds about one
    with engine.connect() as conn:
        tx = conn.begin()
        try:
            conn.execute(text("ANALYZE"))
            plan = _plan(conn, nearby_query(50.0, 10.0, 5000, 60))
            assert "ix_venues_lat_lon" in plan, plan
            # the same check fails without the index: it really reads the plan
            conn.execute(text("DROP INDEX ix_venues_lat_lon"))
            assert "ix_venues_lat_lon" not in _plan(conn, nearby_query(50.0, 10.0, 5000, 61))
        finally:
            tx.rollback()  # DDL is transactional on both engines: the index is back
