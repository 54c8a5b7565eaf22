"""A cabinet's public page data (what its kiosk QR code opens), and the one money formatter.

``GET /api/cabinets/{id}/public`` needs no sign-in: venue, online, packs ready, free slots, the
tariff as numbers and in plain words (en, zh), the hold a rental takes. Money shown to people is
major units with the currency, from ``sync.amounts`` (used by the cloud, the kiosk and the scripts).
"""

from __future__ import annotations

import pytest

from cloud.app import CTX, create_app
from cloud.config import CloudConfig
from cloud.fleet.view import apply_state, apply_telemetry
from sync.amounts import format_duration, format_money, major_text
from sync.messages import SlotSample, State, Telemetry

PW = "correct horse battery"
DEMO_TARIFF = {
    "currency": "EUR",
    "price_per_period": 200,
    "period_minutes": 60,
    "free_minutes": 5,
    "daily_cap": 1000,
    "total_cap": 3500,
    "timezone": "Europe/Berlin",
}


# --- the formatter -----------------------------------------------------------------------------


def test_money_is_major_units_with_the_currency_never_through_floats() -> None:
    assert format_money(3500, "EUR") == "35.00 EUR"
    assert format_money(9900, "CNY") == "99.00 CNY"
    assert format_money(9900, "CNY", symbol=True) == "¥99.00"
    assert format_money(3500, "EUR", symbol=True) == "€35.00"
    assert format_money(7, "EUR") == "0.07 EUR"
    assert format_money(0, "EUR") == "0.00 EUR"
    assert format_money(-250, "EUR") == "-2.50 EUR"
    assert format_money(-250, "USD", symbol=True) == "-$2.50"
    assert format_money(500, "JPY") == "500 JPY"  # no minor unit
    assert format_money(1234, "KWD") == "1.234 KWD"  # three digits
    assert format_money(7, "CZK", symbol=True) == "CZK 0.07"  # no sign known: the code
    # a float would print 1e+20 or lose digits; the integer never does
    assert major_text(10**20 + 1, "EUR") == "1000000000000000000.01"
    with pytest.raises(TypeError):
        format_money(35.0, "EUR")  # type: ignore[arg-type]


def test_durations_read_like_a_person_would_say_them() -> None:
    assert [format_duration(s) for s in (0, 42.9, 60, 307, 3600, 3900, 86400 + 3 * 3600 + 300)] == [
        "0 s",
        "42 s",
        "1 min 00 s",
        "5 min 07 s",
        "1 h 00 min",
        "1 h 05 min",
        "1 d 3 h 05 min",
    ]
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            format_duration(bad)


def test_the_kiosk_shows_money_through_the_same_formatter() -> None:
    from cabinet.web.kiosk import money

    assert [money(m, c) for m, c in ((150, "CNY"), (3000, "EUR"), (500, "JPY"), (7, "CZK"))] == [
        format_money(m, c, symbol=True) for m, c in ((150, "CNY"), (3000, "EUR"), (500, "JPY"), (7, "CZK"))
    ]


# --- the route ---------------------------------------------------------------------------------


@pytest.fixture
async def client(aiohttp_client, db_url, clock):
    cfg = CloudConfig(database=db_url, scrypt_n=2**10, webhook_secret="whsec")
    return await aiohttp_client(create_app(cfg, clock=clock, command_sink=lambda c: None, background=False))


async def operator(client) -> dict[str, str]:
    client.server.app[CTX].accounts.register("ops@example.com", PW, role="operator")
    r = await client.post("/api/login", json={"email": "ops@example.com", "password": PW})
    return {"Authorization": f"Bearer {(await r.json())['token']}"}


async def world(client, tariff=DEMO_TARIFF, currency="EUR", hours="24/7") -> dict[str, str]:
    ops = await operator(client)
    r = await client.post("/api/merchants", headers=ops, json={"name": "Cafe Aurora", "revenue_share_bp": 3000,
                                                               "currency": currency, "timezone": "Europe/Berlin"})  # fmt: skip
    mid = (await r.json())["id"]
    r = await client.post(f"/api/merchants/{mid}/venues", headers=ops,
                          json={"name": "Aurora Station Hall", "address": "Alexanderplatz 1", "lat": 52.5219,
                                "lon": 13.4132, "opening_hours": hours})  # fmt: skip
    assert r.status == 201, await r.text()
    vid = (await r.json())["id"]
    r = await client.post("/api/tariffs", headers=ops,
                          json={"name": "std", "merchant_id": mid, "default": True, "tariff": tariff})  # fmt: skip
    assert r.status == 201, await r.text()
    r = await client.post(
        "/api/cabinets", headers=ops, json={"id": "CAB-0001", "venue_id": vid, "name": "Hall"}
    )
    assert r.status == 201, await r.text()
    return ops


async def test_the_page_has_the_venue_the_tariff_in_words_and_the_hold_without_sign_in(client, clock) -> None:
    await world(client)
    r = await client.get("/api/cabinets/CAB-0001/public")  # no Authorization header
    assert r.status == 200, await r.text()
    page = await r.json()
    assert page["id"] == "CAB-0001" and page["name"] == "Hall"
    assert page["venue"] == {
        "id": page["venue"]["id"],
        "name": "Aurora Station Hall",
        "address": "Alexanderplatz 1",
        "lat": 52.5219,
        "lon": 13.4132,
        "opening_hours": "24/7",
        "open_now": True,
    }
    assert page["tariff"] == {
        "currency": "EUR",
        "price_per_period": 200,
        "period_minutes": 60,
        "free_minutes": 5,
        "daily_cap": 1000,
        "total_cap": 3500,
        "purchase_after_days": None,
    }
    assert page["tariff_text"] == {
        "en": "2.00 EUR per 60 min, first 5 min free, at most 10.00 EUR a day, 35.00 EUR in total",
        "zh": "每60分钟 2.00 EUR，前5分钟免费，每日封顶 10.00 EUR，总计封顶 35.00 EUR",
    }
    assert (page["hold_amount"], page["currency"]) == (3500, "EUR")  # no hold_amount: the total cap
    assert page["hold_text"]["en"] == "35.00 EUR held, released when you return"
    assert "35.00 EUR" in page["hold_text"]["zh"]
    # never heard from: offline, nothing ready, the number of slots unknown
    assert (page["online"], page["packs_ready"], page["free_slots"], page["rentable"]) == (
        False,
        0,
        None,
        False,
    )


async def test_stock_comes_from_the_fleet_view(client, clock) -> None:
    await world(client)
    engine = client.server.app[CTX].engine
    now = clock()
    apply_state(engine, State("CAB-0001", True, now, counts={"slots": 6}), now)
    samples = (
        SlotSample(1, now, "PB0001", soc=97),
        SlotSample(2, now, "PB0002", soc=81),
        SlotSample(3, now, "PB0003", soc=40),  # still charging: not ready
        SlotSample(4, now, "PB0004", soc=99, faults=4),  # a fault bit: not ready
    )
    apply_telemetry(engine, Telemetry("CAB-0001", now, samples), now)
    page = await (await client.get("/api/cabinets/CAB-0001/public")).json()
    assert (page["online"], page["packs_ready"], page["free_slots"], page["rentable"]) == (True, 2, 2, True)
    clock.advance(181)  # silent longer than the fleet view's grace: offline, the last stock kept
    page = await (await client.get("/api/cabinets/CAB-0001/public")).json()
    assert (page["online"], page["packs_ready"], page["rentable"]) == (False, 2, False)


async def test_a_tariff_without_minor_units_and_with_a_purchase_reads_right(client) -> None:
    jpy = {"currency": "JPY", "price_per_period": 200, "period_minutes": 30, "total_cap": 3000,
           "hold_amount": 1500, "purchase_after_days": 5, "timezone": "Asia/Tokyo"}  # fmt: skip
    await world(client, jpy, "JPY")
    page = await (await client.get("/api/cabinets/CAB-0001/public")).json()
    assert page["tariff_text"]["en"] == (
        "200 JPY per 30 min, 3000 JPY in total; kept longer than 5 days, the pack is yours for 3000 JPY"
    )
    assert page["tariff_text"]["zh"].startswith("每30分钟 200 JPY，总计封顶 3000 JPY；超过5天")
    assert (page["hold_amount"], page["hold_text"]["en"]) == (1500, "1500 JPY held, released when you return")


async def test_unknown_or_malformed_cabinets_are_404_never_500(client) -> None:
    await world(client)
    for path in ("CAB-9999", "%ff%fe", "x" * 300, "CAB-0001%00", "..", "%F0%9F%98%80"):
        r = await client.get(f"/api/cabinets/{path}/public")
        assert r.status == 404, (path, r.status, await r.text())
        assert (await r.json())["error"] == "not_found"


async def test_a_cabinet_without_venue_or_tariff_is_shown_as_not_rentable(client) -> None:
    ops = await operator(client)
    r = await client.post("/api/cabinets", headers=ops, json={"id": "CAB-0002"})
    assert r.status == 201
    page = await (await client.get("/api/cabinets/CAB-0002/public")).json()
    assert page["venue"] is None and page["tariff"] is None and page["hold_amount"] is None
    assert page["rentable"] is False
