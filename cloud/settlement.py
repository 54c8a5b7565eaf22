"""Settlement report per merchant and period, from the money journal (CSV and JSON).

A period is a half-open range of calendar dates in the merchant's time zone. Each line is a
rental with money booked in the period: its fee (booked when it ended) and any refunds
(booked when given, possibly in a later period). The merchant's share comes from the
postings to its payable account, so the report always agrees with ``money-check``.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, func, select

from cloud import money
from cloud.db import journal_entries, journal_postings, merchants, rentals
from cloud.errors import CloudError


class SettlementError(CloudError, ValueError):
    """A settlement report cannot be made (bad period); the message says why."""

    status = 400
    code = "bad_request"


class SettlementNotFound(SettlementError):
    """No such merchant to settle."""

    status = 404
    code = "not_found"


@dataclass(frozen=True)
class SettlementLine:
    rental_id: str
    cabinet_id: str
    ended_at: str  # ISO 8601, merchant's zone
    duration_min: int
    fee: int
    refunds: int
    net: int
    merchant_share: int


@dataclass(frozen=True)
class Settlement:
    merchant_id: int
    merchant: str
    currency: str
    timezone: str
    period_from: str
    period_to: str
    revenue_share_bp: int
    rentals: int
    fees: int
    refunds: int
    net: int
    merchant_share: int
    platform_share: int
    payouts: int
    payable_at_end: int
    lines: tuple[SettlementLine, ...]

    def to_json_dict(self) -> dict:
        return asdict(self)

    def to_csv(self) -> str:
        """One row per rental, then a TOTAL row; amounts in minor units of ``currency``."""
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(
            [
                "rental_id",
                "cabinet_id",
                "ended_at",
                "duration_min",
                "fee",
                "refunds",
                "net",
                "merchant_share",
                "currency",
            ]
        )
        for line in self.lines:
            w.writerow([*asdict(line).values(), self.currency])
        w.writerow(
            [
                "TOTAL",
                f"{self.rentals} rentals",
                f"{self.period_from}..{self.period_to}",
                "",
                self.fees,
                self.refunds,
                self.net,
                self.merchant_share,
                self.currency,
            ]
        )
        return out.getvalue()


@dataclass(frozen=True)
class MerchantTerms:
    """The merchant fields a report shows."""

    id: int
    name: str
    currency: str
    timezone: str
    revenue_share_bp: int


@dataclass(frozen=True)
class JournalRow:
    """One posting of an entry booked for the merchant in the period."""

    rental_id: str | None
    kind: str
    account: str
    amount: int


@dataclass(frozen=True)
class RentalFacts:
    """The rental fields a report line shows."""

    cabinet_id: str
    ended_at: float | None
    duration_s: float | None


@dataclass(frozen=True)
class PeriodBooks:
    """Everything the report is made from, read in one transaction."""

    merchant: MerchantTerms
    period_from: date
    period_to: date
    rows: tuple[JournalRow, ...]
    payable_balance_at_end: int  # the payable account's balance at the period's end (< 0: owed)
    rentals: Mapping[str, RentalFacts]  # the rentals the rows name


@dataclass(frozen=True)
class RentalSums:
    """One rental's money in the period."""

    fee: int = 0
    refunds: int = 0
    share: int = 0


def settlement(engine: Engine, merchant_id: int, period_from: date, period_to: date) -> Settlement:
    """The merchant's report for the dates ``period_from`` (included) to ``period_to`` (excluded)."""
    books = query_period(engine, merchant_id, period_from, period_to)
    per_rental, payouts = aggregate(books.rows, money.merchant_payable(merchant_id))
    return report(books, per_rental, payouts)


def query_period(engine: Engine, merchant_id: int, period_from: date, period_to: date) -> PeriodBooks:
    """Read the merchant, its journal rows in the period (midnight to midnight in its zone), the
    payable balance at the end, and the rentals those rows name."""
    if period_to <= period_from:
        raise SettlementError(f"period end {period_to} must be after its start {period_from}")
    with engine.connect() as conn:
        m = conn.execute(select(merchants).where(merchants.c.id == merchant_id)).first()
        if m is None:
            raise SettlementNotFound(f"no merchant {merchant_id}")
        zone = ZoneInfo(m.timezone)
        t0 = datetime.combine(period_from, time(0), zone).timestamp()
        t1 = datetime.combine(period_to, time(0), zone).timestamp()
        payable = money.merchant_payable(merchant_id)
        rows = tuple(
            JournalRow(*row)
            for row in conn.execute(
                select(
                    journal_entries.c.rental_id,
                    journal_entries.c.kind,
                    journal_postings.c.account,
                    journal_postings.c.amount,
                )
                .join(journal_postings, journal_postings.c.entry_id == journal_entries.c.id)
                .where(
                    journal_entries.c.merchant_id == merchant_id,
                    journal_entries.c.created_at >= t0,
                    journal_entries.c.created_at < t1,
                )
            )
        )
        at_end = conn.execute(
            select(func.coalesce(func.sum(journal_postings.c.amount), 0))
            .join(journal_entries, journal_postings.c.entry_id == journal_entries.c.id)
            .where(journal_postings.c.account == payable, journal_entries.c.created_at < t1)
        ).scalar_one()
        named = sorted({row.rental_id for row in rows if row.rental_id is not None})
        facts = {
            r.id: RentalFacts(r.cabinet_id, r.ended_at, r.duration_s)
            for r in conn.execute(
                select(rentals.c.id, rentals.c.cabinet_id, rentals.c.ended_at, rentals.c.duration_s).where(
                    rentals.c.id.in_(named)
                )
            )
        }
    terms = MerchantTerms(m.id, m.name, m.currency, m.timezone, m.revenue_share_bp)
    return PeriodBooks(terms, period_from, period_to, rows, int(at_end), facts)


def aggregate(rows: Iterable[JournalRow], payable: str) -> tuple[dict[str, RentalSums], int]:
    """Per rental: its fee, the refunds given on it and the merchant's share booked for it;
    and the payouts made to the merchant (all on the ``payable`` account)."""
    per: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    payouts = 0
    for row in rows:
        if row.kind == "merchant_payout" and row.account == payable:
            payouts += row.amount
        if row.rental_id is None:
            continue
        if row.kind == "fee" and row.account.startswith("renter:"):
            per[row.rental_id]["fee"] += row.amount
        if row.kind == "refund" and row.account == money.PROVIDER_CLEARING:
            per[row.rental_id]["refunds"] += -row.amount
        if row.account == payable:
            per[row.rental_id]["share"] += -row.amount
    return {rental_id: RentalSums(**sums) for rental_id, sums in per.items()}, payouts


def report(books: PeriodBooks, per_rental: Mapping[str, RentalSums], payouts: int) -> Settlement:
    """The report: one line per rental (by end time, in the merchant's zone) and the totals."""
    m = books.merchant
    zone = ZoneInfo(m.timezone)
    info = books.rentals
    lines = []
    for rental_id in sorted(per_rental, key=lambda i: (info[i].ended_at or 0, i)):
        s, r = per_rental[rental_id], info[rental_id]
        ended = datetime.fromtimestamp(r.ended_at, zone).isoformat(timespec="seconds") if r.ended_at else ""
        lines.append(
            SettlementLine(
                rental_id,
                r.cabinet_id,
                ended,
                round((r.duration_s or 0) / 60),
                s.fee,
                s.refunds,
                s.fee - s.refunds,
                s.share,
            )
        )
    fees = sum(line.fee for line in lines)
    refunds = sum(line.refunds for line in lines)
    share = sum(line.merchant_share for line in lines)
    return Settlement(
        merchant_id=m.id,
        merchant=m.name,
        currency=m.currency,
        timezone=m.timezone,
        period_from=books.period_from.isoformat(),
        period_to=books.period_to.isoformat(),
        revenue_share_bp=m.revenue_share_bp,
        rentals=sum(1 for line in lines if line.fee),
        fees=fees,
        refunds=refunds,
        net=fees - refunds,
        merchant_share=share,
        platform_share=fees - refunds - share,
        payouts=payouts,
        payable_at_end=-books.payable_balance_at_end,
        lines=tuple(lines),
    )
