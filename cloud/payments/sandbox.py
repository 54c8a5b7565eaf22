"""A built-in payment provider that behaves like a real card network, for the demo and tests.

It keeps its own tables (``sandbox_*``) as a real provider keeps its own books, and:
- holds expire ``hold_ttl_s`` after authorisation (a capture then fails with HoldExpired);
- test card tokens choose the outcome (docs/money.md lists them):
  ``tok_ok``: approves; ``tok_decline``: card_declined; ``tok_insufficient``:
  insufficient_funds; ``tok_expired``: expired_card; ``tok_limit_<n>``: approves holds up to
  n minor units, insufficient_funds above;
- one capture per hold, at most the hold (partial: the rest is released), several refunds up
  to the captured amount;
- replaying an idempotency key returns the first result (or the same error); reusing it for a
  different request raises IdempotencyConflict;
- webhooks for every outcome, signed, delivered ``webhook_delay_s`` late and ``webhook_copies``
  times (``due_webhooks``), as real providers do.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from cloud.db import sandbox_holds, sandbox_requests, sandbox_webhooks
from cloud.payments.provider import (
    Capture,
    Declined,
    Hold,
    HoldExpired,
    IdempotencyConflict,
    InvalidRequest,
    PaymentError,
    Refund,
    Void,
)
from cloud.payments.webhooks import SIGNATURE_HEADER, sign

_ERRORS: dict[str, type[PaymentError]] = {
    "card_declined": Declined,
    "insufficient_funds": Declined,
    "expired_card": Declined,
    "hold_expired": HoldExpired,
    "invalid_request": InvalidRequest,
}
_RESULTS = {"authorize": Hold, "capture": Capture, "void": Void, "refund": Refund}


@dataclass(frozen=True)
class WebhookDelivery:
    """One HTTP delivery the provider would make: POST ``body`` with ``headers``."""

    body: bytes
    headers: dict[str, str]


class SandboxProvider:
    """The faithful fake provider (see module doc)."""

    name = "sandbox"

    def __init__(
        self,
        engine: Engine,
        clock: Callable[[], float],
        webhook_secret: str,
        hold_ttl_s: float = 7 * 86400,
        webhook_delay_s: float = 0.0,
        webhook_copies: int = 1,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.webhook_secret = webhook_secret
        self.hold_ttl_s = hold_ttl_s
        self.webhook_delay_s = webhook_delay_s
        self.webhook_copies = webhook_copies

    # --- the Provider interface ----------------------------------------------------------

    def authorize(self, card_token: str, amount: int, currency: str, idempotency_key: str) -> Hold:
        request: dict[str, Any] = {"card_token": card_token, "amount": amount, "currency": currency}
        return self._idempotent(
            "authorize", idempotency_key, request, lambda c: self._authorize(c, **request)
        )

    def capture(self, hold_ref: str, amount: int, idempotency_key: str) -> Capture:
        request: dict[str, Any] = {"hold_ref": hold_ref, "amount": amount}
        return self._idempotent("capture", idempotency_key, request, lambda c: self._capture(c, **request))

    def void(self, hold_ref: str, idempotency_key: str) -> Void:
        request: dict[str, Any] = {"hold_ref": hold_ref}
        return self._idempotent("void", idempotency_key, request, lambda c: self._void(c, **request))

    def refund(self, hold_ref: str, amount: int, idempotency_key: str) -> Refund:
        request: dict[str, Any] = {"hold_ref": hold_ref, "amount": amount}
        return self._idempotent("refund", idempotency_key, request, lambda c: self._refund(c, **request))

    # --- provider-side housekeeping ------------------------------------------------------

    def expire_holds(self) -> list[str]:
        """Expire holds past their time (a real provider does this on its own); returns their refs."""
        now = self.clock()
        with self.engine.begin() as conn:
            refs = [
                r.id
                for r in conn.execute(
                    select(sandbox_holds.c.id).where(
                        sandbox_holds.c.status == "held", sandbox_holds.c.expires_at <= now
                    )
                )
            ]
            for ref in refs:
                self._expire(conn, ref)
        return refs

    def due_webhooks(self) -> list[WebhookDelivery]:
        """Webhook deliveries whose time has come, signed now; each is handed out once."""
        now = self.clock()
        with self.engine.begin() as conn:
            rows = conn.execute(
                select(sandbox_webhooks)
                .where(sandbox_webhooks.c.delivered_at.is_(None), sandbox_webhooks.c.deliver_at <= now)
                .order_by(sandbox_webhooks.c.id)
            ).all()
            for row in rows:
                conn.execute(
                    update(sandbox_webhooks).where(sandbox_webhooks.c.id == row.id).values(delivered_at=now)
                )
        out = []
        for row in rows:
            body = row.payload.encode()
            out.append(WebhookDelivery(body, {SIGNATURE_HEADER: sign(self.webhook_secret, body, int(now))}))
        return out

    def hold_status(self, hold_ref: str) -> dict:
        """The provider's view of a hold (for tests and the operator)."""
        with self.engine.begin() as conn:
            self._expire_if_due(conn, hold_ref)
            row = conn.execute(select(sandbox_holds).where(sandbox_holds.c.id == hold_ref)).mappings().first()
        if row is None:
            raise InvalidRequest(f"no such hold {hold_ref}")
        return dict(row)

    # --- internals -----------------------------------------------------------------------

    def _idempotent(
        self, operation: str, key: str, request: dict[str, Any], run: Callable[[Connection], Any]
    ) -> Any:
        request_json = json.dumps(request, sort_keys=True)
        with self.engine.begin() as conn:
            previous = conn.execute(
                select(sandbox_requests).where(sandbox_requests.c.idempotency_key == key)
            ).first()
            if previous is not None:
                if previous.operation != operation or previous.request != request_json:
                    raise IdempotencyConflict(
                        f"idempotency key {key!r} was used for {previous.operation} {previous.request}, "
                        f"not {operation} {request_json}"
                    )
                return _replay(operation, json.loads(previous.response))
        try:
            with self.engine.begin() as conn:
                try:
                    result = run(conn)
                    response = {"ok": asdict(result)}
                except PaymentError as e:  # recorded with its side effects (e.g. an expiry), replayed as is
                    response = {"error": {"code": e.code, "message": str(e)}}
                    result = e
                conn.execute(
                    insert(sandbox_requests).values(
                        idempotency_key=key,
                        operation=operation,
                        request=request_json,
                        response=json.dumps(response),
                        created_at=self.clock(),
                    )
                )
        except IntegrityError:
            # a concurrent call with the same key won: return its result
            return self._idempotent(operation, key, request, run)
        if isinstance(result, PaymentError):
            raise result
        return result

    def _authorize(self, conn: Connection, card_token: str, amount: int, currency: str) -> Hold:
        if amount <= 0:
            raise InvalidRequest(f"hold amount must be positive, got {amount}")
        _check_card(card_token, amount)
        now = self.clock()
        hold = Hold(f"hold_{uuid.uuid4().hex[:20]}", amount, currency, now + self.hold_ttl_s)
        conn.execute(
            insert(sandbox_holds).values(
                id=hold.hold_ref,
                card_token=card_token,
                amount=amount,
                currency=currency,
                status="held",
                created_at=now,
                expires_at=hold.expires_at,
            )
        )
        self._webhook(
            conn, "hold.authorized", {"ref": hold.hold_ref, "hold_ref": hold.hold_ref, "amount": amount}
        )
        return hold

    def _capture(self, conn: Connection, hold_ref: str, amount: int) -> Capture:
        row = self._hold_for_update(conn, hold_ref)
        if row.status == "expired":
            raise HoldExpired(
                f"hold {hold_ref} expired at {row.expires_at:.0f}; its money is no longer reserved"
            )
        if row.status != "held":
            raise InvalidRequest(f"hold {hold_ref} is {row.status}, cannot capture")
        if not 0 < amount <= row.amount:
            raise InvalidRequest(
                f"capture of {amount} must be between 1 and the hold {row.amount} ({hold_ref})"
            )
        conn.execute(
            update(sandbox_holds)
            .where(sandbox_holds.c.id == hold_ref)
            .values(status="captured", captured=amount)
        )
        capture = Capture(hold_ref, f"cap_{uuid.uuid4().hex[:20]}", amount, row.amount - amount)
        self._webhook(
            conn, "hold.captured", {"ref": capture.capture_ref, "hold_ref": hold_ref, "amount": amount}
        )
        return capture

    def _void(self, conn: Connection, hold_ref: str) -> Void:
        row = self._hold_for_update(conn, hold_ref)
        if row.status in ("voided", "expired"):
            return Void(hold_ref, 0)  # nothing left to release
        if row.status != "held":
            raise InvalidRequest(f"hold {hold_ref} is {row.status}, cannot void")
        conn.execute(update(sandbox_holds).where(sandbox_holds.c.id == hold_ref).values(status="voided"))
        self._webhook(
            conn, "hold.voided", {"ref": f"void_{hold_ref}", "hold_ref": hold_ref, "amount": row.amount}
        )
        return Void(hold_ref, row.amount)

    def _refund(self, conn: Connection, hold_ref: str, amount: int) -> Refund:
        row = self._hold_for_update(conn, hold_ref)
        if row.status != "captured":
            raise InvalidRequest(f"hold {hold_ref} is {row.status}: only captured money can be refunded")
        if not 0 < amount <= row.captured - row.refunded:
            raise InvalidRequest(
                f"refund of {amount} must be between 1 and the refundable {row.captured - row.refunded} ({hold_ref})"
            )
        total = row.refunded + amount
        conn.execute(update(sandbox_holds).where(sandbox_holds.c.id == hold_ref).values(refunded=total))
        refund = Refund(hold_ref, f"re_{uuid.uuid4().hex[:20]}", amount, total)
        self._webhook(
            conn, "refund.succeeded", {"ref": refund.refund_ref, "hold_ref": hold_ref, "amount": amount}
        )
        return refund

    def _hold_for_update(self, conn: Connection, hold_ref: str):  # type: ignore[no-untyped-def]
        self._expire_if_due(conn, hold_ref)
        row = conn.execute(
            select(sandbox_holds).where(sandbox_holds.c.id == hold_ref).with_for_update()
        ).first()
        if row is None:
            raise InvalidRequest(f"no such hold {hold_ref}")
        return row

    def _expire_if_due(self, conn: Connection, hold_ref: str) -> None:
        row = conn.execute(select(sandbox_holds).where(sandbox_holds.c.id == hold_ref)).first()
        if row is not None and row.status == "held" and row.expires_at <= self.clock():
            self._expire(conn, hold_ref)

    def _expire(self, conn: Connection, hold_ref: str) -> None:
        conn.execute(update(sandbox_holds).where(sandbox_holds.c.id == hold_ref).values(status="expired"))
        self._webhook(conn, "hold.expired", {"ref": f"exp_{hold_ref}", "hold_ref": hold_ref})

    def _webhook(self, conn: Connection, kind: str, data: dict) -> None:
        event_id = f"evt_{uuid.uuid4().hex[:24]}"
        payload = json.dumps(
            {"id": event_id, "type": kind, "created": self.clock(), "data": data}, sort_keys=True
        )
        for _ in range(self.webhook_copies):
            conn.execute(
                insert(sandbox_webhooks).values(
                    event_id=event_id, payload=payload, deliver_at=self.clock() + self.webhook_delay_s
                )
            )


def _check_card(card_token: str, amount: int) -> None:
    """Apply the test card rules (module doc)."""
    if card_token == "tok_ok":
        return
    if card_token == "tok_decline":
        raise Declined("the card was declined by its issuer", "card_declined")
    if card_token == "tok_insufficient":
        raise Declined("insufficient funds on the card", "insufficient_funds")
    if card_token == "tok_expired":
        raise Declined("the card has expired", "expired_card")
    if card_token.startswith("tok_limit_") and card_token[10:].isdigit():
        if amount > int(card_token[10:]):
            raise Declined(
                f"insufficient funds: {amount} above the card's {card_token[10:]}", "insufficient_funds"
            )
        return
    raise InvalidRequest(f"unknown sandbox card token {card_token!r} (see docs/money.md for test cards)")


def _replay(operation: str, response: dict):  # type: ignore[no-untyped-def]
    if "error" in response:
        err = response["error"]
        raise _ERRORS.get(err["code"], PaymentError)(err["message"], err["code"])
    return _RESULTS[operation](**response["ok"])
