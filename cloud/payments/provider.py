"""The payment provider interface: the hold life cycle with idempotency keys.

Every call takes an idempotency key derived from the rental (``rental_key``), so a call
retried after a crash or a timeout has its effect once, and a replay returns the first
result (a decline is replayed as the same decline). Calls are blocking: callers in asyncio
run them in a worker thread, and never inside an open database transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cloud.errors import CloudError


class PaymentError(CloudError):
    """A provider refused a request; ``code`` is machine-readable, the message is for people.

    Callers turn it into their own error (a refused rental, a failed refund); one that reaches
    a request unhandled is a bug (500, logged).
    """

    status = 500
    code = "payment_error"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code:
            self.code = code


class Declined(PaymentError):
    """The card was declined (code: card_declined, insufficient_funds, expired_card)."""

    status = 500
    code = "card_declined"


class HoldExpired(PaymentError):
    """The hold expired before it was captured: its money is no longer reserved."""

    status = 500
    code = "hold_expired"


class InvalidRequest(PaymentError):
    """The request cannot apply: unknown hold, capture above the hold, refund above the capture..."""

    status = 500
    code = "invalid_request"


class IdempotencyConflict(PaymentError):
    """The idempotency key was used before for a different request."""

    status = 500
    code = "idempotency_conflict"


@dataclass(frozen=True)
class Hold:
    """Money reserved on a card."""

    hold_ref: str
    amount: int
    currency: str
    expires_at: float


@dataclass(frozen=True)
class Capture:
    """Money taken from a hold; the rest of the hold is released."""

    hold_ref: str
    capture_ref: str
    amount: int
    released: int


@dataclass(frozen=True)
class Void:
    """A hold released without taking anything."""

    hold_ref: str
    released: int


@dataclass(frozen=True)
class Refund:
    """Money given back from a capture."""

    hold_ref: str
    refund_ref: str
    amount: int
    refunded_total: int


class Provider(Protocol):
    """What the cloud needs from a payment provider."""

    name: str

    def authorize(self, card_token: str, amount: int, currency: str, idempotency_key: str) -> Hold:
        """Reserve ``amount`` on the card; raises Declined."""
        ...

    def capture(self, hold_ref: str, amount: int, idempotency_key: str) -> Capture:
        """Take ``amount`` (at most the hold) once; the rest is released. Raises HoldExpired."""
        ...

    def void(self, hold_ref: str, idempotency_key: str) -> Void:
        """Release the whole hold."""
        ...

    def refund(self, hold_ref: str, amount: int, idempotency_key: str) -> Refund:
        """Give back ``amount`` of what was captured (several partial refunds allowed)."""
        ...


def rental_key(rental_id: str, operation: str, n: int | str = 0) -> str:
    """The idempotency key of one money operation on a rental, e.g. ``rental:R1:capture:0``."""
    return f"rental:{rental_id}:{operation}:{n}"
