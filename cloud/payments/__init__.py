"""Payments: the provider interface, the sandbox provider and signed webhooks."""

from cloud.payments.provider import (
    Capture,
    Declined,
    Hold,
    HoldExpired,
    IdempotencyConflict,
    InvalidRequest,
    PaymentError,
    Provider,
    Refund,
    Void,
    rental_key,
)
from cloud.payments.sandbox import SandboxProvider, WebhookDelivery
from cloud.payments.webhooks import (
    SIGNATURE_HEADER,
    WebhookInbox,
    WebhookOutcome,
    WebhookRejected,
    sign,
    verify,
)

__all__ = [
    "SIGNATURE_HEADER",
    "Capture",
    "Declined",
    "Hold",
    "HoldExpired",
    "IdempotencyConflict",
    "InvalidRequest",
    "PaymentError",
    "Provider",
    "Refund",
    "SandboxProvider",
    "Void",
    "WebhookDelivery",
    "WebhookInbox",
    "WebhookOutcome",
    "WebhookRejected",
    "rental_key",
    "sign",
    "verify",
]
