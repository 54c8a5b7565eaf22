"""Settlement's aggregate and report steps on plain data: no database."""

from __future__ import annotations

from datetime import date

from cloud.settlement import (
    JournalRow,
    MerchantTerms,
    PeriodBooks,
    RentalFacts,
    RentalSums,
    SettlementLine,
    aggregate,
    report,
)

PAYABLE = "merchant:7:payable"
MORNING = 1_789_963_200.0  # 2026-09-21 06:00 in Berlin


def test_aggregate_sums_fees_refunds_and_share_per_rental_and_the_payouts():
    rows = [
        JournalRow("R1", "fee", "renter:1", 500),
        JournalRow("R1", "fee", PAYABLE, -150),
        JournalRow("R1", "fee", "platform:revenue", -350),
        JournalRow("R1", "refund", PAYABLE, 30),
        JournalRow("R1", "refund", "platform:revenue", 70),
        JournalRow("R1", "refund", "provider:clearing", -100),
        JournalRow("R2", "fee", "renter:2", 250),
        JournalRow("R2", "fee", PAYABLE, -75),
        JournalRow("R3", "refund", PAYABLE, 30),  # a refund on a rental of an earlier period
        JournalRow("R3", "refund", "provider:clearing", -100),
        JournalRow("R4", "hold", "holds:renter:1", 100),  # moves nothing the report counts
        JournalRow(None, "merchant_payout", PAYABLE, 200),
        JournalRow(None, "merchant_payout", "platform:bank", -200),
        JournalRow(None, "merchant_payout", "merchant:8:payable", 5),  # another merchant's
    ]
    per_rental, payouts = aggregate(rows, PAYABLE)
    assert per_rental == {
        "R1": RentalSums(fee=500, refunds=100, share=120),
        "R2": RentalSums(fee=250, refunds=0, share=75),
        "R3": RentalSums(fee=0, refunds=100, share=-30),
    }
    assert payouts == 200


def test_aggregate_of_nothing_is_empty():
    assert aggregate([], PAYABLE) == ({}, 0)


def books(**rentals: RentalFacts) -> PeriodBooks:
    terms = MerchantTerms(7, "Cafe Aurora", "EUR", "Europe/Berlin", 3000)
    return PeriodBooks(terms, date(2026, 9, 1), date(2026, 10, 1), (), -195, rentals)


def test_report_lines_by_end_time_in_the_merchants_zone_and_totals():
    b = books(
        R1=RentalFacts("CAB-A", MORNING + 3600, 7170.0),
        R2=RentalFacts("CAB-B", MORNING, 3600.0),
        R3=RentalFacts("CAB-A", None, None),
    )
    per_rental = {
        "R1": RentalSums(500, 100, 120),
        "R2": RentalSums(250, 0, 75),
        "R3": RentalSums(0, 100, -30),
    }
    r = report(b, per_rental, payouts=200)
    assert r.lines == (
        SettlementLine("R3", "CAB-A", "", 0, 0, 100, -100, -30),  # no end time sorts first
        SettlementLine("R2", "CAB-B", "2026-09-21T06:00:00+02:00", 60, 250, 0, 250, 75),
        SettlementLine("R1", "CAB-A", "2026-09-21T07:00:00+02:00", 120, 500, 100, 400, 120),
    )
    assert (r.rentals, r.fees, r.refunds, r.net) == (2, 750, 200, 550)  # R3 has no fee: not a rental here
    assert (r.merchant_share, r.platform_share) == (165, 385)
    assert (r.payouts, r.payable_at_end) == (200, 195)
    assert (r.merchant_id, r.merchant, r.currency, r.timezone, r.revenue_share_bp) == (
        7,
        "Cafe Aurora",
        "EUR",
        "Europe/Berlin",
        3000,
    )
    assert (r.period_from, r.period_to) == ("2026-09-01", "2026-10-01")


def test_report_of_an_empty_period():
    r = report(books(), {}, payouts=0)
    assert (r.lines, r.rentals, r.fees, r.net, r.platform_share, r.payable_at_end) == ((), 0, 0, 0, 0, 195)
    assert r.to_csv().splitlines()[-1] == "TOTAL,0 rentals,2026-09-01..2026-10-01,,0,0,0,0,EUR"
