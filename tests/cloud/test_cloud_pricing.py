"""Fees: worked examples from the domain notes, and properties that must hold for any tariff."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud.pricing import CabinetTime, ClockAnchor, Tariff, TariffError, fee, quote, rental_duration

MIN = 60
HOUR = 3600

# China: 1.5 CNY per 30 min, under 3 min free, 30 CNY per day, 99 CNY per rental.
CHINA = Tariff(
    currency="CNY",
    price_per_period=150,
    period_minutes=30,
    free_minutes=3,
    daily_cap=3000,
    total_cap=9900,
    timezone="Asia/Shanghai",
)
# Europe: first 5 minutes free, 2.50 EUR per started hour, 15 EUR a day, battery 35 EUR, bought after 5 days.
EUROPE = Tariff(
    currency="EUR",
    price_per_period=250,
    period_minutes=60,
    free_minutes=5,
    daily_cap=1500,
    total_cap=3500,
    purchase_after_days=5,
    timezone="Europe/Berlin",
)


@pytest.mark.parametrize(
    ("duration_s", "expected"),
    [
        (0, 0),
        (2 * MIN, 0),
        (3 * MIN, 0),
        (3 * MIN + 1, 150),  # past the free minutes: the first period counts from the start
        (30 * MIN, 150),
        (31 * MIN, 300),
        (5 * HOUR, 1500),
        (10 * HOUR, 3000),
        (23 * HOUR, 3000),  # daily cap
        (25 * HOUR, 3300),  # second 24 h window: two started periods
        (3 * 24 * HOUR + HOUR, 9300),
        (4 * 24 * HOUR, 9900),  # the total cap: the renter has bought the battery
    ],
)
def test_china_tariff_worked_examples(duration_s, expected):
    assert fee(CHINA, duration_s) == expected


@pytest.mark.parametrize(
    ("duration_s", "expected", "purchased"),
    [
        (5 * MIN, 0, False),
        (6 * MIN, 250, False),
        (HOUR + 1, 500, False),
        (8 * HOUR, 1500, False),
        (2 * 24 * HOUR, 3000, False),
        (3 * 24 * HOUR, 3500, True),
        (5 * 24 * HOUR, 3500, True),
    ],
)
def test_europe_tariff_worked_examples(duration_s, expected, purchased):
    q = quote(EUROPE, duration_s)
    assert (q.amount, q.purchased) == (expected, purchased)


def test_daily_cap_follows_calendar_days_in_merchant_time_zone():
    start = datetime(2026, 3, 2, 20, 0, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()
    # 20:00-24:00 is 8 periods (1200) on day one; 00:00-16:00 is 32 periods, capped at 3000
    assert fee(CHINA, 20 * HOUR, start_at=start) == 4200
    # measured in 24 h windows from the start the same rental is one capped day
    assert fee(CHINA, 20 * HOUR) == 3000


def test_daily_cap_on_a_daylight_saving_day():
    # Berlin 2026-03-29 has 23 hours: a rental from 00:00 to 00:00 next day is one day
    start = datetime(2026, 3, 29, 0, 0, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()
    assert quote(EUROPE, 23 * HOUR, start_at=start).capped_days == 1
    assert fee(EUROPE, 23 * HOUR + 30 * MIN, start_at=start) == 1500 + 250


def test_tariff_rejects_inconsistent_fields():
    with pytest.raises(TariffError, match="currency"):
        Tariff(currency="eur", price_per_period=1)
    with pytest.raises(TariffError, match="period_minutes"):
        Tariff(currency="EUR", price_per_period=1, period_minutes=0)
    with pytest.raises(TariffError, match="timezone"):
        Tariff(currency="EUR", price_per_period=1, timezone="Mars/Olympus")
    with pytest.raises(TariffError, match="unknown tariff field"):
        Tariff.from_dict({"currency": "EUR", "price_per_period": 1, "colour": "red"})


def test_tariff_json_round_trip():
    assert Tariff.from_json(EUROPE.to_json()) == EUROPE
    assert EUROPE.hold == 3500


tariffs = st.builds(
    Tariff,
    currency=st.sampled_from(["EUR", "CNY", "USD", "CZK"]),
    price_per_period=st.integers(0, 5000),
    period_minutes=st.integers(1, 240),
    free_minutes=st.integers(0, 30),
    daily_cap=st.one_of(st.none(), st.integers(1, 20000)),
    total_cap=st.integers(1, 100_000),
    timezone=st.sampled_from(
        ["UTC", "Europe/Berlin", "Asia/Shanghai", "America/New_York", "Pacific/Chatham"]
    ),
    purchase_after_days=st.one_of(st.none(), st.integers(1, 10)),
)
durations = st.floats(0, 12 * 24 * HOUR, allow_nan=False)
starts = st.one_of(st.none(), st.floats(1.6e9, 2.0e9, allow_nan=False))


@settings(max_examples=300, deadline=None)
@given(tariffs, durations, durations, starts)
def test_fee_is_integer_non_negative_monotonic_and_capped(tariff, d1, d2, start):
    short, long_ = sorted((d1, d2))
    a, b = quote(tariff, short, start), quote(tariff, long_, start)
    assert isinstance(a.amount, int) and not isinstance(a.amount, bool)
    assert 0 <= a.amount <= b.amount <= tariff.total_cap
    if tariff.daily_cap is not None:
        # a rental touches at most ceil(duration / 1 day) + 1 calendar days
        days = int(long_ // (24 * HOUR)) + 2
        assert b.amount <= tariff.daily_cap * days or b.purchased
    if b.purchased:
        assert b.amount == tariff.total_cap


@settings(max_examples=100, deadline=None)
@given(tariffs, st.floats(0, 10_000, allow_nan=False))
def test_rentals_within_free_minutes_cost_nothing(tariff, seconds):
    if seconds <= tariff.free_minutes * 60 and (tariff.purchase_after_days or 99) * 86400 > seconds:
        assert fee(tariff, seconds) == 0


def test_same_boot_uses_monotonic_time_when_wall_clock_jumped():
    # the wall clock was set back a year (no RTC, NTP not yet synced) between start and end
    start = CabinetTime("CAB-1", at_wall=1_790_000_000, at_mono=100.0, boot_id="b1")
    end = CabinetTime("CAB-1", at_wall=1_758_000_000, at_mono=100.0 + 2 * HOUR, boot_id="b1")
    d = rental_duration(start, end)
    assert (d.seconds, d.method, d.suspect) == (2 * HOUR, "monotonic", False)


def test_other_cabinet_with_wrong_clock_is_corrected_by_its_anchor():
    start = CabinetTime("CAB-1", at_wall=1_790_000_000, at_mono=500.0, boot_id="a")
    # CAB-2's wall clock is 3 days behind; its anchor (taken when it was online) tells the truth
    end = CabinetTime("CAB-2", at_wall=1_790_000_000 - 3 * 86400 + HOUR, at_mono=10_000.0, boot_id="z")
    anchors = {
        ("CAB-1", "a"): ClockAnchor("CAB-1", "a", at_mono=0.0, true_wall=1_790_000_000 - 500),
        ("CAB-2", "z"): ClockAnchor("CAB-2", "z", at_mono=9_000.0, true_wall=1_790_000_000 + HOUR - 1000),
    }
    d = rental_duration(start, end, anchors)
    assert (round(d.seconds), d.method, d.suspect) == (HOUR, "anchored", False)
    unanchored = rental_duration(start, end)
    assert (unanchored.seconds, unanchored.method, unanchored.suspect) == (0.0, "wall", True)


def test_negative_monotonic_duration_is_suspect():
    start = CabinetTime("C", 10.0, 50.0, "b")
    end = CabinetTime("C", 20.0, 40.0, "b")
    assert rental_duration(start, end).suspect
