"""What a verified notification from a payment provider does to our records.

Each provider's adapter verifies its own notifications (signatures, decryption) and gives them
to the cloud as :class:`cloud.payments.ProviderEvent`. Here each event is applied once: the first
delivery is kept in ``webhooks_received`` under ``<provider>:<event id>`` and applied in the same
transaction where it can be; a duplicate changes nothing. Notifications may come before the API
answer they confirm (the hold ref is then not on a rental yet): such an event is kept and applied
when the answer lands (``replay_unmatched``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from cloud.alerts import add_alert
from cloud.db import payments, rentals, webhooks_received
from cloud.payments import ProviderEvent
from cloud.rentals import EjectCommand, RentalService

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EventOutcome:
    event_id: str
    kind: str
    duplicate: bool
    applied: bool  # False: no rental has this hold yet (kept; applied when its answer lands)
    command: EjectCommand | None = None  # an eject to sign and send (a hold just confirmed)


def apply_provider_event(
    engine: Engine, service: RentalService, provider: str, event: ProviderEvent, clock: Callable[[], float]
) -> EventOutcome:
    key = f"{provider}:{event.event_id}"[:100]
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(webhooks_received).values(
                    event_id=key,
                    provider=provider,
                    type=event.kind,
                    payload=json.dumps(
                        {
                            "hold_ref": event.hold_ref,
                            "amount": event.amount,
                            "currency": event.currency,
                            "provider_type": event.provider_type,
                            "data": dict(event.data),
                        },
                        default=str,
                    ),
                    received_at=clock(),
                )
            )
    except IntegrityError:
        return EventOutcome(event.event_id, event.kind, True, True)
    applied, command = _apply(engine, service, provider, event, clock)
    return EventOutcome(event.event_id, event.kind, False, applied, command)


def _rental_of(engine: Engine, service: RentalService, provider: str, hold_ref: str | None) -> dict | None:
    if not hold_ref:
        return None
    with engine.connect() as conn:
        row = conn.execute(select(rentals).where(rentals.c.hold_ref == hold_ref)).mappings().first()
    if row is None or (row["provider"] or service.billing.default) != provider:
        return None
    return dict(row)


def _apply(
    engine: Engine, service: RentalService, provider: str, event: ProviderEvent, clock: Callable[[], float]
) -> tuple[bool, EjectCommand | None]:
    r = _rental_of(engine, service, provider, event.hold_ref)
    if r is None:
        log.info("%s event %s (%s) names hold %s, on no rental (yet)", provider, event.event_id, event.kind,
                 event.hold_ref)  # fmt: skip
        return False, None
    now = clock()
    match event.kind:
        case "hold.confirmed":
            return True, service.on_hold_confirmed(provider, r["hold_ref"])
        case "hold.expired":
            with engine.begin() as conn:
                conn.execute(
                    update(rentals)
                    .where(rentals.c.id == r["id"], rentals.c.hold_status.in_(("held", "pending")))
                    .values(hold_status="expired")
                )
        case "hold.captured" | "hold.voided" | "refund.succeeded":
            # the provider's reference of the operation, by whatever name the adapter gives it
            refs = {event.data.get(k) for k in ("ref", "order_id", "refund_id", "out_request_no")} - {None}
            kind = {"hold.captured": "capture", "hold.voided": "void", "refund.succeeded": "refund"}[
                event.kind
            ]
            with engine.begin() as conn:
                rows = conn.execute(
                    select(payments.c.id, payments.c.provider_ref, payments.c.kind, payments.c.detail).where(
                        payments.c.rental_id == r["id"], payments.c.status == "succeeded"
                    )
                ).all()
                for pid, ref, pkind, detail in rows:
                    on_hold = json.loads(detail or "{}").get("hold_ref") == event.hold_ref
                    same_kind = pkind == kind or (kind == "refund" and pkind == "refund_excess")
                    if ref in refs or (same_kind and kind != "refund" and (on_hold or ref == event.hold_ref)):
                        conn.execute(update(payments).where(payments.c.id == pid).values(status="confirmed"))
        case "payment.failed":
            with engine.begin() as conn:
                conn.execute(update(rentals).where(rentals.c.id == r["id"]).values(flag="collection_failed"))
                add_alert(conn, r["cabinet_id"], "payment_failed", "warning",
                          f"{provider} could not collect the fee of rental {r['id']}: {event.data.get('reason', '')}",
                          at=now, event_id=key_of(provider, event))  # fmt: skip
        case "dispute.opened":
            with engine.begin() as conn:
                conn.execute(update(rentals).where(rentals.c.id == r["id"]).values(flag="chargeback_open"))
                add_alert(conn, r["cabinet_id"], "chargeback", "critical",
                          f"{provider} dispute on rental {r['id']}: {event.amount} {event.currency} contested",
                          at=now, event_id=key_of(provider, event))  # fmt: skip
        case "dispute.funds_withdrawn" | "dispute.funds_reinstated":
            # Stripe: the disputed amount left our balance at the open, and comes back if won.
            # Each is booked once per dispute, whatever order the notifications come in.
            dispute_ref = str(event.data.get("dispute_ref") or event.event_id)
            service.billing.book_dispute_withdrawal(r["id"], int(event.amount or 0), dispute_ref)
            if event.kind == "dispute.funds_reinstated":
                service.billing.book_dispute_reinstated(r["id"], dispute_ref)
        case "dispute.closed":
            dispute_ref = str(event.data.get("dispute_ref") or event.event_id)
            withdrawn = bool(event.data.get("withdraws_funds"))
            if withdrawn:  # the withdrawal's own notification may not have come (yet)
                service.billing.book_dispute_withdrawal(r["id"], int(event.amount or 0), dispute_ref)
            if event.data.get("outcome") == "lost":
                service.billing.book_chargeback(
                    r["id"], int(event.amount or 0), dispute_ref, withdrawn=withdrawn
                )
            else:
                if withdrawn:
                    service.billing.book_dispute_reinstated(r["id"], dispute_ref)
                with engine.begin() as conn:
                    conn.execute(update(rentals).where(rentals.c.id == r["id"]).values(flag="chargeback_won"))
        case _:
            log.info("%s event %s of kind %s: nothing to do", provider, event.event_id, event.kind)
    return True, None


def key_of(provider: str, event: ProviderEvent) -> str:
    return f"{provider}:{event.event_id}"[:100]


REPLAYED = ("hold.confirmed", "hold.captured", "hold.voided", "refund.succeeded")
REPLAY_WINDOW_S = 2 * 86400


def replay_unmatched(
    engine: Engine, service: RentalService, provider: str, clock: Callable[[], float]
) -> int:
    """Apply again the recent events that came before the API answer they confirm: a
    confirmation whose hold was not on a rental yet, a capture or refund notified before we
    recorded it. Applying them again is idempotent (each only moves a state forward)."""
    done = 0
    with engine.connect() as conn:
        kept = (
            conn.execute(
                select(webhooks_received).where(
                    webhooks_received.c.provider == provider,
                    webhooks_received.c.type.in_(REPLAYED),
                    webhooks_received.c.received_at >= clock() - REPLAY_WINDOW_S,
                )
            )
            .mappings()
            .all()
        )
        unconfirmed = set(
            conn.execute(select(payments.c.rental_id).where(payments.c.status == "succeeded")).scalars()
        )
    for row in kept:
        payload = json.loads(row["payload"])
        hold_ref = payload.get("hold_ref")
        if not hold_ref:
            continue
        r = _rental_of(engine, service, provider, hold_ref)
        if r is None:
            continue
        if row["type"] == "hold.confirmed" and r["hold_status"] != "pending":
            continue
        if row["type"] != "hold.confirmed" and r["id"] not in unconfirmed:
            continue
        event = ProviderEvent(
            row["event_id"],
            row["type"],
            hold_ref,
            payload.get("amount"),
            payload.get("currency"),
            payload.get("provider_type", ""),
            payload.get("data") or {},
        )
        _, command = _apply(engine, service, provider, event, clock)
        if command is not None:
            service.pending_commands.append(command)
        done += 1
    return done
