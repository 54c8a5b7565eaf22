"""Reconciliation: every line of a provider's statement for a day against our payment records.

``cabinet-cloud money reconcile --provider P --date D`` reads the provider's statement (WeChat's
trade bill, Alipay's bill download, Stripe's balance transactions: each adapter's ``statement``)
and matches it line by line with ``payments`` (captures, refunds, chargebacks) and
``merchant_payouts`` by the provider's reference. Anything on one side only, or with another
amount, is reported and raises a ``reconciliation_mismatch`` alert; fees are summed (they are
the provider's, not a rental's).
"""

from __future__ import annotations

import calendar
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

from sqlalchemy import Engine, select

from cloud.alerts import add_alert
from cloud.db import merchant_payouts, payments
from cloud.payments.provider import StatementLine

FLEET = "*"  # alerts about the whole fleet's money
SIGN = {
    "capture": 1,
    "refund": -1,
    "refund_excess": -1,
    "chargeback": -1,
    "withheld": -1,  # Stripe withholds the disputed amount at the open ...
    "reinstated": 1,  # ... and gives it back when the dispute is won
}


@dataclass
class Mismatch:
    ref: str
    what: str  # missing_in_journal | missing_at_provider | amount_differs | currency_differs
    ours: int | None
    theirs: int | None
    currency: str

    def __str__(self) -> str:
        return f"{self.what}: {self.ref} ours {self.ours} theirs {self.theirs} {self.currency}"


@dataclass
class Reconciliation:
    provider: str
    day: date
    matched: int = 0
    fees: dict[str, int] = field(default_factory=dict)
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def to_json_dict(self) -> dict[str, object]:
        return {
            "provider": self.provider,
            "date": self.day.isoformat(),
            "matched": self.matched,
            "fees": self.fees,
            "ok": self.ok,
            "mismatches": [m.__dict__ for m in self.mismatches],
        }


def day_bounds(day: date) -> tuple[float, float]:
    start = calendar.timegm(day.timetuple())
    return float(start), float(start + 86400)


def ours(engine: Engine, provider: str, day: date) -> dict[str, tuple[int, str]]:
    """Our money movements at ``provider`` on ``day`` (UTC): provider ref -> (signed amount, currency)."""
    lo, hi = day_bounds(day)
    out: dict[str, tuple[int, str]] = {}
    with engine.connect() as conn:
        for ref, kind, amount, currency, detail in conn.execute(
            select(
                payments.c.provider_ref,
                payments.c.kind,
                payments.c.amount,
                payments.c.currency,
                payments.c.detail,
            ).where(
                payments.c.provider == provider,
                payments.c.kind.in_(tuple(SIGN)),
                payments.c.status.in_(("succeeded", "confirmed")),
                payments.c.created_at >= lo,
                payments.c.created_at < hi,
                payments.c.provider_ref.is_not(None),
            )
        ):
            if kind == "chargeback" and json.loads(detail or "{}").get("withheld"):
                continue  # lost after a withdrawal: the provider's statement has no line for it
            if amount:
                out[ref] = (SIGN[kind] * amount, currency)
        for ref, amount, currency in conn.execute(
            select(
                merchant_payouts.c.payout_ref, merchant_payouts.c.amount, merchant_payouts.c.currency
            ).where(
                merchant_payouts.c.provider == provider,
                merchant_payouts.c.status.in_(("pending", "paid")),
                merchant_payouts.c.created_at >= lo,
                merchant_payouts.c.created_at < hi,
                merchant_payouts.c.payout_ref.is_not(None),
            )
        ):
            out[ref] = (-amount, currency)
    return out


def reconcile(
    engine: Engine, provider: str, lines: list[StatementLine], day: date, clock: Callable[[], float]
) -> Reconciliation:
    """Match ``lines`` (the provider's statement for ``day``) with our records; alert on mismatches."""
    result = Reconciliation(provider, day)
    mine = ours(engine, provider, day)
    for line in lines:
        if line.kind == "fee":
            result.fees[line.currency] = result.fees.get(line.currency, 0) + line.amount
            continue
        got = mine.pop(line.provider_ref, None)
        if got is None:
            result.mismatches.append(
                Mismatch(line.provider_ref, "missing_in_journal", None, line.amount, line.currency)
            )
        elif got[1] != line.currency:
            result.mismatches.append(
                Mismatch(line.provider_ref, "currency_differs", got[0], line.amount, line.currency)
            )
        elif got[0] != line.amount:
            result.mismatches.append(
                Mismatch(line.provider_ref, "amount_differs", got[0], line.amount, line.currency)
            )
        else:
            result.matched += 1
    for ref, (amount, currency) in sorted(mine.items()):
        result.mismatches.append(Mismatch(ref, "missing_at_provider", amount, None, currency))
    if result.mismatches:
        with engine.begin() as conn:
            for m in result.mismatches:
                add_alert(
                    conn,
                    FLEET,
                    "reconciliation_mismatch",
                    "critical",
                    f"{provider} {day.isoformat()}: {m}",
                    at=clock(),
                    event_id=f"reconcile:{provider}:{day.isoformat()}:{m.what}:{m.ref}"[:120],
                )
    return result
