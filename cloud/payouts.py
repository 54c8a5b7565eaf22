"""Merchant revenue share, really paid out: WeChat profit sharing, Alipay settle, Stripe Connect.

``pay_merchant`` sends a merchant's share through a provider's ``payout`` once per
``reference`` (the idempotency key is ``payout:<merchant>:<reference>``: a retry after a crash
or a timeout pays once), records it in ``merchant_payouts`` and books it on the merchant's
payable account (``money.post_merchant_payout``), so settlement statements show what was paid
and when. The sandbox has no payout rail: there a payout is a bank transfer the operator made,
recorded as paid. A payout above what the merchant is owed is refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Engine, RowMapping, insert, select, update
from sqlalchemy.exc import IntegrityError

from cloud import money
from cloud.db import merchant_payouts, merchants
from cloud.errors import CloudError
from cloud.payments.provider import PaymentError, Provider


class PayoutError(CloudError, ValueError):
    """A payout cannot be made as asked; the message says why."""

    status = 400
    code = "bad_request"


class PayoutNotFound(PayoutError):
    status = 404
    code = "not_found"


def owed(engine: Engine, merchant_id: int, currency: str) -> int:
    """What the merchant is owed now (their payable account's credit balance)."""
    with engine.connect() as conn:
        return -money.balances(conn).get((money.merchant_payable(merchant_id), currency), 0)


def pay_merchant(
    engine: Engine,
    providers: Mapping[str, Provider],
    merchant_id: int,
    amount: int,
    currency: str,
    reference: str,
    clock: Callable[[], float],
    provider_name: str | None = None,
) -> dict[str, Any]:
    """Pay ``amount`` to the merchant once per ``reference``; returns the payout's record."""
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise PayoutError(f"amount must be a positive integer of minor units, got {amount!r}")
    if not reference or len(reference) > 100:
        raise PayoutError("reference must be 1 to 100 characters (it makes the payout idempotent)")
    key = f"payout:{merchant_id}:{reference}"
    with engine.connect() as conn:
        m = conn.execute(select(merchants).where(merchants.c.id == merchant_id)).mappings().first()
        done = (
            conn.execute(select(merchant_payouts).where(merchant_payouts.c.idempotency_key == key))
            .mappings()
            .first()
        )
    if m is None:
        raise PayoutNotFound(f"no merchant {merchant_id}")
    if done is not None and done["status"] in ("pending", "paid"):
        return _json(done)
    accepted = [p.strip() for p in (m["providers"] or "").split(",") if p.strip()]
    name = provider_name or next((p for p in accepted if p in providers), None) or next(iter(providers))
    if name not in providers:
        raise PayoutError(f"provider {name!r} is not configured here")
    if done is None and amount > owed(engine, merchant_id, currency):
        raise PayoutError(
            f"merchant {merchant_id} is owed {owed(engine, merchant_id, currency)} {currency} minor units, "
            f"not {amount}"
        )
    destination = m["payout_account"] or f"merchant:{merchant_id}"
    now = clock()
    if done is None:
        try:
            with engine.begin() as conn:
                conn.execute(
                    insert(merchant_payouts).values(
                        merchant_id=merchant_id,
                        provider=name,
                        destination=destination,
                        amount=amount,
                        currency=currency,
                        status="sending",
                        idempotency_key=key,
                        created_at=now,
                    )
                )
        except IntegrityError:
            pass  # a concurrent request for the same reference: the provider call below is idempotent
    provider = providers[name]
    payout_fn = getattr(provider, "payout", None)
    try:
        if payout_fn is None:  # the sandbox: a bank transfer the operator made
            ref, status = f"bank:{reference}", "paid"
        else:
            p = payout_fn(destination, amount, currency, None, key)
            ref, status = p.payout_ref, p.status
    except PaymentError as e:
        with engine.begin() as conn:
            conn.execute(
                update(merchant_payouts)
                .where(merchant_payouts.c.idempotency_key == key)
                .values(status="failed", detail=json.dumps({"code": e.code, "message": str(e)[:500]}))
            )
        raise
    with engine.begin() as conn:
        changed = conn.execute(
            update(merchant_payouts)
            .where(
                merchant_payouts.c.idempotency_key == key,
                merchant_payouts.c.status.in_(("sending", "failed")),
            )
            .values(payout_ref=ref, status=status, paid_at=now if status == "paid" else None)
        ).rowcount
        if changed:
            money.post_merchant_payout(conn, merchant_id, amount, currency, reference, now)
        row = (
            conn.execute(select(merchant_payouts).where(merchant_payouts.c.idempotency_key == key))
            .mappings()
            .one()
        )
    return _json(row)


def payouts_of(engine: Engine, merchant_id: int) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(merchant_payouts)
            .where(merchant_payouts.c.merchant_id == merchant_id)
            .order_by(merchant_payouts.c.id)
        ).mappings()
        return [_json(r) for r in rows]


def _json(r: RowMapping | Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": r["id"],
        "merchant_id": r["merchant_id"],
        "provider": r["provider"],
        "destination": r["destination"],
        "payout_ref": r["payout_ref"],
        "amount": r["amount"],
        "currency": r["currency"],
        "status": r["status"],
        "created_at": r["created_at"],
        "paid_at": r["paid_at"],
    }
