"""Merchant revenue share, really paid out: WeChat profit sharing, Alipay settle, Stripe Connect.

``pay_merchant`` sends a merchant's share through a provider's ``payout`` once per
``reference`` (the idempotency key is ``payout:<merchant>:<reference>``: a retry after a crash
or a timeout pays once), records it in ``merchant_payouts`` and books it on the merchant's
payable account (``money.post_merchant_payout``), so settlement statements show what was paid
and when. The sandbox has no payout rail: there a payout is a bank transfer the operator made,
recorded as paid. A payout above what the merchant is owed is refused.

WeChat and Alipay share per payment (profit sharing of one collected order, ``settle`` of one
trade): there the payout is split over the merchant's paid rentals at that provider, oldest
first, each taking at most that rental's share not paid out yet, one provider call and one
``merchant_payouts`` row per piece (key ``payout:<merchant>:<reference>:<rental>``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Engine, RowMapping, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from cloud import money
from cloud.db import merchant_payouts, merchants, rentals
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


PER_PAYMENT = ("wechat", "alipay")
"""Providers that pay a merchant out of one payment at a time."""


def _pieces(
    engine: Engine, provider: str, default: str, merchant_id: int, amount: int, currency: str
) -> list[tuple[str, str, int]]:
    """(rental id, hold ref, amount) covering ``amount`` from the rentals' unpaid shares."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                rentals.c.id, rentals.c.hold_ref, rentals.c.captured, rentals.c.refunded, rentals.c.share_bp
            )
            .where(
                rentals.c.merchant_id == merchant_id,
                rentals.c.currency == currency,
                func.coalesce(rentals.c.provider, default) == provider,
                rentals.c.payment_status == "paid",
                rentals.c.captured > rentals.c.refunded,
            )
            .order_by(rentals.c.ended_at, rentals.c.id)
        ).all()
        shared: dict[str, int] = {}
        for detail, paid in conn.execute(
            select(merchant_payouts.c.detail, merchant_payouts.c.amount).where(
                merchant_payouts.c.merchant_id == merchant_id,
                merchant_payouts.c.provider == provider,
                merchant_payouts.c.status.in_(("sending", "pending", "paid")),
            )
        ):
            rid = json.loads(detail or "{}").get("rental_id")
            if rid:
                shared[rid] = shared.get(rid, 0) + paid
    out, left = [], amount
    for rid, hold_ref, captured, refunded, share_bp in rows:
        free = money.merchant_share(captured - refunded, share_bp) - shared.get(rid, 0)
        if free <= 0 or left <= 0:
            continue
        part = min(free, left)
        out.append((rid, hold_ref, part))
        left -= part
    if left > 0:
        raise PayoutError(
            f"{provider} pays out of single payments: the merchant's paid rentals there leave "
            f"{amount - left} {currency} minor units to share, not {amount}"
        )
    return out


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
    started = False
    if done is None and name in PER_PAYMENT:
        with engine.connect() as conn:  # the pieces of this payout, if any were made already
            started = (
                conn.execute(
                    select(merchant_payouts.c.id).where(
                        merchant_payouts.c.idempotency_key.startswith(f"{key}:", autoescape=True)
                    )
                ).first()
                is not None
            )
    if done is None and not started and amount > owed(engine, merchant_id, currency):
        raise PayoutError(
            f"merchant {merchant_id} is owed {owed(engine, merchant_id, currency)} {currency} minor units, "
            f"not {amount}"
        )
    destination = m["payout_account"] or f"merchant:{merchant_id}"
    now = clock()
    if name in PER_PAYMENT:
        return _pay_per_payment(engine, providers[name], name, m, destination, amount, currency, reference, key,
                                clock, default=next(iter(providers)))  # fmt: skip
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


def _pay_per_payment(
    engine: Engine,
    provider: Provider,
    name: str,
    m: RowMapping,
    destination: str,
    amount: int,
    currency: str,
    reference: str,
    key: str,
    clock: Callable[[], float],
    default: str,
) -> dict[str, Any]:
    """The payout as pieces, one per payment (see the module doc); replays pay nothing twice."""
    with engine.connect() as conn:
        done = (
            conn.execute(
                select(merchant_payouts).where(
                    merchant_payouts.c.idempotency_key.startswith(f"{key}:", autoescape=True)
                )
            )
            .mappings()
            .all()
        )
    if done:
        pieces = [(json.loads(r["detail"])["rental_id"], json.loads(r["detail"])["hold_ref"], r["amount"])
                  for r in done]  # fmt: skip
    else:
        pieces = _pieces(engine, name, default, m["id"], amount, currency)
    rows = []
    for rental_id, hold_ref, part in pieces:
        sub_key = f"{key}:{rental_id}"
        with engine.begin() as conn:
            row = (
                conn.execute(select(merchant_payouts).where(merchant_payouts.c.idempotency_key == sub_key))
                .mappings()
                .first()
            )
            if row is None:
                conn.execute(
                    insert(merchant_payouts).values(
                        merchant_id=m["id"], provider=name, destination=destination, amount=part, currency=currency,
                        status="sending", idempotency_key=sub_key, created_at=clock(),
                        detail=json.dumps({"rental_id": rental_id, "hold_ref": hold_ref}),
                    )
                )  # fmt: skip
            elif row["status"] in ("pending", "paid"):
                rows.append(_json(row))
                continue
        try:
            p = provider.payout(destination, part, currency, hold_ref, sub_key)  # type: ignore[attr-defined]
        except PaymentError:
            with engine.begin() as conn:
                conn.execute(
                    update(merchant_payouts)
                    .where(merchant_payouts.c.idempotency_key == sub_key)
                    .values(status="failed")
                )
            raise
        now = clock()
        with engine.begin() as conn:
            changed = conn.execute(
                update(merchant_payouts)
                .where(
                    merchant_payouts.c.idempotency_key == sub_key,
                    merchant_payouts.c.status.in_(("sending", "failed")),
                )
                .values(payout_ref=p.payout_ref, status=p.status, paid_at=now if p.status == "paid" else None)
            ).rowcount
            if changed:
                money.post_merchant_payout(conn, m["id"], part, currency, f"{reference}:{rental_id}", now)
            rows.append(_json(conn.execute(
                select(merchant_payouts).where(merchant_payouts.c.idempotency_key == sub_key)).mappings().one()))  # fmt: skip
    status = "paid" if all(r["status"] == "paid" for r in rows) else "pending"
    return {"merchant_id": m["id"], "provider": name, "amount": sum(r["amount"] for r in rows), "currency": currency,
            "reference": reference, "status": status, "pieces": rows}  # fmt: skip


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
