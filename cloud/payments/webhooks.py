"""Signed provider webhooks: HMAC-SHA256 over "timestamp.body", a timestamp tolerance, and
processing exactly once (the event id is stored in the same transaction as its effect).

Header format (like the big providers): ``Payment-Signature: t=<unix seconds>,v1=<hex>``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from cloud.db import payments, rentals, webhooks_received
from cloud.errors import CloudError

SIGNATURE_HEADER = "Payment-Signature"


class WebhookRejected(CloudError, ValueError):
    """A webhook failed verification; the message says why (never processed)."""

    status = 400
    code = "webhook_rejected"


class NotificationIgnored(WebhookRejected):
    """A notification that verified but asks nothing of the cloud (an event type it does not act
    on). The notify route answers it 200, so the provider stops sending it again."""

    status = 400  # never reaches a client as an error: POST /api/payments/{provider}/notify answers 200
    code = "notification_ignored"


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The signature header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, body: bytes, header: str | None, now: float, tolerance_s: int) -> dict:
    """Check the signature and age of a webhook and return its parsed JSON body."""
    if not header:
        raise WebhookRejected(f"missing {SIGNATURE_HEADER} header")
    if not header.isascii():  # hmac.compare_digest raises TypeError on non-ASCII text
        raise WebhookRejected(f"malformed {SIGNATURE_HEADER} header: not ASCII")
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError) as e:
        raise WebhookRejected(f"malformed {SIGNATURE_HEADER} header: expected t=<unix>,v1=<hex>") from e
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    if not hmac.compare_digest(expected, given):
        raise WebhookRejected("signature does not match the body (wrong secret or altered body)")
    if abs(now - timestamp) > tolerance_s:
        raise WebhookRejected(
            f"timestamp {timestamp} is {now - timestamp:.0f} s away from now (tolerance {tolerance_s} s)"
        )
    try:
        event = json.loads(body)
    except ValueError as e:
        raise WebhookRejected(f"body is not JSON: {e}") from e
    if (
        not isinstance(event, dict)
        or not isinstance(event.get("id"), str)
        or not isinstance(event.get("type"), str)
    ):
        raise WebhookRejected("body must be a JSON object with string 'id' and 'type'")
    return event


@dataclass(frozen=True)
class WebhookOutcome:
    event_id: str
    type: str
    duplicate: bool


class WebhookInbox:
    """Verifies webhooks and applies each event once, whatever the number of deliveries."""

    def __init__(
        self, engine: Engine, provider: str, secret: str, clock: Callable[[], float], tolerance_s: int = 300
    ) -> None:
        self.engine = engine
        self.provider = provider
        self.secret = secret
        self.clock = clock
        self.tolerance_s = tolerance_s

    def handle(self, body: bytes, signature: str | None) -> WebhookOutcome:
        """Verify and apply one delivery; raises WebhookRejected for a bad one."""
        event = verify(self.secret, body, signature, self.clock(), self.tolerance_s)
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(webhooks_received).values(
                        event_id=event["id"],
                        provider=self.provider,
                        type=event["type"],
                        payload=body.decode(),
                        received_at=self.clock(),
                    )
                )
                _apply(conn, event)
        except IntegrityError:
            with self.engine.connect() as conn:
                seen = conn.execute(
                    select(webhooks_received.c.event_id).where(webhooks_received.c.event_id == event["id"])
                ).first()
            if seen is None:
                raise
            return WebhookOutcome(event["id"], event["type"], True)
        return WebhookOutcome(event["id"], event["type"], False)


def _apply(conn: Connection, event: dict) -> None:
    """The effect of one provider event on our records (confirmation and hold expiry)."""
    data = event.get("data") or {}
    ref = data.get("ref")
    kind = event["type"]
    if kind in ("hold.captured", "hold.voided", "refund.succeeded") and ref:
        conn.execute(
            update(payments)
            .where(payments.c.provider_ref == ref, payments.c.status == "succeeded")
            .values(status="confirmed")
        )
    elif kind == "hold.expired" and data.get("hold_ref"):
        conn.execute(
            update(rentals)
            .where(rentals.c.hold_ref == data["hold_ref"], rentals.c.hold_status == "held")
            .values(hold_status="expired")
        )
