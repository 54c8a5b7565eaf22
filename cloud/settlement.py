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
from dataclasses import asdict, dataclass
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, func, select

from cloud import money
from cloud.db import journal_entries, journal_postings, merchants, rentals


class SettlementError(ValueError):
    pass


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


def settlement(engine: Engine, merchant_id: int, period_from: date, period_to: date) -> Settlement:
    """The merchant's report for the dates ``period_from`` (included) to ``period_to`` (excluded)."""
    if period_to <= period_from:
        raise SettlementError(f"period end {period_to} must be after its start {period_from}")
    with engine.connect() as conn:
        m = conn.execute(select(merchants).where(merchants.c.id == merchant_id)).first()
        if m is None:
            raise SettlementError(f"no merchant {merchant_id}")
        zone = ZoneInfo(m.timezone)
        t0 = datetime.combine(period_from, time(0), zone).timestamp()
        t1 = datetime.combine(period_to, time(0), zone).timestamp()
        payable = money.merchant_payable(merchant_id)
        rows = conn.execute(
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
        ).all()
        per: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        payouts = 0
        for rental_id, kind, account, amount in rows:
            if kind == "merchant_payout" and account == payable:
                payouts += amount
            if rental_id is None:
                continue
            if kind == "fee" and account.startswith("renter:"):
                per[rental_id]["fee"] += amount
            if kind == "refund" and account == money.PROVIDER_CLEARING:
                per[rental_id]["refunds"] += -amount
            if account == payable:
                per[rental_id]["share"] += -amount
        at_end = conn.execute(
            select(func.coalesce(func.sum(journal_postings.c.amount), 0))
            .join(journal_entries, journal_postings.c.entry_id == journal_entries.c.id)
            .where(journal_postings.c.account == payable, journal_entries.c.created_at < t1)
        ).scalar_one()
        info = {
            r.id: r
            for r in conn.execute(
                select(rentals.c.id, rentals.c.cabinet_id, rentals.c.ended_at, rentals.c.duration_s).where(
                    rentals.c.id.in_(list(per))
                )
            )
        }
    lines = []
    for rental_id in sorted(per, key=lambda i: (info[i].ended_at or 0, i)):
        s, r = per[rental_id], info[rental_id]
        ended = datetime.fromtimestamp(r.ended_at, zone).isoformat(timespec="seconds") if r.ended_at else ""
        lines.append(
            SettlementLine(
                rental_id,
                r.cabinet_id,
                ended,
                round((r.duration_s or 0) / 60),
                s["fee"],
                s["refunds"],
                s["fee"] - s["refunds"],
                s["share"],
            )
        )
    fees = sum(line.fee for line in lines)
    refunds = sum(line.refunds for line in lines)
    share = sum(line.merchant_share for line in lines)
    return Settlement(
        merchant_id=merchant_id,
        merchant=m.name,
        currency=m.currency,
        timezone=m.timezone,
        period_from=period_from.isoformat(),
        period_to=period_to.isoformat(),
        revenue_share_bp=m.revenue_share_bp,
        rentals=sum(1 for line in lines if line.fee),
        fees=fees,
        refunds=refunds,
        net=fees - refunds,
        merchant_share=share,
        platform_share=fees - refunds - share,
        payouts=payouts,
        payable_at_end=-int(at_end),
        lines=tuple(lines),
    )
