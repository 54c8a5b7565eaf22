"""The payment provider interface: the hold life cycle with idempotency keys.

Every call takes an idempotency key derived from the rental (``rental_key``), so a call
retried after a crash or a timeout has its effect once, and a replay returns the first
result (a decline is replayed as the same decline). Calls are blocking: callers in asyncio
run them in a worker thread, and never inside an open database transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol

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


class ProviderUnavailable(PaymentError):
    """The provider answered 5xx, or not at all in time: the call may or may not have taken effect.

    Retry with the same idempotency key (the provider then returns the first result)."""

    status = 503
    code = "provider_unavailable"


class IdempotencyConflict(PaymentError):
    """The idempotency key was used before for a different request."""

    status = 500
    code = "idempotency_conflict"


@dataclass(frozen=True)
class Hold:
    """Money reserved on a card, or a reservation the renter still has to confirm.

    ``status`` is ``held`` when the money is reserved now (a card hold, a frozen Alipay
    authorization), ``pending`` when the renter must first confirm in the provider's app
    (a WeChat Pay Score service order before ``USER_CONFIRMED``; a Stripe PaymentIntent that
    needs 3-D Secure): the phone gets ``client_action`` (what the provider's SDK on the phone
    needs) and the hold becomes ``held`` with a ``hold.confirmed`` notification
    (:class:`ProviderEvent`) or a :meth:`RealProvider.hold_status` query.
    """

    hold_ref: str
    amount: int
    currency: str
    expires_at: float
    status: str = "held"  # held | pending
    client_action: Mapping[str, Any] | None = None


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


#: The kinds of :class:`ProviderEvent`, whatever the provider calls them.
EVENT_KINDS = (
    "hold.confirmed",  # the renter confirmed a pending hold: the money is reserved now
    "hold.expired",  # the hold or authorization ran out before a capture
    "hold.captured",  # a capture completed (async confirmation of a synchronous answer)
    "hold.voided",  # the hold was released without a capture
    "refund.succeeded",
    "payment.failed",  # a capture the provider could not collect (the fee stays due)
    "dispute.opened",  # a chargeback or provider dispute: ``amount`` is what is contested
    "dispute.closed",  # ``data["outcome"]``: won | lost
    "payout.paid",  # money paid out to a merchant's account arrived
    "payout.failed",
)


@dataclass(frozen=True)
class ProviderEvent:
    """One verified notification from a provider, in the cloud's terms.

    ``event_id`` is the provider's own id of the notification (a duplicate delivery has the same
    one); ``hold_ref`` is the reference :meth:`Provider.authorize` returned; amounts are integer
    minor units.
    """

    event_id: str
    kind: str  # one of EVENT_KINDS
    hold_ref: str | None
    amount: int | None = None
    currency: str | None = None
    provider_type: str = ""  # the provider's own name of the event (e.g. charge.dispute.created)
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StatementLine:
    """One line of the provider's statement for a day (the trade bill, the balance transactions).

    ``amount`` is signed, in minor units: positive when money came in for the merchant (a
    capture), negative when it went out (a refund, a lost dispute, a fee, a payout).
    """

    provider_ref: str  # the provider's id of the transaction
    kind: str  # capture | refund | dispute | fee | payout
    amount: int
    currency: str
    at: float  # unix time
    hold_ref: str | None = None


@dataclass(frozen=True)
class Payout:
    """Money sent to a merchant's account (WeChat profit sharing, Alipay settle, a Connect transfer)."""

    payout_ref: str
    destination: str
    amount: int
    currency: str
    status: str  # pending | paid | failed


class RealProvider(Provider, Protocol):
    """A provider reached over the network (WeChat Pay, Alipay, Stripe): also notifications,
    queries after a restart, statements for reconciliation and merchant payouts."""

    def hold_status(self, hold_ref: str) -> str:
        """The provider's state of a hold: pending | held | captured | voided | expired."""
        ...

    def parse_notification(self, headers: Mapping[str, str], body: bytes) -> ProviderEvent:
        """Verify one notification exactly as the provider documents it and return it in the
        cloud's terms; raises ``cloud.payments.webhooks.WebhookRejected`` for a bad one."""
        ...

    def statement(self, day: date) -> list[StatementLine]:
        """The provider's statement lines for ``day`` (UTC)."""
        ...

    def payout(
        self, destination: str, amount: int, currency: str, hold_ref: str | None, idempotency_key: str
    ) -> Payout:
        """Pay ``amount`` to a merchant's account, once per idempotency key (``hold_ref``: the
        payment it is a share of, where the provider shares per payment, e.g. WeChat)."""
        ...


def rental_key(rental_id: str, operation: str, n: int | str = 0) -> str:
    """The idempotency key of one money operation on a rental, e.g. ``rental:R1:capture:0``."""
    return f"rental:{rental_id}:{operation}:{n}"
