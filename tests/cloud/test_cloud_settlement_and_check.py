"""Settlement reports agree with the journal; money-check catches every kind of tampering."""

from __future__ import annotations

import csv
import io
from datetime import date

import pytest
from sqlalchemy import insert, text, update

from cloud import money
from cloud.db import journal_entries, payments, rentals
from cloud.settlement import SettlementError, settlement

HOUR = 3600


def rent(world, user, hours, sn, cabinet="CAB-A"):
    start = world.service.start_app_rental(user, cabinet)
    ev = world.event(
        cabinet,
        "rental_started",
        mono=0.0,
        boot=f"{sn}-boot",
        rental_id=start.rental_id,
        sn=sn,
        source="cloud",
    )
    world.service.on_rental_started(cabinet, ev)
    world.clock.advance(hours * HOUR)
    back = world.event(cabinet, "battery_returned", mono=hours * HOUR, boot=f"{sn}-boot", sn=sn)
    world.service.on_battery_returned(cabinet, back)
    return start.rental_id


def test_settlement_report_for_a_period_in_csv_and_json(world, clock):
    ana, bo = world.renter(), world.renter("bo@example.com")
    r1 = rent(world, ana, 2, "S1")  # 500
    r2 = rent(world, bo, 1, "S2")  # 250
    world.service.billing.refund(r1, 100, "battery was half empty", actor_user_id=None)
    clock.advance(40 * 86400)
    rent(world, ana, 1, "S3")  # next period
    report = settlement(world.engine, world.merchant.id, date(2026, 9, 1), date(2026, 10, 1))
    assert (report.rentals, report.fees, report.refunds, report.net) == (2, 750, 100, 650)
    # 30 %: 150 + 75 on the fees, less 30 of the refund
    assert (report.merchant_share, report.platform_share) == (195, 455)
    assert report.payable_at_end == 195
    assert [line.rental_id for line in report.lines] == [r1, r2]
    assert report.lines[0].ended_at.endswith("+02:00")  # the merchant's zone
    rows = list(csv.reader(io.StringIO(report.to_csv())))
    assert rows[0][:5] == ["rental_id", "cabinet_id", "ended_at", "duration_min", "fee"]
    assert rows[1][0] == r1 and rows[1][4:8] == ["500", "100", "400", "120"]
    assert rows[-1][0] == "TOTAL" and rows[-1][4:8] == ["750", "100", "650", "195"]
    assert report.to_json_dict()["lines"][1]["fee"] == 250


def test_settlement_counts_payouts_and_rejects_empty_period(world):
    with world.engine.begin() as conn:
        money.post_merchant_payout(conn, world.merchant.id, 0 + 1, "EUR", "2026-09", world.clock())
    with pytest.raises(SettlementError, match="after its start"):
        settlement(world.engine, world.merchant.id, date(2026, 9, 2), date(2026, 9, 1))
    report = settlement(world.engine, world.merchant.id, date(2026, 9, 1), date(2026, 10, 1))
    assert (report.payouts, report.payable_at_end) == (1, -1)
    # paying a merchant more than earned is something the check must flag
    assert any("merchant paid more than earned" in str(p) for p in money.check(world.engine))


@pytest.fixture
def settled(world):
    user = world.renter()
    return rent(world, user, 3, "S1")


def problems(world):
    return "\n".join(map(str, money.check(world.engine)))


def test_books_of_a_normal_day_balance(world, settled):
    assert problems(world) == ""


def test_check_finds_rental_row_that_disagrees_with_payments(world, settled):
    with world.engine.begin() as conn:
        conn.execute(update(rentals).where(rentals.c.id == settled).values(captured=rentals.c.captured + 1))
    assert f"rental {settled}: payments captured 750 but the rental says 751" in problems(world)


def test_check_finds_fee_changed_after_booking(world, settled):
    with world.engine.begin() as conn:
        conn.execute(update(rentals).where(rentals.c.id == settled).values(fee=700))
    assert f"rental {settled}: fee booked 750 but the rental's fee is 700" in problems(world)


def test_check_finds_a_capture_missing_from_the_journal(world, settled):
    with world.engine.begin() as conn:
        conn.execute(
            insert(payments).values(rental_id=settled, kind="capture", provider="sandbox", amount=50, currency="EUR",
                                    status="succeeded", idempotency_key="smuggled", detail='{"hold_ref": "x"}', created_at=1.0)
        )  # fmt: skip
        conn.execute(update(rentals).where(rentals.c.id == settled).values(captured=800))
    out = problems(world)
    assert "provider clearing moved 750, expected captured 800" in out


def test_check_finds_a_balanced_but_misdirected_entry(world, settled):
    with world.engine.begin() as conn:
        money.post(conn, "fee", [money.Posting(money.PLATFORM_REVENUE, 100, "EUR"),
                                 money.Posting(money.merchant_payable(world.merchant.id), -100, "EUR")],
                   "smuggled", 1.0, rental_id=settled)  # fmt: skip
    assert "merchant share booked" in problems(world)


def test_check_finds_an_edit_made_behind_the_triggers(world, settled):
    with world.engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.execute(text("DROP TRIGGER journal_postings_no_update"))
        else:
            conn.execute(text("ALTER TABLE journal_postings DISABLE TRIGGER journal_postings_append_only"))
        conn.execute(text("UPDATE journal_postings SET amount = amount + 5 WHERE account LIKE 'merchant:%'"))
    out = problems(world)
    assert "postings sum to 5 EUR, not zero" in out and "trial balance (EUR)" in out


def test_check_finds_entries_of_unknown_rentals(world):
    with world.engine.begin() as conn:
        conn.execute(
            insert(journal_entries).values(
                kind="hold", rental_id="R-GHOST", idempotency_key="g", created_at=1.0
            )
        )
        money.post(
            conn,
            "x",
            [money.Posting("a", 1, "EUR"), money.Posting("b", -1, "EUR")],
            "g2",
            1.0,
            rental_id="R-GHOST",
        )
    assert "rental R-GHOST: journal entries name a rental that does not exist" in problems(world)
