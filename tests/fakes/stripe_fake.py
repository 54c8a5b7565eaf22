"""A local fake of the Stripe API (v1) for the contract tests of ``cloud.payments.stripe_provider``.

It is an HTTP server on 127.0.0.1 (``http.server.ThreadingHTTPServer`` in a background thread, so
the synchronous ``stripe`` SDK called from the test thread never blocks it) that speaks what the
real API speaks: form-encoded requests (``metadata[k]=v``, ``expand[0]=...``, ``created[gte]=...``),
``Authorization: Bearer sk_test_...``, Stripe's JSON objects and Stripe's error shape
``{"error": {"type", "code", "decline_code", "message", "param", "payment_intent"...}}``.

The documentation it follows (read on 2026-12-03, API version ``2026-10-28.endive``, the version the
installed SDK 16.1.0 pins and sends as ``Stripe-Version``):

- API reference, https://docs.stripe.com/api : PaymentIntents (create with ``confirm=true``,
  ``off_session=true``, ``capture_method=manual``; capture with ``amount_to_capture``; cancel),
  SetupIntents (``usage=off_session``), Customers, Refunds, Transfers (``destination``,
  ``transfer_group``, ``source_transaction``), Balance Transactions (list with ``created[gte]`` /
  ``created[lt]``, newest first, ``starting_after`` pagination, ``expand[]=data.source``);
- idempotency, https://docs.stripe.com/api/idempotent_requests and
  https://docs.stripe.com/error-low-level#idempotency : the status and body of the first request
  with a key are saved once the endpoint begins executing and replayed for the same key, 500s
  included (``Idempotent-Replayed: true``); the same key with other parameters or another endpoint
  is a 400 ``idempotency_error``; a key still executing is a 409; parameter-validation failures
  and errors before the API (a 503 at the edge) are not saved; keys are pruned after 24 hours;
- webhook signatures, https://docs.stripe.com/webhooks#verify-manually :
  ``Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(endpoint secret, "<t>.<raw body>")>``, plus a
  ``v0`` signature in test mode that receivers must ignore; every delivery attempt is signed at
  its own time; the body is pretty-printed JSON, so only the raw bytes verify;
- holds, https://docs.stripe.com/payments/place-a-hold-on-a-payment-method : the charge's
  ``payment_method_details.card.capture_before`` says when the authorisation lapses (Visa
  merchant-initiated, i.e. ``off_session``: 4 days 18 hours; Visa customer-initiated and the
  other brands: 7 days); then the PaymentIntent is canceled with ``cancellation_reason=expired``
  (``automatic`` before 2025-03-31.basil: ``expiry_reason`` switches it) and the events are
  ``charge.expired`` and ``payment_intent.canceled``; since basil a partial capture or a release
  creates no Refund and leaves the charge's ``amount_refunded`` alone
  (https://docs.stripe.com/changelog/basil/2025-03-31/remove-refund-from-partial-capture-and-payment-cancellation-flow);
- ``payment_method_types`` is no longer writable on PaymentIntents and SetupIntents (400
  ``payment_method_types_no_longer_supported``, changelog endive 2026-09-30); the request names
  ``allowed_payment_method_types`` instead, and without it a confirmation needs a ``return_url``;
- off-session payments and 3-D Secure, https://docs.stripe.com/payments/save-and-reuse : an
  off-session confirmation that needs authentication fails with a 402 ``authentication_required``
  and leaves the PaymentIntent in ``requires_payment_method``; the customer comes back and
  confirms it with its ``client_secret``; ``payment_intent.amount_capturable_updated`` follows;
- test cards, https://docs.stripe.com/testing (numbers below), disputes
  https://docs.stripe.com/disputes (``charge.dispute.created`` / ``charge.dispute.closed``, the
  dispute's ``status`` ``won`` / ``lost``, balance ``adjustment`` transactions with the dispute fee).

Test cards (``confirm_setup(seti, number)``, the phone's ``confirmCardSetup``):

======================  ===========================================================
4242424242424242        Visa, approves
5555555555554444        Mastercard, approves (7-day window also off session)
4000002500003155        Visa, authenticated once at setup; off-session holds approve
4000000000000341        Visa, attaches; every hold declines ``card_declined``
4000002760003184        Visa, every payment needs 3-D Secure (off session: 402)
4000000000000002        declined at setup (``generic_decline``)
4000000000009995        declined at setup (``insufficient_funds``)
4000000000000069        declined at setup (``expired_card``)
======================  ===========================================================

Per saved card the test may also set ``set_funds(pm, n)`` (holds above ``n`` decline with
``insufficient_funds``) or ``expire_card(pm)`` (``expired_card``).

Failure modes the test switches per request (``op`` is e.g. ``"payment_intents.create"``,
``"payment_intents.capture"``, ``"refunds.create"``, ``"transfers.create"``):

- ``fail_next(op, status=500, stage="edge")``: the answer never reaches the API (not saved; a
  retry runs normally); ``stage="stored"``: the endpoint began and failed (saved: a retry with
  the same key gets the same 500); ``stage="after_effect"``: the effect happened, then the 500
  (saved, replayed);
- ``timeout_next(op, delay_s, after_effect=True)``: the answer comes ``delay_s`` late (after the
  effect is saved); ``after_effect=False``: the request waits ``delay_s`` before executing, and
  the key is "in progress" meanwhile (a retry gets the 409);
- ``advance(seconds)``: the fake's clock jumps; holds past ``capture_before`` expire, keys older
  than 24 h are pruned;
- ``authenticate(pi)`` / ``authenticate(pi, ok=False)``: the renter passes / fails 3-D Secure on
  the phone; a renter who never does leaves the PaymentIntent pending;
- ``open_dispute(pi)``, ``close_dispute(dp, won=...)``: a chargeback and its outcome.

Notifications go to ``webhook_url`` (a receiver in the test). By default events wait in
``outbox`` until ``deliver(order=..., copies=...)``; ``auto_deliver`` sends them by themselves
``delivery_delay_s`` late, ``delivery_copies`` times; ``deliver_before_response`` sends a
request's events before the API answers it. ``sign_offset_s`` shifts the signature timestamp
(an old delivery).

Not covered: the phone's own endpoints (``/v1/setup_intents/:id/confirm`` with a publishable key:
the helpers above stand for them), Radar, multi-capture and incremental authorisation, currencies'
minimum amounts, connected accounts' own balances and payouts, event retries by the fake itself
(the test delivers copies), ``/v1/events``.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

API_VERSION = "2026-10-28.endive"
DAY = 86400
VISA_MIT_WINDOW_S = 4 * DAY + 18 * 3600  # "5 days*: the exact window is 4 days and 18 hours"
DEFAULT_WINDOW_S = 7 * DAY
KEY_TTL_S = DAY  # idempotency keys may be pruned once 24 hours old
FEE_BP = 150  # the fake's processing fee: 1.5 % + 25 minor units per captured charge
FEE_FIXED = 25
DISPUTE_FEE = 1500

_CARDS: dict[str, tuple[str, str]] = {
    # number: (brand, behaviour)
    "4242424242424242": ("visa", "ok"),
    "5555555555554444": ("mastercard", "ok"),
    "4000002500003155": ("visa", "ok"),
    "4000000000000341": ("visa", "decline_on_charge"),
    "4000002760003184": ("visa", "auth_always"),
    "4000000000000002": ("visa", "setup_decline:card_declined:generic_decline"),
    "4000000000009995": ("visa", "setup_decline:card_declined:insufficient_funds"),
    "4000000000000069": ("visa", "setup_decline:expired_card:expired_card"),
}
_DECLINE_MESSAGES = {
    "generic_decline": "Your card was declined.",
    "insufficient_funds": "Your card has insufficient funds.",
    "expired_card": "Your card has expired.",
    "authentication_required": "Your card was declined. This transaction requires authentication.",
}
_PREFIX_TO_KIND = {
    "pi": "payment_intents",
    "ch": "charges",
    "re": "refunds",
    "dp": "disputes",
    "tr": "transfers",
    "cus": "customers",
    "pm": "payment_methods",
    "seti": "setup_intents",
    "txn": "balance_transactions",
}


class ApiError(Exception):
    """An error answer in Stripe's shape; ``stored``: saved under the idempotency key; ``effect``:
    the request changed the account all the same (a declined PaymentIntent exists)."""

    def __init__(self, status: int, error: dict[str, Any], stored: bool = True, effect: bool = False) -> None:
        super().__init__(error.get("message", ""))
        self.status = status
        self.error = error
        self.stored = stored
        self.effect = effect


def _invalid(
    message: str, code: str | None = None, param: str | None = None, stored: bool = False
) -> ApiError:
    err: dict[str, Any] = {"type": "invalid_request_error", "message": message}
    if code:
        err["code"] = code
        err["doc_url"] = f"https://docs.stripe.com/error-codes/{code.replace('_', '-')}"
    if param:
        err["param"] = param
    return ApiError(400, err, stored)


def _missing(kind: str, ident: str, param: str) -> ApiError:
    return ApiError(
        404,
        {
            "type": "invalid_request_error",
            "code": "resource_missing",
            "param": param,
            "message": f"No such {kind}: '{ident}'",
            "doc_url": "https://docs.stripe.com/error-codes/resource-missing",
        },
        stored=True,
    )


@dataclass
class _Stored:
    method: str
    path: str
    params: dict[str, Any]
    created: float
    request_id: str
    in_progress: bool = True
    status: int = 0
    body: str = ""


@dataclass
class _Failure:
    op: str
    kind: str  # edge | stored | after_effect | timeout_after | timeout_before
    status: int = 500
    delay_s: float = 0.0


@dataclass
class Delivery:
    """One POST of an event to the webhook URL, and the receiver's answer."""

    event_id: str
    type: str
    status: int


@dataclass
class RequestLog:
    method: str
    path: str
    op: str
    idempotency_key: str | None
    status: int = 0
    replayed: bool = False
    params: dict[str, Any] = field(default_factory=dict)


def decode_form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's form encoding back to nested values: ``a[b]=1`` is a dict, ``a[0]=x`` a list."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        m = re.fullmatch(r"([^\[\]]+)((?:\[[^\[\]]*\])*)", key)
        if m is None:
            raise _invalid(f"Invalid parameter name: {key}")
        parts = [m.group(1), *re.findall(r"\[([^\[\]]*)\]", m.group(2))]
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise _invalid(f"Invalid array or hash: {key}")
        node[parts[-1]] = value
    decoded: dict[str, Any] = _lists(root)
    return decoded


def _lists(value: Any) -> Any:
    if isinstance(value, dict):
        converted = {k: _lists(v) for k, v in value.items()}
        if converted and all(k.isdigit() for k in converted):
            return [converted[k] for k in sorted(converted, key=int)]
        return converted
    return value


def sign_payload(secret: str, payload: str, timestamp: int) -> str:
    """``v1`` of the Stripe-Signature header: hex HMAC-SHA256 of ``"<t>.<payload>"``."""
    return hmac.new(secret.encode(), f"{timestamp}.{payload}".encode(), hashlib.sha256).hexdigest()


class StripeFake:
    """The fake Stripe account and its API server (see the module doc)."""

    def __init__(self, start_at: float | None = None) -> None:
        self.api_key = "sk_test_" + secrets.token_hex(24)
        self.publishable_key = "pk_test_" + secrets.token_hex(24)
        self.webhook_secret = "whsec_" + secrets.token_hex(24)
        self._v0_secret = secrets.token_hex(24)  # the test-mode v0 signature receivers must ignore
        self._offset = 0.0 if start_at is None else start_at - time.time()
        self._lock = threading.RLock()
        self._seq = 0
        self.objects: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in _PREFIX_TO_KIND.values()}
        self.accounts: set[str] = set()
        self.card_numbers: dict[str, str] = {}  # pm id -> number
        self.funds: dict[str, int] = {}
        self.expired_cards: set[str] = set()
        self.order: list[str] = []  # creation order of every object id (for lists)
        self.events: list[dict[str, Any]] = []
        self.outbox: list[dict[str, Any]] = []
        self.deliveries: list[Delivery] = []
        self.requests: list[RequestLog] = []
        self.effects: list[str] = []  # ops that took effect (not replays, not failures before effect)
        self._keys: dict[str, _Stored] = {}
        self._failures: list[_Failure] = []
        self.webhook_url: str | None = None
        self.auto_deliver = False
        self.delivery_delay_s = 0.0
        self.delivery_copies = 1
        self.deliver_before_response = False
        self.sign_offset_s = 0
        #: ``cancellation_reason`` of a lapsed hold: ``expired`` since 2025-03-31.basil (``automatic`` before)
        self.expiry_reason = "expired"
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._timers: list[threading.Timer] = []

    # --- server --------------------------------------------------------------------------

    def start(self) -> StripeFake:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode() if length else ""
                status, body, headers = fake.handle(method, self.path, raw, dict(self.headers.items()))
                data = body.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="stripe-fake", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        for t in self._timers:
            t.cancel()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> StripeFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # --- the test's switches ---------------------------------------------------------------

    def now(self) -> float:
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the fake's clock: expire the holds and prune the keys whose time has come."""
        with self._lock:
            self._offset += seconds
            self._housekeeping()

    def fail_next(self, op: str, status: int = 500, stage: str = "edge") -> None:
        assert stage in ("edge", "stored", "after_effect"), stage
        self._failures.append(_Failure(op, stage, status))

    def timeout_next(self, op: str, delay_s: float, after_effect: bool = True) -> None:
        self._failures.append(
            _Failure(op, "timeout_after" if after_effect else "timeout_before", delay_s=delay_s)
        )

    def add_account(self) -> str:
        """A Connect account (``acct_...``) that transfers may go to."""
        with self._lock:
            acct = self._id("acct")
            self.accounts.add(acct)
            return acct

    def add_card(self, number: str = "4242424242424242") -> str:
        """A customer with a saved card, as the SetupIntent flow leaves it; returns ``cus_...:pm_...``."""
        with self._lock:
            cus = self._new_customer({})
            pm = self._new_payment_method(number, cus["id"])
            return f"{cus['id']}:{pm['id']}"

    def set_funds(self, pm: str, amount: int) -> None:
        self.funds[pm] = amount

    def expire_card(self, pm: str) -> None:
        self.expired_cards.add(pm)

    def confirm_setup(self, setup_intent: str, number: str = "4242424242424242") -> str | None:
        """The phone confirms the SetupIntent with a card; returns the saved ``pm_...`` (None: declined)."""
        with self._lock:
            seti = self._get("setup_intents", setup_intent, "intent")
            if seti["status"] not in ("requires_payment_method", "requires_confirmation", "requires_action"):
                raise AssertionError(f"setup intent {setup_intent} is {seti['status']}")
            _, behaviour = _CARDS.get(number, ("visa", "ok"))
            if behaviour.startswith("setup_decline:"):
                _, code, decline = behaviour.split(":")
                seti["last_setup_error"] = {
                    "type": "card_error",
                    "code": code,
                    "decline_code": decline,
                    "message": _DECLINE_MESSAGES[decline],
                }
                seti["status"] = "requires_payment_method"
                self._event("setup_intent.setup_failed", seti)
                return None
            pm = self._new_payment_method(number, seti["customer"])
            seti.update(status="succeeded", payment_method=pm["id"], last_setup_error=None)
            self._event("setup_intent.succeeded", seti)
            return str(pm["id"])

    def authenticate(self, payment_intent: str, ok: bool = True) -> None:
        """The renter comes back on the phone and confirms the pending PaymentIntent (3-D Secure)."""
        with self._lock:
            pi = self._get("payment_intents", payment_intent, "intent")
            assert pi["status"] in ("requires_payment_method", "requires_action"), pi["status"]
            if not ok:
                err = self._card_error_obj("card_declined", "authentication_required", pi)
                err["message"] = "The provided PaymentMethod has failed authentication."
                err["code"] = "payment_intent_authentication_failure"
                pi["last_payment_error"] = err
                pi["status"] = "requires_payment_method"
                self._event("payment_intent.payment_failed", pi)
                return
            self._authorise(pi, off_session=False)

    def open_dispute(self, payment_intent: str, reason: str = "fraudulent", amount: int | None = None) -> str:
        """The card holder disputes the payment; returns the ``dp_...``."""
        with self._lock:
            pi = self._get("payment_intents", payment_intent, "intent")
            charge = self._get("charges", pi["latest_charge"], "charge")
            assert charge["captured"], "only a captured charge can be disputed"
            amount = charge["amount_captured"] - charge["amount_refunded"] if amount is None else amount
            dp: dict[str, Any] = {
                "id": self._id("dp"),
                "object": "dispute",
                "amount": amount,
                "currency": charge["currency"],
                "charge": charge["id"],
                "payment_intent": pi["id"],
                "reason": reason,
                "status": "needs_response",
                "created": int(self.now()),
                "is_charge_refundable": False,
                "livemode": False,
                "metadata": {},
                "balance_transactions": [],
                "evidence_details": {"due_by": int(self.now()) + 7 * DAY, "has_evidence": False},
            }
            self._store(dp)
            charge["disputed"] = True
            txn = self._balance("adjustment", -amount, dp["currency"], dp["id"], fee=DISPUTE_FEE)
            dp["balance_transactions"].append(copy.deepcopy(txn))
            self._event("charge.dispute.created", dp)
            self._event("charge.dispute.funds_withdrawn", dp)
            return str(dp["id"])

    def close_dispute(self, dispute: str, won: bool) -> None:
        with self._lock:
            dp = self._get("disputes", dispute, "dispute")
            dp["status"] = "won" if won else "lost"
            if won:
                txn = self._balance("adjustment", dp["amount"], dp["currency"], dp["id"])
                dp["balance_transactions"].append(copy.deepcopy(txn))
                self._event("charge.dispute.funds_reinstated", dp)
            self._event("charge.dispute.closed", dp)

    def count(self, op: str) -> int:
        """How many times ``op`` took effect."""
        return self.effects.count(op)

    def sent(self, op: str) -> int:
        """How many requests for ``op`` reached the fake (the SDK's own retries would show here)."""
        return sum(1 for r in self.requests if r.op == op)

    def obj(self, ident: str) -> dict[str, Any]:
        with self._lock:
            kind = _PREFIX_TO_KIND[ident.split("_", 1)[0]]
            return copy.deepcopy(self.objects[kind][ident])

    # --- webhooks ------------------------------------------------------------------------

    def deliver(self, order: str = "fifo", copies: int = 1) -> list[Delivery]:
        """Send the waiting events now (``order``: fifo | lifo), each ``copies`` times."""
        with self._lock:
            batch, self.outbox = self.outbox, []
        if order == "lifo":
            batch.reverse()
        out = []
        for event in batch:
            for _ in range(copies):
                out.append(self._post_event(event))
        return out

    def signature_header(self, payload: str, timestamp: int | None = None) -> str:
        t = int(time.time()) + self.sign_offset_s if timestamp is None else timestamp
        return (
            f"t={t},v1={sign_payload(self.webhook_secret, payload, t)},"
            f"v0={sign_payload(self._v0_secret, payload, t)}"
        )

    def payload(self, event: dict[str, Any]) -> str:
        return json.dumps(event, indent=2)

    def _post_event(self, event: dict[str, Any]) -> Delivery:
        if self.webhook_url is None:
            raise AssertionError("set fake.webhook_url before delivering events")
        payload = self.payload(event)
        req = urllib.request.Request(
            self.webhook_url,
            data=payload.encode(),
            method="POST",
            headers={
                "Content-Type": "application/json; charset=utf-8",
                "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                "Stripe-Signature": self.signature_header(payload),
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                status = resp.status
        except urllib.error.HTTPError as e:
            status = e.code
        d = Delivery(event["id"], event["type"], status)
        self.deliveries.append(d)
        return d

    def _queue(self, events: list[dict[str, Any]]) -> None:
        if not self.auto_deliver:
            return
        with self._lock:
            for e in events:
                self.outbox.remove(e)

        def send() -> None:
            for e in events:
                for _ in range(self.delivery_copies):
                    self._post_event(e)

        if self.delivery_delay_s > 0:
            t = threading.Timer(self.delivery_delay_s, send)
            t.daemon = True
            self._timers.append(t)
            t.start()
        else:
            send()

    # --- request handling ----------------------------------------------------------------

    _ROUTES: tuple[tuple[str, str, str], ...] = (
        ("POST", r"/v1/customers", "customers.create"),
        ("GET", r"/v1/customers/(?P<id>[^/]+)", "customers.retrieve"),
        ("POST", r"/v1/setup_intents", "setup_intents.create"),
        ("GET", r"/v1/setup_intents", "setup_intents.list"),
        ("GET", r"/v1/setup_intents/(?P<id>[^/]+)", "setup_intents.retrieve"),
        ("POST", r"/v1/payment_intents", "payment_intents.create"),
        ("GET", r"/v1/payment_intents", "payment_intents.list"),
        ("GET", r"/v1/payment_intents/(?P<id>[^/]+)", "payment_intents.retrieve"),
        ("POST", r"/v1/payment_intents/(?P<id>[^/]+)/capture", "payment_intents.capture"),
        ("POST", r"/v1/payment_intents/(?P<id>[^/]+)/cancel", "payment_intents.cancel"),
        ("POST", r"/v1/refunds", "refunds.create"),
        ("GET", r"/v1/refunds", "refunds.list"),
        ("POST", r"/v1/transfers", "transfers.create"),
        ("GET", r"/v1/transfers", "transfers.list"),
        ("GET", r"/v1/balance_transactions", "balance_transactions.list"),
        ("GET", r"/v1/charges/(?P<id>[^/]+)", "charges.retrieve"),
    )

    def handle(
        self, method: str, target: str, raw: str, headers: dict[str, str]
    ) -> tuple[int, str, dict[str, str]]:
        """Answer one request: (status, JSON body, extra headers)."""
        parts = urlsplit(target)
        path = parts.path
        hdrs = {k.lower(): v for k, v in headers.items()}
        request_id = self._id("req")
        out_headers = {"Request-Id": request_id, "Stripe-Version": hdrs.get("stripe-version", API_VERSION)}
        log = RequestLog(method, path, "", hdrs.get("idempotency-key"))
        try:
            params = decode_form(parse_qsl(raw if method == "POST" else parts.query, keep_blank_values=True))
        except ApiError as e:
            return e.status, json.dumps({"error": e.error}), out_headers
        log.params = params
        auth = hdrs.get("authorization", "")
        if auth != f"Bearer {self.api_key}":
            shown = auth.removeprefix("Bearer ")[-4:]
            return (
                401,
                json.dumps(
                    {
                        "error": {
                            "type": "invalid_request_error",
                            "message": f"Invalid API Key provided: sk_test_****{shown}",
                        }
                    }
                ),
                out_headers,
            )
        route = self._route(method, path)
        if route is None:
            return (
                404,
                json.dumps(
                    {
                        "error": {
                            "type": "invalid_request_error",
                            "message": f"Unrecognized request URL ({method}: {path}).",
                        }
                    }
                ),
                out_headers,
            )
        op, ident = route
        log.op = op
        with self._lock:
            self.requests.append(log)
            failure = next((f for f in self._failures if f.op == op), None)
            if failure is not None:
                self._failures.remove(failure)
            outbox_before = len(self.outbox)
        if failure is not None and failure.kind == "edge":
            log.status = failure.status
            return failure.status, _server_error(), out_headers
        if method == "POST" and log.idempotency_key:
            status, body, extra = self._idempotent(op, ident, method, path, params, log, failure, request_id)
        else:
            if failure is not None and failure.kind == "timeout_before":
                time.sleep(failure.delay_s)
            status, body, extra = self._execute(op, ident, params, failure)
            status = 400 if status == -1 else status
            if failure is not None and failure.kind == "timeout_after":
                time.sleep(failure.delay_s)
        out_headers.update(extra)
        log.status = status
        with self._lock:
            new_events = self.outbox[outbox_before:]
        if self.deliver_before_response and new_events:
            with self._lock:
                for event in new_events:
                    self.outbox.remove(event)
            for event in new_events:
                self._post_event(event)
        elif new_events:
            self._queue(new_events)
        return status, body, out_headers

    def _route(self, method: str, path: str) -> tuple[str, str | None] | None:
        for m, pattern, op in self._ROUTES:
            if m == method:
                match = re.fullmatch(pattern, path)
                if match:
                    return op, match.groupdict().get("id")
        return None

    def _idempotent(
        self,
        op: str,
        ident: str | None,
        method: str,
        path: str,
        params: dict[str, Any],
        log: RequestLog,
        failure: _Failure | None,
        request_id: str,
    ) -> tuple[int, str, dict[str, str]]:
        key = log.idempotency_key
        assert key is not None
        with self._lock:
            self._housekeeping()
            rec = self._keys.get(key)
            if rec is not None:
                if rec.in_progress:
                    return (
                        409,
                        _error_body(
                            "idempotency_error",
                            "There is currently another in-progress request using this Idempotent Key "
                            "(that probably means you submitted twice, and the other request is still going "
                            f"through): {key}. Please try again later.",
                            code="idempotency_key_in_use",
                        ),
                        {},
                    )
                if rec.path != path or rec.method != method:
                    return (
                        400,
                        _error_body(
                            "idempotency_error",
                            f"Keys for idempotent requests can only be used for the same endpoint they were "
                            f"first used for ('{rec.method} {rec.path}' vs '{method} {path}'). Try using a key "
                            f"other than '{key}' if you meant to execute a different request.",
                        ),
                        {},
                    )
                if rec.params != params:
                    return (
                        400,
                        _error_body(
                            "idempotency_error",
                            "Keys for idempotent requests can only be used with the same parameters they were "
                            f"first used with. Try using a key other than '{key}' if you meant to execute a "
                            "different request.",
                        ),
                        {},
                    )
                log.replayed = True
                return (
                    rec.status,
                    rec.body,
                    {"Idempotent-Replayed": "true", "Original-Request": rec.request_id},
                )
            rec = _Stored(method, path, copy.deepcopy(params), self.now(), request_id)
            self._keys[key] = rec
        if failure is not None and failure.kind == "timeout_before":
            time.sleep(failure.delay_s)  # the key stays "in progress" meanwhile
        status, body, extra = self._execute(op, ident, params, failure)
        with self._lock:
            if status == -1:  # a validation failure: nothing saved under the key
                del self._keys[key]
                status = 400
            else:
                rec.status, rec.body, rec.in_progress = status, body, False
        if failure is not None and failure.kind == "timeout_after":
            time.sleep(failure.delay_s)
        return status, body, extra

    def _execute(
        self, op: str, ident: str | None, params: dict[str, Any], failure: _Failure | None
    ) -> tuple[int, str, dict[str, str]]:
        """Run the endpoint; a status of -1 marks a validation failure that is not saved."""
        if failure is not None and failure.kind == "stored":
            return failure.status, _server_error(), {"Stripe-Should-Retry": "false"}
        with self._lock:
            self._housekeeping()
            try:
                handler: Callable[[str | None, dict[str, Any]], dict[str, Any]] = getattr(
                    self, "_op_" + op.replace(".", "_")
                )
                result = handler(ident, params)
                if not op.endswith((".list", ".retrieve")):
                    self.effects.append(op)
                body = json.dumps(self._expand(result, params.get("expand") or []))
            except ApiError as e:
                if e.effect:
                    self.effects.append(op)
                if not e.stored:
                    return -1, json.dumps({"error": e.error}), {}
                return e.status, json.dumps({"error": e.error}), {}
        if failure is not None and failure.kind == "after_effect":
            return failure.status, _server_error(), {"Stripe-Should-Retry": "false"}
        return 200, body, {}

    # --- endpoints -----------------------------------------------------------------------

    def _op_customers_create(self, _: str | None, p: dict[str, Any]) -> dict[str, Any]:
        return self._new_customer(p.get("metadata") or {})

    def _op_customers_retrieve(self, ident: str | None, p: dict[str, Any]) -> dict[str, Any]:
        return self._get("customers", ident, "customer")

    def _op_setup_intents_create(self, _: str | None, p: dict[str, Any]) -> dict[str, Any]:
        _no_payment_method_types(p)
        customer = p.get("customer")
        if customer is not None:
            self._get("customers", customer, "customer")
        if p.get("usage", "off_session") not in ("off_session", "on_session"):
            raise _invalid("Invalid usage", param="usage")
        seti_id = self._id("seti")
        seti: dict[str, Any] = {
            "id": seti_id,
            "object": "setup_intent",
            "client_secret": f"{seti_id}_secret_{secrets.token_hex(12)}",
            "customer": customer,
            "payment_method": None,
            "allowed_payment_method_types": p.get("allowed_payment_method_types"),
            "payment_method_types": p.get("allowed_payment_method_types") or ["card"],
            "status": "requires_payment_method",
            "usage": p.get("usage", "off_session"),
            "created": int(self.now()),
            "last_setup_error": None,
            "next_action": None,
            "livemode": False,
            "metadata": p.get("metadata") or {},
        }
        self._store(seti)
        self._event("setup_intent.created", seti)
        return seti

    def _op_setup_intents_list(self, _: str | None, p: dict[str, Any]) -> dict[str, Any]:
        items = [o for o in self._newest_first("setup_intents") if p.get("customer") in (None, o["customer"])]
        return self._page("/v1/setup_intents", _created_filter(items, p.get("created")), p)

    def _op_setup_intents_retrieve(self, ident: str | None, p: dict[str, Any]) -> dict[str, Any]:
        return self._get("setup_intents", ident, "intent")

    def _op_payment_intents_create(self, _: str | None, p: dict[str, Any]) -> dict[str, Any]:
        _no_payment_method_types(p)
        amount = _int(p, "amount", required=True)
        if amount <= 0:
            raise _invalid(
                "This value must be greater than or equal to 1.", "parameter_invalid_integer", "amount"
            )
        currency = str(p.get("currency") or "").lower()
        if not re.fullmatch(r"[a-z]{3}", currency):
            raise _invalid("Missing required param: currency.", "parameter_missing", "currency")
        capture_method = p.get("capture_method", "automatic_async")
        if capture_method not in ("automatic", "automatic_async", "manual"):
            raise _invalid(f"Invalid capture_method: {capture_method}", param="capture_method")
        confirm = _bool(p, "confirm")
        off_session = _bool(p, "off_session")
        if off_session and not confirm:
            raise _invalid("off_session can only be used with confirm=true.", param="off_session")
        customer = p.get("customer")
        pm_id = p.get("payment_method")
        if confirm and not pm_id:
            raise _invalid(
                "You cannot confirm this PaymentIntent because it's missing a payment method.",
                "payment_intent_unexpected_state",
                stored=True,
            )
        no_redirects = (p.get("automatic_payment_methods") or {}).get("allow_redirects") == "never" or (
            bool(p.get("allowed_payment_method_types"))
            and set(p["allowed_payment_method_types"]) <= {"card", "link"}
        )
        if confirm and not no_redirects and "return_url" not in p:
            raise _invalid(
                "This PaymentIntent is configured to accept payment methods enabled in your Dashboard. Because "
                "some of these payment methods might redirect your customer off of your page, you must provide "
                "a `return_url`.",
                param="return_url",
            )
        if customer is not None:
            self._get("customers", customer, "customer")
        if pm_id is not None:
            pm = self._get("payment_methods", pm_id, "payment_method")
            if pm["customer"] != customer:
                raise _invalid(
                    f"The provided PaymentMethod {pm_id} does not belong to the Customer {customer}.",
                    "payment_method_invalid_parameter",
                    "payment_method",
                    stored=True,
                )
        pi_id = self._id("pi")
        pi: dict[str, Any] = {
            "id": pi_id,
            "object": "payment_intent",
            "amount": amount,
            "amount_capturable": 0,
            "amount_received": 0,
            "currency": currency,
            "customer": customer,
            "payment_method": pm_id,
            "allowed_payment_method_types": p.get("allowed_payment_method_types"),
            "payment_method_types": p.get("allowed_payment_method_types") or ["card"],
            "capture_method": capture_method,
            "confirmation_method": "automatic",
            "status": "requires_payment_method" if pm_id is None else "requires_confirmation",
            "client_secret": f"{pi_id}_secret_{secrets.token_hex(12)}",
            "created": int(self.now()),
            "canceled_at": None,
            "cancellation_reason": None,
            "description": p.get("description"),
            "last_payment_error": None,
            "latest_charge": None,
            "livemode": False,
            "metadata": p.get("metadata") or {},
            "next_action": None,
            "transfer_group": p.get("transfer_group"),
        }
        self._store(pi)
        self._event("payment_intent.created", pi)
        if confirm:
            self._authorise(pi, off_session=off_session)
            if pi["last_payment_error"] is not None:
                err = copy.deepcopy(pi["last_payment_error"])
                err["payment_intent"] = copy.deepcopy(pi)
                raise ApiError(402, err, stored=True, effect=True)
        return pi

    def _op_payment_intents_list(self, _: str | None, p: dict[str, Any]) -> dict[str, Any]:
        items = [
            o for o in self._newest_first("payment_intents") if p.get("customer") in (None, o["customer"])
        ]
        return self._page("/v1/payment_intents", _created_filter(items, p.get("created")), p)

    def _op_payment_intents_retrieve(self, ident: str | None, p: dict[str, Any]) -> dict[str, Any]:
        return self._get("payment_intents", ident, "intent")

    def _op_payment_intents_capture(self, ident: str | None, p: dict[str, Any]) -> dict[str, Any]:
        pi = self._get("payment_intents", ident, "intent")
        if pi["status"] != "requires_capture":
            raise self._unexpected_state(pi, "captured", ("requires_capture",))
        amount = _int(p, "amount_to_capture") if "amount_to_capture" in p else pi["amount_capturable"]
        if amount <= 0:
            raise _invalid(
                "This value must be greater than or equal to 1.",
                "parameter_invalid_integer",
                "amount_to_capture",
            )
        if amount > pi["amount_capturable"]:
            raise _invalid(
                f"The amount_to_capture ({amount}) must be less than or equal to the PaymentIntent's "
                f"amount_capturable ({pi['amount_capturable']}).",
                "amount_too_large",
                "amount_to_capture",
                stored=True,
            )
        charge = self.objects["charges"][pi["latest_charge"]]
        fee = (amount * FEE_BP + 5000) // 10000 + FEE_FIXED
        txn = self._balance("charge", amount, pi["currency"], charge["id"], fee=fee)
        charge.update(captured=True, amount_captured=amount, balance_transaction=txn["id"])
        pi["metadata"].update(p.get("metadata") or {})
        pi.update(status="succeeded", amount_received=amount, amount_capturable=0)
        self._event("charge.captured", charge)
        self._event("payment_intent.succeeded", pi)
        return pi

    def _op_payment_intents_cancel(self, ident: str | None, p: dict[str, Any]) -> dict[str, Any]:
        pi = self._get("payment_intents", ident, "intent")
        allowed = ("requires_payment_method", "requires_capture", "requires_confirmation", "requires_action")
        if pi["status"] not in allowed:
            raise self._unexpected_state(pi, "canceled", allowed)
        reason = p.get("cancellation_reason")
        if reason not in (None, "duplicate", "fraudulent", "requested_by_customer", "abandoned"):
            raise _invalid(f"Invalid cancellation_reason: {reason}", param="cancellation_reason")
        self._cancel(pi, reason)
        return pi

    def _op_refunds_create(self, _: str | None, p: dict[str, Any]) -> dict[str, Any]:
        if "payment_intent" in p:
            pi = self._get("payment_intents", p["payment_intent"], "payment_intent")
        else:
            ch = self._get("charges", p.get("charge"), "charge")
            pi = self.objects["payment_intents"][ch["payment_intent"]]
        charge = self.objects["charges"].get(pi["latest_charge"] or "")
        if pi["status"] != "succeeded" or charge is None:
            raise _invalid(
                f"This PaymentIntent ({pi['id']}) does not have a successful charge to refund.",
                "charge_not_refundable" if pi["status"] != "requires_capture" else "charge_not_captured",
                stored=True,
            )
        left = charge["amount_captured"] - charge["amount_refunded"]
        if left <= 0:
            raise _invalid(
                f"Charge {charge['id']} has already been refunded.", "charge_already_refunded", stored=True
            )
        amount = _int(p, "amount") if "amount" in p else left
        if amount <= 0:
            raise _invalid(
                "This value must be greater than or equal to 1.", "parameter_invalid_integer", "amount"
            )
        if amount > left:
            raise _invalid(
                f"Refund amount ({amount}) is greater than unrefunded amount on charge ({left})",
                "amount_too_large",
                "amount",
                stored=True,
            )
        txn_src = self._id("re")
        txn = self._balance("refund", -amount, charge["currency"], txn_src)
        refund: dict[str, Any] = {
            "id": txn_src,
            "object": "refund",
            "amount": amount,
            "balance_transaction": txn["id"],
            "charge": charge["id"],
            "currency": charge["currency"],
            "payment_intent": pi["id"],
            "reason": p.get("reason"),
            "status": "succeeded",
            "created": int(self.now()),
            "metadata": p.get("metadata") or {},
        }
        self._store(refund)
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] >= charge["amount_captured"]
        self._event("refund.created", refund)
        self._event("charge.refunded", charge)
        return refund

    def _op_refunds_list(self, _: str | None, p: dict[str, Any]) -> dict[str, Any]:
        items = [
            o
            for o in self._newest_first("refunds")
            if p.get("payment_intent") in (None, o["payment_intent"])
            and p.get("charge") in (None, o["charge"])
        ]
        return self._page("/v1/refunds", items, p)

    def _op_transfers_create(self, _: str | None, p: dict[str, Any]) -> dict[str, Any]:
        amount = _int(p, "amount", required=True)
        currency = str(p.get("currency") or "").lower()
        destination = p.get("destination")
        if not currency:
            raise _invalid("Missing required param: currency.", "parameter_missing", "currency")
        if not destination:
            raise _invalid("Missing required param: destination.", "parameter_missing", "destination")
        if amount <= 0:
            raise _invalid(
                "This value must be greater than or equal to 1.", "parameter_invalid_integer", "amount"
            )
        if destination not in self.accounts:
            raise _invalid(
                f"No such destination: '{destination}'", "resource_missing", "destination", stored=True
            )
        source = p.get("source_transaction")
        if source is not None:
            charge = self._get("charges", source, "source_transaction")
            sent = sum(
                t["amount"] for t in self.objects["transfers"].values() if t["source_transaction"] == source
            )
            if amount > charge["amount_captured"] - charge["amount_refunded"] - sent:
                raise _invalid(
                    "The transfer amount exceeds what is left of the source transaction.",
                    "transfers_not_allowed",
                    "amount",
                    stored=True,
                )
        elif amount > self._available(currency):
            raise _invalid(
                "You have insufficient available funds in your Stripe account.",
                "balance_insufficient",
                stored=True,
            )
        tr_id = self._id("tr")
        txn = self._balance("transfer", -amount, currency, tr_id)
        tr: dict[str, Any] = {
            "id": tr_id,
            "object": "transfer",
            "amount": amount,
            "amount_reversed": 0,
            "balance_transaction": txn["id"],
            "currency": currency,
            "destination": destination,
            "destination_payment": self._id("py"),
            "source_transaction": source,
            "transfer_group": p.get("transfer_group"),
            "created": int(self.now()),
            "reversed": False,
            "livemode": False,
            "metadata": p.get("metadata") or {},
        }
        self._store(tr)
        self._event("transfer.created", tr)
        return tr

    def _op_transfers_list(self, _: str | None, p: dict[str, Any]) -> dict[str, Any]:
        items = [
            o
            for o in self._newest_first("transfers")
            if p.get("destination") in (None, o["destination"])
            and p.get("transfer_group") in (None, o["transfer_group"])
        ]
        return self._page("/v1/transfers", _created_filter(items, p.get("created")), p)

    def _op_balance_transactions_list(self, _: str | None, p: dict[str, Any]) -> dict[str, Any]:
        items = [o for o in self._newest_first("balance_transactions") if p.get("type") in (None, o["type"])]
        return self._page("/v1/balance_transactions", _created_filter(items, p.get("created")), p)

    def _op_charges_retrieve(self, ident: str | None, p: dict[str, Any]) -> dict[str, Any]:
        return self._get("charges", ident, "charge")

    # --- the account's books -------------------------------------------------------------

    def _id(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}_{self._seq:06d}{secrets.token_hex(6)}"

    def _store(self, obj: dict[str, Any]) -> None:
        kind = _PREFIX_TO_KIND[obj["id"].split("_", 1)[0]]
        self.objects[kind][obj["id"]] = obj
        self.order.append(obj["id"])

    def _get(self, kind: str, ident: str | None, param: str) -> dict[str, Any]:
        obj = self.objects[kind].get(ident or "")
        if obj is None:
            raise _missing(kind.rstrip("s"), str(ident), param)
        return obj

    def _newest_first(self, kind: str) -> list[dict[str, Any]]:
        return [self.objects[kind][i] for i in reversed(self.order) if i in self.objects[kind]]

    def _page(self, url: str, items: list[dict[str, Any]], p: dict[str, Any]) -> dict[str, Any]:
        limit = min(max(_int(p, "limit") if "limit" in p else 10, 1), 100)
        after = p.get("starting_after")
        if after:
            ids = [o["id"] for o in items]
            if after not in ids:
                raise _invalid(f"No such object: '{after}'", "resource_missing", "starting_after")
            items = items[ids.index(after) + 1 :]
        return {"object": "list", "url": url, "has_more": len(items) > limit, "data": items[:limit]}

    def _new_customer(self, metadata: dict[str, Any]) -> dict[str, Any]:
        cus: dict[str, Any] = {
            "id": self._id("cus"),
            "object": "customer",
            "created": int(self.now()),
            "invoice_settings": {"default_payment_method": None},
            "livemode": False,
            "metadata": metadata,
        }
        self._store(cus)
        self._event("customer.created", cus)
        return cus

    def _new_payment_method(self, number: str, customer: str | None) -> dict[str, Any]:
        brand, _ = _CARDS.get(number, ("visa", "ok"))
        pm: dict[str, Any] = {
            "id": self._id("pm"),
            "object": "payment_method",
            "type": "card",
            "card": {
                "brand": brand,
                "last4": number[-4:],
                "exp_month": 12,
                "exp_year": 2034,
                "funding": "credit",
            },
            "customer": customer,
            "created": int(self.now()),
            "livemode": False,
            "metadata": {},
        }
        self._store(pm)
        self.card_numbers[pm["id"]] = number
        if customer:
            self._event("payment_method.attached", pm)
        return pm

    def _card_error_obj(self, code: str, decline_code: str, pi: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "card_error",
            "code": code,
            "decline_code": decline_code,
            "message": _DECLINE_MESSAGES.get(decline_code, "Your card was declined."),
            "doc_url": f"https://docs.stripe.com/error-codes/{code.replace('_', '-')}",
            "payment_method": copy.deepcopy(self.objects["payment_methods"].get(pi["payment_method"])),
        }

    def _authorise(self, pi: dict[str, Any], off_session: bool) -> None:
        """Confirm ``pi`` with its card: a hold, a decline or (off session) authentication_required."""
        pm_id = pi["payment_method"]
        number = self.card_numbers[pm_id]
        brand, behaviour = _CARDS.get(number, ("visa", "ok"))
        if behaviour == "auth_always" and off_session:
            pi["last_payment_error"] = self._card_error_obj(
                "authentication_required", "authentication_required", pi
            )
            pi["status"] = "requires_payment_method"
            self._event("payment_intent.payment_failed", pi)
            return
        decline: tuple[str, str] | None = None
        if behaviour == "decline_on_charge":
            decline = ("card_declined", "generic_decline")
        elif pm_id in self.expired_cards:
            decline = ("expired_card", "expired_card")
        elif pm_id in self.funds and pi["amount"] > self.funds[pm_id]:
            decline = ("card_declined", "insufficient_funds")
        now = int(self.now())
        window = VISA_MIT_WINDOW_S if (brand == "visa" and off_session) else DEFAULT_WINDOW_S
        charge: dict[str, Any] = {
            "id": self._id("ch"),
            "object": "charge",
            "amount": pi["amount"],
            "amount_captured": 0,
            "amount_refunded": 0,
            "balance_transaction": None,
            "captured": False,
            "created": now,
            "currency": pi["currency"],
            "customer": pi["customer"],
            "disputed": False,
            "failure_code": decline[0] if decline else None,
            "failure_message": _DECLINE_MESSAGES[decline[1]] if decline else None,
            "livemode": False,
            "metadata": {},
            "outcome": {
                "network_status": "declined_by_network" if decline else "approved_by_network",
                "reason": decline[1] if decline else None,
                "type": "issuer_declined" if decline else "authorized",
            },
            "paid": decline is None,
            "payment_intent": pi["id"],
            "payment_method": pm_id,
            "payment_method_details": {
                "type": "card",
                "card": {
                    "brand": brand,
                    "last4": number[-4:],
                    "capture_before": None if decline else now + window,
                    "network": brand,
                },
            },
            "refunded": False,
            "status": "failed" if decline else "succeeded",
        }
        self._store(charge)
        pi["latest_charge"] = charge["id"]
        if decline:
            pi["last_payment_error"] = self._card_error_obj(decline[0], decline[1], pi)
            pi["last_payment_error"]["charge"] = charge["id"]
            pi["status"] = "requires_payment_method"
            self._event("charge.failed", charge)
            self._event("payment_intent.payment_failed", pi)
            return
        pi["last_payment_error"] = None
        if pi["capture_method"] == "manual":
            pi.update(status="requires_capture", amount_capturable=pi["amount"])
            self._event("charge.succeeded", charge)
            self._event("payment_intent.amount_capturable_updated", pi)
        else:
            fee = (pi["amount"] * FEE_BP + 5000) // 10000 + FEE_FIXED
            txn = self._balance("charge", pi["amount"], pi["currency"], charge["id"], fee=fee)
            charge.update(captured=True, amount_captured=pi["amount"], balance_transaction=txn["id"])
            pi.update(status="succeeded", amount_received=pi["amount"])
            self._event("charge.succeeded", charge)
            self._event("payment_intent.succeeded", pi)

    def _cancel(self, pi: dict[str, Any], reason: str | None) -> None:
        """Since 2025-03-31.basil a release creates no Refund: the charge keeps amount_refunded 0,
        refunded false, and only charge.expired (on expiry) and payment_intent.canceled are sent."""
        charge = self.objects["charges"].get(pi["latest_charge"] or "")
        held = pi["status"] == "requires_capture"
        pi.update(
            status="canceled",
            cancellation_reason=reason,
            canceled_at=int(self.now()),
            amount_capturable=0,
        )
        if held and charge is not None and reason == self.expiry_reason:
            self._event("charge.expired", charge)
        self._event("payment_intent.canceled", pi)

    def _unexpected_state(self, pi: dict[str, Any], verb: str, allowed: tuple[str, ...]) -> ApiError:
        err = {
            "type": "invalid_request_error",
            "code": "payment_intent_unexpected_state",
            "doc_url": "https://docs.stripe.com/error-codes/payment-intent-unexpected-state",
            "message": (
                f"This PaymentIntent could not be {verb} because it has a status of {pi['status']}. "
                f"Only a PaymentIntent with one of the following statuses may be {verb}: {', '.join(allowed)}."
            ),
            "payment_intent": copy.deepcopy(pi),
        }
        return ApiError(400, err, stored=True)

    def _balance(self, type_: str, amount: int, currency: str, source: str, fee: int = 0) -> dict[str, Any]:
        now = int(self.now())
        txn: dict[str, Any] = {
            "id": self._id("txn"),
            "object": "balance_transaction",
            "amount": amount,
            "available_on": now + 2 * DAY,
            "created": now,
            "currency": currency,
            "description": None,
            "fee": fee,
            "fee_details": (
                [
                    {
                        "amount": fee,
                        "currency": currency,
                        "type": "stripe_fee",
                        "description": "Stripe processing fees",
                    }
                ]
                if fee
                else []
            ),
            "net": amount - fee,
            "reporting_category": {
                "charge": "charge",
                "refund": "refund",
                "adjustment": "dispute",
                "transfer": "transfer",
            }.get(type_, type_),
            "source": source,
            "status": "pending",
            "type": type_,
        }
        self._store(txn)
        return txn

    def _available(self, currency: str) -> int:
        return sum(
            t["net"] for t in self.objects["balance_transactions"].values() if t["currency"] == currency
        )

    def _event(self, type_: str, obj: dict[str, Any]) -> None:
        event: dict[str, Any] = {
            "id": self._id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": int(self.now()),
            "data": {"object": copy.deepcopy(obj)},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": type_,
        }
        self.events.append(event)
        self.outbox.append(event)

    def _housekeeping(self) -> None:
        """What Stripe does by itself as time passes: lapse holds, prune old idempotency keys."""
        now = self.now()
        for pi in list(self.objects["payment_intents"].values()):
            if pi["status"] != "requires_capture":
                continue
            charge = self.objects["charges"][pi["latest_charge"]]
            before = charge["payment_method_details"]["card"]["capture_before"]
            if before is not None and before <= now:
                self._cancel(pi, self.expiry_reason)
        for key in [k for k, r in self._keys.items() if not r.in_progress and r.created + KEY_TTL_S <= now]:
            del self._keys[key]

    def _expand(self, obj: dict[str, Any], paths: list[str]) -> dict[str, Any]:
        out = copy.deepcopy(obj)
        for path in paths:
            self._expand_path(out, path.split("."))
        return out

    def _expand_path(self, node: Any, parts: list[str]) -> None:
        if not parts or not isinstance(node, dict):
            return
        head, rest = parts[0], parts[1:]
        if head == "data" and isinstance(node.get("data"), list):
            for item in node["data"]:
                self._expand_path(item, rest)
            return
        value = node.get(head)
        if isinstance(value, str) and value.split("_", 1)[0] in _PREFIX_TO_KIND:
            kind = _PREFIX_TO_KIND[value.split("_", 1)[0]]
            found = self.objects[kind].get(value)
            if found is not None:
                node[head] = copy.deepcopy(found)
        self._expand_path(node.get(head), rest)


def _error_body(type_: str, message: str, code: str | None = None) -> str:
    err: dict[str, Any] = {"type": type_, "message": message}
    if code:
        err["code"] = code
    return json.dumps({"error": err})


def _no_payment_method_types(p: dict[str, Any]) -> None:
    if "payment_method_types" in p:  # removed as a parameter in 2026-09-30.endive
        raise _invalid(
            "The `payment_method_types` parameter is no longer supported on this API version. Use "
            "`allowed_payment_method_types` or dynamic payment methods instead.",
            "payment_method_types_no_longer_supported",
            "payment_method_types",
        )


def _server_error() -> str:
    return _error_body("api_error", "An unknown error occurred")


def _int(p: dict[str, Any], name: str, required: bool = False) -> int:
    if name not in p:
        if required:
            raise _invalid(f"Missing required param: {name}.", "parameter_missing", name)
        return 0
    try:
        return int(p[name])
    except (TypeError, ValueError):
        raise _invalid(f"Invalid integer: {p[name]}", "parameter_invalid_integer", name) from None


def _bool(p: dict[str, Any], name: str) -> bool:
    value = p.get(name, "false")
    if value not in ("true", "false"):
        raise _invalid(f"Invalid boolean: {value}", param=name)
    return bool(value == "true")


def _created_filter(items: list[dict[str, Any]], created: Any) -> list[dict[str, Any]]:
    if created is None:
        return items
    if not isinstance(created, dict):
        return [o for o in items if o["created"] == int(created)]
    ops: dict[str, Callable[[int, int], bool]] = {
        "gt": lambda a, b: a > b,
        "gte": lambda a, b: a >= b,
        "lt": lambda a, b: a < b,
        "lte": lambda a, b: a <= b,
    }
    for op, bound in created.items():
        if op not in ops:
            raise _invalid(f"Invalid created filter: {op}", param="created")
        items = [o for o in items if ops[op](o["created"], int(bound))]
    return items
