"""The HTTP API's routes declared once: handler name, method, path, auth, request body schema.

``cloud.app`` registers the routes from this table and serves it as OpenAPI 3.1 at
/api/openapi.json, so the document cannot drift from what is served.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sync.topics import CABINET_ID_PATTERN


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: str
    summary: str
    auth: str | None = "user"  # None | "user" | "operator"
    body: dict[str, Any] | None = None
    query: tuple[tuple[str, dict[str, Any], bool], ...] = ()
    ok: int = 200
    responses: dict[int, str] = field(default_factory=dict)


def obj(required: list[str], **props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props, "additionalProperties": False}


STR = {"type": "string", "minLength": 1, "maxLength": 320}
INT = {"type": "integer"}
MONEY = {"type": "integer", "minimum": 1, "maximum": 10**12}
CURRENCY = {"type": "string", "pattern": "^[A-Z]{3}$"}
TARIFF = obj(
    ["currency", "price_per_period"],
    currency=CURRENCY,
    price_per_period={"type": "integer", "minimum": 0, "maximum": 10**9},
    period_minutes={"type": "integer", "minimum": 1, "maximum": 10080},
    free_minutes={"type": "integer", "minimum": 0, "maximum": 10080},
    daily_cap={"type": ["integer", "null"], "minimum": 1, "maximum": 10**9},
    total_cap={"type": "integer", "minimum": 1, "maximum": 10**9},
    hold_amount={"type": ["integer", "null"], "minimum": 1, "maximum": 10**9},
    timezone=STR,
    purchase_after_days={"type": ["integer", "null"], "minimum": 1, "maximum": 365},
)
DATE = {"type": "string", "format": "date"}
# cloud.app answers 404 when one is not a number
INTEGER_PATH_PARAMS = ("merchant_id", "dispute_id", "claim_id", "method_id", "venue_id")
# issue 15: places, opening hours, phones (cloud/places.py, cloud/phone_auth.py)
LAT = {"type": ["number", "null"], "minimum": -90, "maximum": 90}
LON = {"type": ["number", "null"], "minimum": -180, "maximum": 180}
HOURS = {
    "type": ["string", "null"],
    "minLength": 1,
    "maxLength": 255,
    "description": 'OpenStreetMap opening_hours, e.g. "Mo-Fr 07:00-22:00; Sa-Su 09:00-20:00" or "24/7"',
}
PHONE = {"type": "string", "pattern": "^[+][1-9][0-9]{6,14}$", "maxLength": 16, "description": "E.164"}

ROUTES: tuple[Route, ...] = (
    Route("GET", "/api/health", "health", "Liveness and schema revision", auth=None),
    Route("GET", "/api/openapi.json", "openapi", "This document", auth=None),
    Route("POST", "/api/users", "register", "Register a renter account", auth=None, ok=201,
          body=obj(["email", "password"], email=STR, password={"type": "string", "minLength": 1, "maxLength": 1024},
                   name={"type": ["string", "null"], "maxLength": 200}),
          responses={409: "email already registered", 429: "too many sign-ups from this address (see Retry-After)"}),
    Route("POST", "/api/login", "login", "Log in; returns a bearer token", auth=None,
          body=obj(["email", "password"], email=STR, password={"type": "string", "minLength": 1, "maxLength": 1024}),
          responses={401: "wrong email or password", 429: "too many failed logins (see Retry-After)"}),
    Route("POST", "/api/auth/sms/start", "sms_start",
          "Send a one-time sign-in code by SMS to an E.164 number (a new code replaces a pending one)", auth=None,
          ok=202, body=obj(["phone"], phone=PHONE),
          responses={429: "too many codes for this phone or from this address (see Retry-After)",
                     503: "the SMS backend could not send the message"}),
    Route("POST", "/api/auth/sms/verify", "sms_verify",
          "Sign in with the code, or sign up (a renter account) on a phone's first verify; returns a bearer "
          "token like /api/login. With the bearer token of a signed-in renter, the phone is added to that account",
          auth=None, body=obj(["phone", "code"], phone=PHONE, code={"type": "string", "pattern": "^[0-9]{6}$"}),
          responses={401: "wrong, expired, used or void code (or a bad bearer token)",
                     409: "the phone signs in another account",
                     429: "too many codes tried from this address (see Retry-After)"}),
    Route("POST", "/api/logout", "logout", "End this session", ok=204),
    Route("GET", "/api/me", "me", "The logged-in account"),
    Route("DELETE", "/api/me", "delete_me", "Delete the account (personal data erased, money records kept)", ok=204),
    Route("PUT", "/api/me/card", "set_card", "Attach a payment provider card token (sandbox: tok_ok, tok_decline...)",
          body=obj(["card_token"], card_token={"type": "string", "minLength": 1, "maxLength": 200})),
    Route("GET", "/api/me/rentals", "my_rentals", "The account's rentals, newest first"),
    Route("GET", "/api/me/rentals/{rental_id}/receipt", "my_receipt", "Receipt of one rental", responses={404: "no such rental"}),
    Route("GET", "/api/me/rentals/{rental_id}", "my_rental",
          "One of the account's rentals as the app follows it live: phase of the eject (confirming, sending, "
          "presenting, refused, active, closed, purchased, aborted with a reason), slot, fee so far and when it "
          "next goes up, the hold (amount, status, released)", responses={404: "no such rental in this account"}),
    Route("POST", "/api/me/rentals/{rental_id}/disputes", "open_dispute",
          "Dispute one of the account's rentals (reason; optional amount claimed, at most what was paid)", ok=201,
          body=obj(["reason"], reason={"type": "string", "minLength": 1, "maxLength": 2000},
                   amount_claimed={"type": ["integer", "null"], "minimum": 1, "maximum": 10**12}),
          responses={404: "no such rental in this account", 409: "the rental already has an open dispute"}),
    Route("GET", "/api/me/disputes", "my_disputes", "The account's disputes, newest first"),
    Route("POST", "/api/rentals", "rent",
          "Rent at a cabinet: places a hold and queues the eject command (202 awaiting_confirmation: the renter "
          "confirms the hold in the provider's app first; the eject follows the provider's notification)", ok=201,
          body=obj(["cabinet_id"], cabinet_id={"type": "string", "minLength": 1, "maxLength": 64}),
          responses={202: "hold to confirm in the provider's app (client_action)",
                     402: "card refused, no accepted payment method, or a fee still due (debt)",
                     409: "a rental is already in progress", 404: "unknown cabinet"}),
    Route("POST", "/api/webhooks/{provider}", "webhook", "Signed sandbox provider webhook (Payment-Signature header)",
          auth=None, body={"type": "object"}, responses={400: "signature, age or body rejected"}),
    Route("POST", "/api/payments/{provider}/notify", "provider_notify",
          "A real provider's notification (stripe: Stripe-Signature; wechat: Wechatpay-* headers, AES-GCM body; "
          "alipay: RSA2-signed form), verified by the provider's adapter and applied once",
          auth=None, responses={400: "signature, age or body rejected", 404: "no such provider here"}),
    Route("GET", "/api/me/debts", "my_debts", "The account's fees that could not be collected (retried automatically)"),
    Route("GET", "/api/me/payment-methods", "my_payment_methods", "The account's saved payment methods"),
    Route("POST", "/api/me/payment-methods", "add_payment_method",
          "Save a payment method of one provider (the token its flow on the phone gave: cus_..:pm_.., openid, user id)",
          ok=201, body=obj(["provider", "token"], provider={"type": "string", "enum": ["sandbox", "stripe", "wechat", "alipay"]},
                           token={"type": "string", "minLength": 1, "maxLength": 400},
                           label={"type": "string", "maxLength": 100}),
          responses={400: "provider not offered here"}),
    Route("DELETE", "/api/me/payment-methods/{method_id}", "delete_payment_method", "Remove a saved payment method",
          responses={404: "no such method in this account"}),
    Route("GET", "/api/debts", "list_debts", "Every fee that could not be collected, oldest first", auth="operator"),
    Route("GET", "/api/merchants", "list_merchants", "All merchants", auth="operator"),
    Route("POST", "/api/merchants", "create_merchant", "Create a merchant", auth="operator", ok=201,
          body=obj(["name", "revenue_share_bp", "currency"], name=STR,
                   revenue_share_bp={"type": "integer", "minimum": 0, "maximum": 10000}, currency=CURRENCY, timezone=STR)),
    Route("PATCH", "/api/merchants/{merchant_id}", "update_merchant", "Change a merchant's revenue share", auth="operator",
          body=obj(["revenue_share_bp"], revenue_share_bp={"type": "integer", "minimum": 0, "maximum": 10000})),
    Route("PUT", "/api/merchants/{merchant_id}/payments", "set_merchant_payments",
          "The providers a merchant accepts (preferred first) and its payout account at them", auth="operator",
          body=obj(["providers"], providers={"type": "array", "minItems": 1, "maxItems": 4,
                                             "items": {"type": "string", "enum": ["sandbox", "stripe", "wechat", "alipay"]}},
                   payout_account={"type": ["string", "null"], "maxLength": 200})),
    Route("POST", "/api/merchants/{merchant_id}/payouts", "pay_merchant",
          "Pay a merchant's share through a provider, once per reference (at most what it is owed)", auth="operator",
          ok=201, body=obj(["amount", "currency", "reference"], amount=MONEY, currency=CURRENCY,
                           reference={"type": "string", "minLength": 1, "maxLength": 100},
                           provider={"type": "string", "enum": ["sandbox", "stripe", "wechat", "alipay"]}),
          responses={400: "more than owed, or an unknown provider", 404: "no such merchant"}),
    Route("GET", "/api/merchants/{merchant_id}/payouts", "list_payouts", "A merchant's payouts", auth="operator"),
    Route("POST", "/api/merchants/{merchant_id}/venues", "create_venue",
          "Add a venue (optionally where it is: lat and lon together, and its opening hours)", auth="operator", ok=201,
          body=obj(["name"], name=STR, address={"type": ["string", "null"], "maxLength": 500}, lat=LAT, lon=LON,
                   opening_hours=HOURS),
          responses={404: "no such merchant"}),
    Route("PATCH", "/api/venues/{venue_id}", "update_venue",
          "Change a venue: name, address, lat and lon (together; null for both clears), opening_hours (null: "
          "unknown); audited", auth="operator",
          body=obj([], name=STR, address={"type": ["string", "null"], "maxLength": 500}, lat=LAT, lon=LON,
                   opening_hours=HOURS),
          responses={404: "no such venue"}),
    Route("GET", "/api/merchants/{merchant_id}/settlement", "settlement", "Settlement report (JSON or CSV)",
          auth="operator",
          query=(("from", DATE, True), ("to", DATE, True), ("format", {"type": "string", "enum": ["json", "csv"]}, False))),
    Route("POST", "/api/tariffs", "create_tariff", "Create a tariff (immutable; optionally a merchant's default)",
          auth="operator", ok=201,
          body=obj(["name", "tariff"], name=STR, merchant_id={"type": ["integer", "null"]}, default={"type": "boolean"},
                   tariff=TARIFF)),
    Route("GET", "/api/cabinets/nearby", "nearby_cabinets",
          "Cabinets near a point, nearest first: venue (with open_now), distance_m, online, packs_ready, "
          "free_slots, tariff_text (public: no sign-in)", auth=None,
          query=(("lat", {"type": "number", "minimum": -90, "maximum": 90}, True),
                 ("lon", {"type": "number", "minimum": -180, "maximum": 180}, True),
                 ("limit", {"type": "integer", "minimum": 1, "maximum": 100}, False),
                 ("radius_m", {"type": "integer", "minimum": 1, "maximum": 50000}, False))),
    Route("GET", "/api/cabinets/{cabinet_id}/public", "cabinet_public",
          "A cabinet's page (what its kiosk QR code opens): venue, online, packs_ready, free_slots, the tariff "
          "as numbers and in words (en, zh), the hold a rental takes (public: no sign-in)", auth=None,
          responses={404: "unknown cabinet"}),
    Route("POST", "/api/cabinets", "create_cabinet", "Register a cabinet at a venue", auth="operator", ok=201,
          body=obj(["id"], id={"type": "string", "pattern": CABINET_ID_PATTERN},
                   venue_id={"type": ["integer", "null"]}, tariff_id={"type": ["integer", "null"]},
                   name={"type": ["string", "null"], "maxLength": 200})),
    Route("GET", "/api/rentals/{rental_id}", "get_rental", "One rental with its money fields", auth="operator"),
    Route("POST", "/api/rentals/{rental_id}/refunds", "refund", "Refund part of a fee (reason required, audited)",
          auth="operator", body=obj(["amount", "reason"], amount=MONEY, reason=STR)),
    Route("GET", "/api/disputes", "list_disputes", "Disputes by status (default open), optionally of one user",
          auth="operator",
          query=(("status", {"type": "string", "enum": ["open", "resolving", "refunded", "rejected", "all"]}, False),
                 ("user_id", {"type": "integer", "minimum": 1}, False))),
    Route("POST", "/api/disputes/{dispute_id}/resolve", "resolve_dispute",
          "Resolve a dispute: refund (amount, default the amount claimed; through the refund path) or reject; "
          "note required, audited", auth="operator",
          body=obj(["decision", "note"], decision={"type": "string", "enum": ["refund", "reject"]}, amount=MONEY,
                   note=STR),
          responses={409: "the dispute is not open", 502: "the payment provider refused the refund"}),
    Route("GET", "/api/money/check", "money_check", "Prove the books balance", auth="operator"),
    Route("POST", "/api/operator/sweep", "sweep", "Run the periodic sweep now", auth="operator"),
    Route("POST", "/api/me/passes", "create_pass", "Get a signed offline rent pass (QR text) for cabinets without network",
          ok=201, body=obj([], ttl_s={"type": "integer", "minimum": 60, "maximum": 30 * 86400},
                           max_rentals={"type": "integer", "minimum": 1, "maximum": 10},
                           currency=CURRENCY),
          responses={400: "no cabinet prices the pass (or several currencies: name one)",
                     402: "no card on file, or the card refused the pass's holds (max_rentals x the fleet's "
                          "highest rental cap, placed before the pass is signed)"}),
    Route("GET", "/api/me/passes/{pass_id}", "get_pass", "One of the account's passes again (same QR text)",
          responses={404: "no such pass in this account"}),
    Route("GET", "/api/me/passes/{pass_id}/qr.svg", "my_pass_qr",
          "One of the account's passes as a QR code (image/svg+xml) for a cabinet's code reader",
          responses={404: "no such pass in this account"}),
    Route("GET", "/api/fleet/cabinets", "fleet_cabinets",
          "Every cabinet: online state, last seen, reported backlog, applied seq, open alerts", auth="operator"),
    Route("GET", "/api/fleet/cabinets/{cabinet_id}", "fleet_cabinet", "One cabinet with its slot inventory",
          auth="operator"),
    Route("GET", "/api/fleet/cabinets/{cabinet_id}/events", "fleet_events", "A cabinet's events in seq order",
          auth="operator",
          query=(("after", {"type": "integer", "minimum": 0}, False), ("limit", {"type": "integer", "minimum": 1,
                 "maximum": 5000}, False), ("type", {"type": "string"}, False))),
    Route("POST", "/api/fleet/cabinets/{cabinet_id}/commands", "fleet_send_command",
          "Sign and send a command (unlock, quarantine_slot, release_slot, restart, reboot, set_config, ping); "
          "follow it at /api/fleet/commands/{cmd_id}", auth="operator", ok=202,
          body=obj(["kind"], kind={"type": "string", "minLength": 1, "maxLength": 32}, args={"type": "object"},
                   ttl_s={"type": "integer", "minimum": 5, "maximum": 86400}),
          responses={503: "no MQTT link to the fleet"}),
    Route("GET", "/api/fleet/commands/{cmd_id}", "fleet_command",
          "A command's status: queued, sent, received, ok, failed or expired, with the cabinet's result",
          auth="operator"),
    Route("POST", "/api/fleet/cabinets/{cabinet_id}/config", "fleet_config",
          "Set a cabinet's settings (or the fleet's, cabinet_id '*') and publish its signed config now",
          auth="operator",
          body=obj([], rentable_min_soc={"type": "integer", "minimum": 0, "maximum": 100},
                   power_budget_w={"type": "integer", "minimum": 1, "maximum": 100000},
                   battery_deny_list={"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 64}}),
          responses={503: "no MQTT link to the fleet"}),
    Route("GET", "/api/fleet/alerts", "fleet_alerts",
          "Alerts, newest first: unacknowledged ones by default; state=open|cleared|all (condition alerts: "
          "board_down, cabinet_offline, cabinet_empty, cabinet_full, cert_expiring, crl_expiring clear "
          "themselves), acknowledged=true|false|all, kind, cabinet, limit; all=1 for every alert",
          auth="operator", query=(("cabinet", {"type": "string"}, False), ("all", {"type": "string"}, False),
                                  ("state", {"type": "string", "enum": ["open", "cleared", "all"]}, False),
                                  ("acknowledged", {"type": "string", "enum": ["true", "false", "all"]}, False),
                                  ("kind", {"type": "string"}, False),
                                  ("limit", {"type": "integer", "minimum": 1, "maximum": 5000}, False))),
    Route("GET", "/api/claims", "list_claims",
          "Cabinet claims the cloud kept instead of applying (issue 11.2), newest first; default status open",
          auth="operator",
          query=(("status", {"type": "string", "enum": ["pending", "open", "resolving", "accepted", "rejected", "all"]},
                  False), ("cabinet", {"type": "string"}, False))),
    Route("POST", "/api/claims/{claim_id}/resolve", "resolve_claim",
          "Resolve a kept cabinet claim: apply (runs its original application) or reject; reason required, audited",
          auth="operator",
          body=obj(["action", "reason"], action={"type": "string", "enum": ["apply", "reject"]}, reason=STR),
          responses={409: "the claim is not open, or applying it failed"}),
    Route("POST", "/api/fleet/alerts/{alert_id}/ack", "fleet_ack_alert",
          "Acknowledge an alert (a point alert ends with it; a condition alert stays open until it clears)",
          auth="operator"),
)  # fmt: skip


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document of ROUTES."""
    paths: dict[str, dict[str, Any]] = {}
    error = {"$ref": "#/components/schemas/Error"}
    for r in ROUTES:
        op: dict[str, Any] = {"operationId": r.handler, "summary": r.summary, "responses": {}}
        params = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "integer" if name in INTEGER_PATH_PARAMS else "string"},
            }
            for name in _path_params(r.path)
        ]
        params += [
            {"name": n, "in": "query", "required": req, "schema": schema} for n, schema, req in r.query
        ]
        if params:
            op["parameters"] = params
        if r.body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": r.body}}}
        if r.auth:
            op["security"] = [{"bearer": []}]
        ok_desc = "no content" if r.ok == 204 else "success"
        op["responses"][str(r.ok)] = {"description": ok_desc}
        if r.ok != 204:
            op["responses"][str(r.ok)]["content"] = {"application/json": {"schema": {}}}
        codes = {400: "bad input", **r.responses}
        if r.auth:
            codes[401] = "missing or invalid bearer token"
        if r.auth == "operator":
            codes[403] = "operators only"
        if "{" in r.path:
            codes.setdefault(404, "not found")
        for code, desc in codes.items():
            op["responses"][str(code)] = {
                "description": desc,
                "content": {"application/json": {"schema": error}},
            }
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "cabinet-cloud",
            "version": "1",
            "description": "Power-bank rental cloud: renters, rentals, money, merchants.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
                }
            },
        },
    }


def _path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]
