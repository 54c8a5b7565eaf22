"""Stripe (cards abroad) behind the cloud's :class:`~cloud.payments.provider.RealProvider`.

The flow (docs/payments-stripe.md has the state machine and the production setup):

- the phone saves a card once: :meth:`StripeProvider.save_card` creates the Customer (if the
  renter has none) and a SetupIntent with ``usage=off_session``; the phone confirms it with its
  ``client_secret`` (Stripe's mobile SDK); :meth:`StripeProvider.attach_confirmed_setup` reads the
  confirmed SetupIntent's ``payment_method``. The cloud's card token is then
  ``"<cus_...>:<pm_...>"`` (:func:`card_token`);
- :meth:`~StripeProvider.authorize` is a PaymentIntent with ``capture_method=manual``,
  ``confirm=true``, ``off_session=true`` on the saved card: a hold until the charge's
  ``capture_before`` (Visa off session: 4 days 18 hours; otherwise 7 days). A card that needs
  3-D Secure answers ``authentication_required``: the hold is ``pending`` and ``client_action``
  holds the PaymentIntent's ``client_secret`` for the phone; it becomes ``held`` with
  ``payment_intent.amount_capturable_updated`` (``hold.confirmed``);
- :meth:`~StripeProvider.capture` captures the fee (``amount_to_capture``; the rest is released),
  :meth:`~StripeProvider.void` cancels the PaymentIntent, :meth:`~StripeProvider.refund` creates
  Refunds (partial, several), :meth:`~StripeProvider.payout` is a Connect transfer;
- :meth:`~StripeProvider.parse_notification` verifies ``Stripe-Signature`` with the SDK
  (``StripeClient.construct_event``) and maps the events to :class:`ProviderEvent`;
- :meth:`~StripeProvider.statement` reads the day's balance transactions.

Idempotency: every POST carries the cloud's key as Stripe's ``Idempotency-Key`` (Stripe replays
the first answer for 24 hours, also to another process), and the key is also written into the
object's ``metadata`` so that the effect can be found by reading. Stripe replays a 500 too
(``Idempotent-Replayed: true``): then the adapter reads the state; if the effect is there it is
the answer, if not the 500 took no effect and the request is sent again under a key derived
from the first (``<key>:retry:<n>``, itself idempotent). Refunds and payouts are looked up by
that metadata before they are sent, so even a retry after Stripe pruned the key (24 h) pays once.
The SDK's own retries are off (``max_network_retries=0``): a timeout, a 5xx, a 409 (the same key
still executing) or a 429 raise :class:`ProviderUnavailable`, and the caller retries with the
same key.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

import stripe

from cloud.config import ConfigError
from cloud.payments.provider import (
    Capture,
    Declined,
    Hold,
    HoldExpired,
    IdempotencyConflict,
    InvalidRequest,
    PaymentError,
    Payout,
    ProviderEvent,
    ProviderUnavailable,
    Refund,
    StatementLine,
    Void,
)
from cloud.payments.webhooks import NotificationIgnored, WebhookRejected

log = logging.getLogger(__name__)

R = TypeVar("R")

SIGNATURE_HEADER = "Stripe-Signature"
#: The path the lead's router should give Stripe's webhook endpoint (``/api/webhooks/{provider}``).
WEBHOOK_PATH = "/api/webhooks/stripe"
#: The shortest authorisation window of an off-session (merchant-initiated) card hold: Visa's
#: 4 days 18 hours. Used only when a charge does not say its ``capture_before``.
MIT_WINDOW_S = 4 * 86400 + 18 * 3600
#: Events the webhook endpoint should be subscribed to (anything else is acknowledged and ignored).
EVENTS = (
    "payment_intent.amount_capturable_updated",
    "payment_intent.succeeded",
    "payment_intent.canceled",
    "payment_intent.payment_failed",
    "refund.created",
    "refund.updated",
    "charge.dispute.created",
    "charge.dispute.funds_withdrawn",
    "charge.dispute.funds_reinstated",
    "charge.dispute.closed",
    "transfer.created",
    "transfer.reversed",
)
#: The config keys :meth:`StripeProvider.from_config` reads, with their defaults.
CONFIG_KEYS: dict[str, Any] = {
    "stripe_secret_key_env": "STRIPE_SECRET_KEY",
    "stripe_secret_key_file": "",
    "stripe_webhook_secret_env": "STRIPE_WEBHOOK_SECRET",
    "stripe_webhook_secret_file": "",
    "stripe_publishable_key": "",
    "stripe_api_base": "",
    "stripe_timeout_s": 20.0,
    "stripe_webhook_tolerance_s": 300,
    "stripe_key_prefix": "",
}
_DERIVED_KEYS = 3
_SCAN_LIMIT = 1000  # objects read at most when looking an effect up by its metadata
_EXPIRED_REASONS = ("automatic", "expired")
_BALANCE_KINDS = {
    "charge": "capture",
    "payment": "capture",
    "refund": "refund",
    "payment_refund": "refund",
    "payment_failure_refund": "refund",
    "refund_failure": "refund",
    "payout": "payout",
    "payout_cancel": "payout",
    "payout_failure": "payout",
    "transfer": "payout",
    "transfer_cancel": "payout",
    "transfer_failure": "payout",
    "transfer_refund": "payout",
}


class StripeEventIgnored(NotificationIgnored):
    """A verified Stripe event the cloud does not act on: answered 200 so Stripe stops resending it."""

    status = 400  # the notify route answers NotificationIgnored with 200
    code = "webhook_ignored"


def card_token(customer: str, payment_method: str) -> str:
    """The cloud's card token of a saved Stripe card: ``"cus_...:pm_..."``."""
    return f"{customer}:{payment_method}"


def parse_card_token(token: str) -> tuple[str, str]:
    """``(customer, payment_method)`` of a card token; InvalidRequest for anything else."""
    customer, sep, pm = token.partition(":")
    if not sep or not customer.startswith("cus_") or not pm.startswith("pm_") or ":" in pm:
        raise InvalidRequest(
            "not a Stripe card token: expected 'cus_...:pm_...' (save the card again)", "invalid_card_token"
        )
    return customer, pm


def _credential(
    what: str,
    key: str,
    env_name: str | None,
    file_name: str | None,
    environ: Mapping[str, str],
    prefixes: tuple[str, ...],
) -> str:
    """A credential from the file or environment variable whose name the config gives."""
    if file_name:
        try:
            value = Path(file_name).read_text().strip()
        except OSError as e:
            raise ConfigError(
                f"stripe: cannot read the {what} from {key}_file {file_name!r}: {e.strerror}"
            ) from e
        source = f"file {file_name}"
    elif env_name:
        value = environ.get(env_name, "").strip()
        source = f"environment variable {env_name}"
    else:
        raise ConfigError(f"stripe: no {what} configured: set {key}_env (a variable name) or {key}_file")
    if not value:
        raise ConfigError(f"stripe: the {what} is missing: {source} is unset or empty")
    if not value.startswith(prefixes):
        raise ConfigError(
            f"stripe: the value of {source} is not a {what} (expected it to start with {' or '.join(prefixes)})"
        )
    return value


class StripeProvider:
    """The cloud's payment provider for cards, through Stripe's SDK (see the module doc)."""

    name = "stripe"

    def __init__(
        self,
        *,
        secret_key_env: str | None = "STRIPE_SECRET_KEY",
        secret_key_file: str | None = None,
        webhook_secret_env: str | None = "STRIPE_WEBHOOK_SECRET",
        webhook_secret_file: str | None = None,
        publishable_key: str = "",
        api_base: str | None = None,
        timeout_s: float = 20.0,
        webhook_tolerance_s: int = 300,
        key_prefix: str = "",
        statement_page_size: int = 100,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        secret_key = _credential(
            "secret API key", "stripe_secret_key", secret_key_env, secret_key_file, env, ("sk_", "rk_")
        )
        self._webhook_secret = _credential(
            "webhook signing secret",
            "stripe_webhook_secret",
            webhook_secret_env,
            webhook_secret_file,
            env,
            ("whsec_",),
        )
        if timeout_s <= 0:
            raise ConfigError(f"stripe: stripe_timeout_s must be positive, got {timeout_s}")
        if webhook_tolerance_s <= 0:
            raise ConfigError(
                f"stripe: stripe_webhook_tolerance_s must be positive, got {webhook_tolerance_s}"
            )
        if not 1 <= statement_page_size <= 100:
            raise ConfigError(f"stripe: the statement page size must be 1..100, got {statement_page_size}")
        self.live = secret_key.startswith(("sk_live_", "rk_live_"))
        self.publishable_key = publishable_key
        self.webhook_tolerance_s = webhook_tolerance_s
        self.key_prefix = key_prefix
        self.statement_page_size = statement_page_size
        self._client = stripe.StripeClient(
            secret_key,
            base_addresses={"api": api_base} if api_base else None,
            max_network_retries=0,  # the caller retries, with the same idempotency key
            http_client=stripe.RequestsClient(timeout=timeout_s),
        )

    @classmethod
    def from_config(
        cls, values: Mapping[str, Any], environ: Mapping[str, str] | None = None
    ) -> StripeProvider:
        """Build from config values named as in :data:`CONFIG_KEYS` (missing keys take the defaults)."""
        unknown = sorted(k for k in values if k.startswith("stripe_") and k not in CONFIG_KEYS)
        if unknown:
            raise ConfigError(f"stripe: unknown config keys {', '.join(unknown)}")
        v = {**CONFIG_KEYS, **values}
        return cls(
            secret_key_env=v["stripe_secret_key_env"] or None,
            secret_key_file=v["stripe_secret_key_file"] or None,
            webhook_secret_env=v["stripe_webhook_secret_env"] or None,
            webhook_secret_file=v["stripe_webhook_secret_file"] or None,
            publishable_key=v["stripe_publishable_key"],
            api_base=v["stripe_api_base"] or None,
            timeout_s=float(v["stripe_timeout_s"]),
            webhook_tolerance_s=int(v["stripe_webhook_tolerance_s"]),
            key_prefix=v["stripe_key_prefix"],
            environ=environ,
        )

    # --- saving a card (the phone confirms the SetupIntent) ------------------------------------

    def save_card(self, customer_ref: str | None, idempotency_key: str) -> dict[str, Any]:
        """Start saving a card for off-session holds: what the phone needs to confirm it.

        Returns ``{"customer", "setup_intent", "client_secret"}`` (and ``"publishable_key"`` when
        configured); the phone runs Stripe's ``confirmSetup`` with the client secret.
        """
        key = self._key(idempotency_key)
        customer = customer_ref
        if customer is None:

            def create_customer(k: str) -> str:
                cus = self._client.v1.customers.create(
                    params={"metadata": {"idempotency_key": key}}, options={"idempotency_key": k}
                )
                return str(cus.id)

            # a second, empty Customer (after a 5xx that took effect) is harmless: no lookup, a derived key
            customer = self._run(f"{key}:customer", create_customer, lambda: None)
        elif not customer.startswith("cus_"):
            raise InvalidRequest(f"not a Stripe customer id: {customer!r}", "invalid_customer")

        def create_setup(k: str) -> dict[str, Any]:
            seti = self._client.v1.setup_intents.create(
                params={
                    "customer": customer,
                    "usage": "off_session",
                    "allowed_payment_method_types": ["card"],
                    "metadata": {"idempotency_key": key},
                },
                options={"idempotency_key": k},
            )
            return seti.to_dict()

        def find_setup() -> dict[str, Any] | None:
            listed = self._client.v1.setup_intents.list(params={"customer": customer, "limit": 100})
            return next(
                (s for s in self._scan(listed) if (s.get("metadata") or {}).get("idempotency_key") == key),
                None,
            )

        seti = self._run(f"{key}:setup_intent", create_setup, find_setup)
        out: dict[str, Any] = {
            "customer": customer,
            "setup_intent": seti["id"],
            "client_secret": seti["client_secret"],
        }
        if self.publishable_key:
            out["publishable_key"] = self.publishable_key
        return out

    def attach_confirmed_setup(self, setup_intent_id: str) -> str:
        """The ``pm_...`` a confirmed SetupIntent saved on its customer; Declined if the card was refused."""
        seti = self._read(lambda: self._client.v1.setup_intents.retrieve(setup_intent_id).to_dict())
        status = seti.get("status")
        if status == "succeeded" and seti.get("payment_method"):
            pm = seti["payment_method"]
            return str(pm["id"] if isinstance(pm, dict) else pm)
        err = seti.get("last_setup_error")
        if isinstance(err, dict) and err.get("type") == "card_error":
            raise _declined(err)
        raise InvalidRequest(
            f"setup intent {setup_intent_id} is {status}: the phone has not confirmed the card yet",
            "setup_not_confirmed",
        )

    def confirmed_card_token(self, setup_intent_id: str) -> str:
        """The card token (``cus_...:pm_...``) of a confirmed SetupIntent."""
        pm = self.attach_confirmed_setup(setup_intent_id)
        seti = self._read(lambda: self._client.v1.setup_intents.retrieve(setup_intent_id).to_dict())
        return card_token(str(seti["customer"]), pm)

    # --- the Provider interface ------------------------------------------------------------------

    def authorize(self, card_token: str, amount: int, currency: str, idempotency_key: str) -> Hold:
        customer, pm = parse_card_token(card_token)
        key = self._key(idempotency_key)
        cur = currency.lower()

        def attempt(k: str) -> Hold:
            try:
                pi = self._client.v1.payment_intents.create(
                    params={
                        "amount": amount,
                        "currency": cur,
                        "customer": customer,
                        "payment_method": pm,
                        "allowed_payment_method_types": ["card"],
                        "capture_method": "manual",
                        "confirm": True,
                        "off_session": True,
                        "metadata": {"idempotency_key": key},
                        "expand": ["latest_charge"],
                    },
                    options={"idempotency_key": k},
                )
            except stripe.CardError as e:
                err = _error(e)
                if err.get("code") == "authentication_required" and isinstance(
                    err.get("payment_intent"), dict
                ):
                    return self._pending(err["payment_intent"], currency, pm)
                raise _declined(err) from e
            return self._hold(pi.to_dict(), currency)

        def reconcile() -> Hold | None:
            for pi in self._scan(
                self._client.v1.payment_intents.list(
                    params={"customer": customer, "limit": 100, "expand": ["data.latest_charge"]}
                )
            ):
                if pi.get("metadata", {}).get("idempotency_key") != key:
                    continue
                if (pi["amount"], pi["currency"], _id(pi.get("payment_method"))) != (amount, cur, pm):
                    raise IdempotencyConflict(
                        f"idempotency key {idempotency_key!r} was used for another hold"
                    )
                return self._hold_from_state(pi, currency, pm)
            return None

        return self._run(key, attempt, reconcile)

    def capture(self, hold_ref: str, amount: int, idempotency_key: str) -> Capture:
        key = self._key(idempotency_key)

        def attempt(k: str) -> Capture:
            try:
                pi = self._client.v1.payment_intents.capture(
                    hold_ref,
                    params={
                        "amount_to_capture": amount,
                        "metadata": {"capture_idempotency_key": key},
                        "expand": ["latest_charge"],
                    },
                    options={"idempotency_key": k},
                )
            except stripe.InvalidRequestError as e:
                err = _error(e)
                if err.get("code") != "payment_intent_unexpected_state":
                    raise
                state = err.get("payment_intent") or self._retrieve(hold_ref)
                found = self._captured(state, amount, key)
                if found is None:
                    raise _not_capturable(state) from e
                return found
            return _capture(pi.to_dict())

        def reconcile() -> Capture | None:
            state = self._retrieve(hold_ref)
            if state["status"] == "requires_capture":
                return None  # the 500 took no effect
            found = self._captured(state, amount, key)
            if found is None:
                raise _not_capturable(state)
            return found

        return self._run(key, attempt, reconcile)

    def void(self, hold_ref: str, idempotency_key: str) -> Void:
        key = self._key(idempotency_key)

        def attempt(k: str) -> Void:
            try:
                pi = self._client.v1.payment_intents.cancel(
                    hold_ref,
                    params={"cancellation_reason": "abandoned", "expand": ["latest_charge"]},
                    options={"idempotency_key": k},
                )
            except stripe.InvalidRequestError as e:
                err = _error(e)
                if err.get("code") != "payment_intent_unexpected_state":
                    raise
                state = err.get("payment_intent") or self._retrieve(hold_ref)
                if state["status"] == "canceled":
                    return Void(hold_ref, 0)  # already released (expired, or voided under another key)
                raise InvalidRequest(
                    f"hold {hold_ref} is {state['status']}: only an uncaptured hold can be voided",
                    "hold_captured",
                ) from e
            return Void(hold_ref, _released(pi.to_dict()))

        def reconcile() -> Void | None:
            state = self._retrieve(hold_ref)
            return Void(hold_ref, _released(state)) if state["status"] == "canceled" else None

        return self._run(key, attempt, reconcile)

    def refund(self, hold_ref: str, amount: int, idempotency_key: str) -> Refund:
        key = self._key(idempotency_key)

        def existing() -> tuple[Refund | None, int]:
            refunds = list(
                self._scan(self._client.v1.refunds.list(params={"payment_intent": hold_ref, "limit": 100}))
            )
            total = 0
            for r in reversed(refunds):  # oldest first
                if r.get("status") in ("succeeded", "pending", "requires_action"):
                    total += int(r["amount"])
                if (r.get("metadata") or {}).get("idempotency_key") == key:
                    if r["amount"] != amount:
                        raise IdempotencyConflict(
                            f"idempotency key {idempotency_key!r} was used for a refund of {r['amount']}, not {amount}"
                        )
                    return Refund(hold_ref, str(r["id"]), int(r["amount"]), total), total
            return None, total

        found, total = self._read(existing)
        if found is not None:
            return found

        def attempt(k: str) -> Refund:
            r = self._client.v1.refunds.create(
                params={"payment_intent": hold_ref, "amount": amount, "metadata": {"idempotency_key": key}},
                options={"idempotency_key": k},
            )
            return Refund(hold_ref, str(r.id), int(r.amount), total + int(r.amount))

        return self._run(key, attempt, lambda: existing()[0])

    # --- the RealProvider extras --------------------------------------------------------------

    def hold_status(self, hold_ref: str) -> str:
        return _hold_status(self._read(lambda: self._retrieve(hold_ref)))

    def hold_expires_at(self, hold_ref: str) -> float | None:
        """When the hold's authorisation lapses (the charge's ``capture_before``); None while pending."""
        pi = self._read(lambda: self._retrieve(hold_ref))
        return _capture_before(pi) if pi["status"] == "requires_capture" else None

    def parse_notification(self, headers: Mapping[str, str], body: bytes) -> ProviderEvent:
        header = next((v for k, v in headers.items() if k.lower() == SIGNATURE_HEADER.lower()), None)
        if not header:
            raise WebhookRejected(f"missing {SIGNATURE_HEADER} header")
        if not header.isascii():
            raise WebhookRejected(f"malformed {SIGNATURE_HEADER} header: not ASCII")
        try:
            payload = body.decode("utf-8")
            self._client.construct_event(payload, header, self._webhook_secret, self.webhook_tolerance_s)
        except stripe.SignatureVerificationError as e:
            raise WebhookRejected(f"stripe signature refused: {e.user_message}") from e
        except (UnicodeDecodeError, ValueError, TypeError) as e:
            raise WebhookRejected(f"not a Stripe webhook body: {e}") from e
        # the SDK checks only that the timestamp is not too old; refuse one from the future too
        stamp = next((p[2:] for p in header.split(",") if p.startswith("t=")), "")
        if stamp.isdigit() and int(stamp) > time.time() + self.webhook_tolerance_s:
            raise WebhookRejected(f"{SIGNATURE_HEADER} timestamp {stamp} is in the future")
        event = json.loads(payload)
        if (
            not isinstance(event, dict)
            or event.get("object") != "event"
            or not isinstance(event.get("id"), str)
        ):
            raise WebhookRejected("not a Stripe event object")
        return _event(event)

    def statement(self, day: date) -> list[StatementLine]:
        start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())

        def read() -> list[dict[str, Any]]:
            page = self._client.v1.balance_transactions.list(
                params={
                    "created": {"gte": start, "lt": start + 86400},
                    "limit": self.statement_page_size,
                    "expand": ["data.source"],
                }
            )
            return [bt.to_dict() for bt in page.auto_paging_iter()]

        lines: list[StatementLine] = []
        seen: set[str] = set()
        for bt in reversed(self._read(read)):  # Stripe lists newest first
            source = bt.get("source")
            src = source if isinstance(source, dict) else {}
            # the reference our records carry: the charge (Capture.capture_ref), the refund, the
            # dispute (a chargeback's ref), the transfer (Payout.payout_ref); else the transaction
            ref = _id(source) or str(bt["id"])
            if bt["type"] == "adjustment":
                kind = "dispute" if src.get("object") == "dispute" or ref.startswith("dp_") else "fee"
            else:
                kind = _BALANCE_KINDS.get(bt["type"], "fee")
            if kind == "dispute" and int(bt["amount"]) > 0:
                ref = f"{ref}:reinstated"  # a won dispute gives the withdrawn money back
            elif ref in seen:
                ref = f"{ref}:{bt['id']}"
            seen.add(ref)
            hold_ref = src.get("payment_intent") or (src.get("metadata") or {}).get("hold_ref")
            hold_ref = _id(hold_ref) if hold_ref else None
            cur = str(bt["currency"]).upper()
            at = float(bt["created"])
            lines.append(StatementLine(ref, kind, int(bt["amount"]), cur, at, hold_ref))
            if bt.get("fee"):
                lines.append(StatementLine(f"{ref}:fee", "fee", -int(bt["fee"]), cur, at, hold_ref))
        return lines

    def payout(
        self, destination: str, amount: int, currency: str, hold_ref: str | None, idempotency_key: str
    ) -> Payout:
        if not destination.startswith("acct_"):
            raise InvalidRequest(f"not a Stripe Connect account: {destination!r}", "invalid_destination")
        key = self._key(idempotency_key)
        cur = currency.lower()
        group = hold_ref or f"payout:{key}"

        def existing() -> Payout | None:
            listed = self._client.v1.transfers.list(
                params={"destination": destination, "transfer_group": group, "limit": 100}
            )
            for t in self._scan(listed):
                if (t.get("metadata") or {}).get("idempotency_key") == key:
                    if (t["amount"], t["currency"]) != (amount, cur):
                        raise IdempotencyConflict(
                            f"idempotency key {idempotency_key!r} was used for another payout"
                        )
                    return Payout(str(t["id"]), destination, int(t["amount"]), currency, "paid")
            return None

        found = self._read(existing)
        if found is not None:
            return found
        source: str | None = None
        if hold_ref is not None:
            source = _id(self._read(lambda: self._retrieve(hold_ref)).get("latest_charge")) or None

        def attempt(k: str) -> Payout:
            metadata = {"idempotency_key": key, "hold_ref": hold_ref or ""}
            if source:
                t = self._client.v1.transfers.create(
                    params={
                        "amount": amount,
                        "currency": cur,
                        "destination": destination,
                        "transfer_group": group,
                        "source_transaction": source,
                        "metadata": metadata,
                    },
                    options={"idempotency_key": k},
                )
            else:
                t = self._client.v1.transfers.create(
                    params={
                        "amount": amount,
                        "currency": cur,
                        "destination": destination,
                        "transfer_group": group,
                        "metadata": metadata,
                    },
                    options={"idempotency_key": k},
                )
            # a Connect transfer lands in the connected account's Stripe balance at once
            return Payout(str(t.id), destination, int(t.amount), currency, "paid")

        return self._run(key, attempt, existing)

    # --- internals -----------------------------------------------------------------------------

    def _key(self, idempotency_key: str) -> str:
        key = self.key_prefix + idempotency_key
        if not 0 < len(key) <= 200:  # Stripe allows 255; derived keys add a suffix
            raise InvalidRequest(f"idempotency key must be 1..200 characters, got {len(key)}", "invalid_key")
        return key

    def _run(self, key: str, attempt: Callable[[str], R], reconcile: Callable[[], R | None]) -> R:
        """``attempt(key)``; when Stripe replays a stored 5xx for the key, the state decides (module doc)."""
        k = key
        for n in range(1, _DERIVED_KEYS + 1):
            try:
                return attempt(k)
            except stripe.StripeError as e:
                if not _replayed_server_error(e):
                    raise _mapped(e) from e
                log.warning("stripe replays a %s for idempotency key %s: reading the state", e.http_status, k)
                found = self._read(reconcile)
                if found is not None:
                    return found
                k = f"{key}:retry:{n}"
        raise ProviderUnavailable(
            f"stripe answered a stored server error under {key!r} and {_DERIVED_KEYS - 1} keys derived from it"
        )

    def _read(self, fn: Callable[[], R]) -> R:
        """A read (GET) with Stripe's errors mapped."""
        try:
            return fn()
        except stripe.StripeError as e:
            raise _mapped(e) from e

    def _retrieve(self, hold_ref: str) -> dict[str, Any]:
        return self._client.v1.payment_intents.retrieve(
            hold_ref, params={"expand": ["latest_charge"]}
        ).to_dict()

    def _scan(self, page: Any) -> Iterable[dict[str, Any]]:
        for n, obj in enumerate(page.auto_paging_iter()):
            if n >= _SCAN_LIMIT:
                return
            yield obj.to_dict()

    def _hold(self, pi: Mapping[str, Any], currency: str) -> Hold:
        expires = _capture_before(pi)
        return Hold(
            str(pi["id"]),
            int(pi["amount"]),
            currency,
            expires if expires is not None else float(pi["created"]) + MIT_WINDOW_S,
        )

    def _pending(self, pi: Mapping[str, Any], currency: str, pm: str) -> Hold:
        action: dict[str, Any] = {
            "type": "stripe.confirm_payment",
            "client_secret": pi["client_secret"],
            "payment_intent": pi["id"],
            "payment_method": pm,
        }
        if self.publishable_key:
            action["publishable_key"] = self.publishable_key
        return Hold(
            str(pi["id"]),
            int(pi["amount"]),
            currency,
            float(pi["created"]) + MIT_WINDOW_S,  # nothing reserved yet; the real end comes with the hold
            status="pending",
            client_action=action,
        )

    def _hold_from_state(self, pi: Mapping[str, Any], currency: str, pm: str) -> Hold:
        err = pi.get("last_payment_error")
        if pi["status"] == "requires_action" or (
            pi["status"] == "requires_payment_method"
            and isinstance(err, dict)
            and err.get("code") == "authentication_required"
        ):
            return self._pending(pi, currency, pm)
        if pi["status"] == "requires_payment_method" and isinstance(err, dict):
            raise _declined(err)
        return self._hold(pi, currency)

    def _captured(self, pi: Mapping[str, Any], amount: int, key: str) -> Capture | None:
        """The capture this key made, read from the PaymentIntent; None when it made none."""
        if pi["status"] != "succeeded" or (pi.get("metadata") or {}).get("capture_idempotency_key") != key:
            return None
        if pi["amount_received"] != amount:
            raise IdempotencyConflict(
                f"hold {pi['id']} was captured for {pi['amount_received']} under this key"
            )
        return _capture(pi)


def _capture(pi: Mapping[str, Any]) -> Capture:
    received = int(pi["amount_received"])
    return Capture(str(pi["id"]), _id(pi.get("latest_charge")), received, int(pi["amount"]) - received)


def _not_capturable(pi: Mapping[str, Any]) -> PaymentError:
    if pi["status"] == "canceled" and pi.get("cancellation_reason") in _EXPIRED_REASONS:
        return HoldExpired(f"hold {pi['id']} expired before the capture; its money is no longer reserved")
    return InvalidRequest(f"hold {pi['id']} is {pi['status']}: cannot capture", "hold_not_capturable")


def _released(pi: Mapping[str, Any]) -> int:
    """What cancelling ``pi`` released: its uncaptured authorisation (0 if none, or if it had lapsed)."""
    if pi.get("cancellation_reason") in _EXPIRED_REASONS:
        return 0
    charge = pi.get("latest_charge")
    if isinstance(charge, dict) and charge.get("status") == "succeeded" and not charge.get("captured"):
        return int(charge["amount"])
    return 0


def _hold_status(pi: Mapping[str, Any]) -> str:
    status = pi["status"]
    if status == "requires_capture":
        return "held"
    if status == "succeeded":
        return "captured"
    if status == "canceled":
        return "expired" if pi.get("cancellation_reason") in _EXPIRED_REASONS else "voided"
    return "pending"  # requires_payment_method / _confirmation / _action, processing


def _capture_before(pi: Mapping[str, Any]) -> float | None:
    charge = pi.get("latest_charge")
    if not isinstance(charge, dict):
        return None
    card = (charge.get("payment_method_details") or {}).get("card") or {}
    before = card.get("capture_before")
    return float(before) if before is not None else None


def _id(value: Any) -> str:
    """The id of an expandable field (an id string or the expanded object)."""
    if isinstance(value, dict):
        return str(value.get("id") or "")
    return str(value or "")


def _error(e: stripe.StripeError) -> dict[str, Any]:
    body = e.json_body
    err = body.get("error") if isinstance(body, dict) else None
    return err if isinstance(err, dict) else {}


def _declined(err: Mapping[str, Any]) -> Declined:
    code, decline = err.get("code"), err.get("decline_code")
    if "expired_card" in (code, decline):
        ours = "expired_card"
    elif "insufficient_funds" in (code, decline):
        ours = "insufficient_funds"
    else:
        ours = "card_declined"
    return Declined(f"stripe: {err.get('message') or 'the card was declined'} ({code}/{decline})", ours)


def _header(e: stripe.StripeError, name: str) -> str:
    headers = e.headers or {}
    return next((str(v) for k, v in headers.items() if k.lower() == name.lower()), "")


def _replayed_server_error(e: stripe.StripeError) -> bool:
    return (
        isinstance(e, stripe.APIError)
        and (e.http_status or 0) >= 500
        and _header(e, "Idempotent-Replayed").lower() == "true"
    )


def _mapped(e: stripe.StripeError) -> PaymentError:
    """Stripe's error as the cloud's PaymentError (the provider interface's contract)."""
    err = _error(e)
    status = e.http_status or 0
    if isinstance(e, stripe.APIConnectionError):
        return ProviderUnavailable(f"stripe did not answer: {e.user_message}")
    if isinstance(e, stripe.RateLimitError):
        return ProviderUnavailable(f"stripe rate limit: {e.user_message}")
    if isinstance(e, stripe.IdempotencyError) or (status == 400 and err.get("type") == "idempotency_error"):
        return IdempotencyConflict(f"stripe: {e.user_message}")
    if status == 409:
        return ProviderUnavailable(
            f"stripe: a request with this idempotency key is still running: {e.user_message}"
        )
    if isinstance(e, stripe.CardError):
        return _declined(err)
    if isinstance(e, stripe.InvalidRequestError):
        return InvalidRequest(f"stripe: {e.user_message}", str(err.get("code") or "invalid_request"))
    if isinstance(e, (stripe.AuthenticationError, stripe.PermissionError)):
        return PaymentError(f"stripe refused the API key: {e.user_message}", "provider_auth")
    if isinstance(e, stripe.APIError) or status >= 500:
        return ProviderUnavailable(f"stripe answered {status}: {e.user_message}")
    return PaymentError(f"stripe: {e.user_message}", "provider_error")


def _event(event: Mapping[str, Any]) -> ProviderEvent:
    """A verified Stripe event in the cloud's terms; StripeEventIgnored for the ones it does not use.

    ``data["ref"]`` is the reference of the payment record the event confirms (a capture's
    charge, the PaymentIntent of a void, the refund, the transfer); ``data["dispute_ref"]`` the
    dispute (a lost one is booked as a chargeback under it); ``data["outcome"]`` won | lost.
    """
    type_ = str(event.get("type"))
    obj = (event.get("data") or {}).get("object") or {}
    eid = str(event["id"])
    cur = str(obj.get("currency") or "").upper() or None

    def ev(kind: str, hold_ref: Any, amount: Any, **data: Any) -> ProviderEvent:
        return ProviderEvent(
            eid,
            kind,
            _id(hold_ref) or None,
            int(amount) if amount is not None else None,
            cur,
            type_,
            {"object_id": obj.get("id"), **data},
        )

    pi_id = obj.get("id")
    if type_ == "payment_intent.amount_capturable_updated" and obj.get("status") == "requires_capture":
        return ev("hold.confirmed", pi_id, obj.get("amount_capturable"))
    if type_ == "payment_intent.succeeded":
        return ev("hold.captured", pi_id, obj.get("amount_received"), ref=_id(obj.get("latest_charge")))
    if type_ == "payment_intent.canceled":
        reason = obj.get("cancellation_reason")
        kind = "hold.expired" if reason in _EXPIRED_REASONS else "hold.voided"
        return ev(kind, pi_id, obj.get("amount"), ref=pi_id, cancellation_reason=reason)
    if type_ == "payment_intent.payment_failed":
        err = obj.get("last_payment_error") or {}
        if err.get("code") == "authentication_required":
            # the off-session attempt that made a hold pending: authorize() already said so
            raise StripeEventIgnored(
                f"stripe event {type_} ({eid}): the hold waits for the renter (3-D Secure)"
            )
        return ev(
            "payment.failed",
            pi_id,
            obj.get("amount"),
            code=err.get("code"),
            decline_code=err.get("decline_code"),
            reason=f"{err.get('message') or 'declined'} ({err.get('code')}/{err.get('decline_code')})",
            status=obj.get("status"),
        )
    if type_ in ("refund.created", "refund.updated") and obj.get("status") == "succeeded":
        return ev("refund.succeeded", obj.get("payment_intent"), obj.get("amount"), ref=obj.get("id"))
    if type_ == "charge.dispute.created":
        return ev(
            "dispute.opened",
            obj.get("payment_intent"),
            obj.get("amount"),
            dispute_ref=obj.get("id"),
            reason=obj.get("reason"),
        )
    if type_ in ("charge.dispute.funds_withdrawn", "charge.dispute.funds_reinstated"):
        # Stripe takes the disputed amount out of the balance when the dispute opens and gives
        # it back if the dispute is won: two balance transactions the journal books too
        return ev(
            "dispute.funds_withdrawn" if type_.endswith("withdrawn") else "dispute.funds_reinstated",
            obj.get("payment_intent"),
            obj.get("amount"),
            dispute_ref=obj.get("id"),
            withdraws_funds=True,
        )
    if type_ == "charge.dispute.closed":
        status = obj.get("status")
        return ev(
            "dispute.closed",
            obj.get("payment_intent"),
            obj.get("amount"),
            dispute_ref=obj.get("id"),
            outcome="won" if status in ("won", "warning_closed") else "lost",
            status=status,
            withdraws_funds=True,  # the loss moves nothing more at Stripe: it was withdrawn at the open
        )
    if type_ in ("transfer.created", "transfer.reversed"):
        meta = obj.get("metadata") or {}
        created = type_ == "transfer.created"
        return ev(
            "payout.paid" if created else "payout.failed",
            meta.get("hold_ref"),
            obj.get("amount") if created else obj.get("amount_reversed"),
            ref=obj.get("id"),
            destination=obj.get("destination"),
        )
    raise StripeEventIgnored(f"stripe event {type_} ({eid}) is not one the cloud acts on")


__all__ = [
    "CONFIG_KEYS",
    "EVENTS",
    "MIT_WINDOW_S",
    "SIGNATURE_HEADER",
    "WEBHOOK_PATH",
    "StripeEventIgnored",
    "StripeProvider",
    "card_token",
    "parse_card_token",
]
