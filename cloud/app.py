"""The cloud's HTTP API (aiohttp): renters, rentals, money, merchants, operators.

Routes, auth and body schemas come from ``cloud.api_schema.ROUTES`` (also served as OpenAPI).
Every error is JSON ``{"error": code, "message": text}``; bad input is a 4xx, never a 500.
Database and provider calls block, so handlers run them in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import asdict
from datetime import date
from typing import Any

from aiohttp import web
from sqlalchemy import update

from cloud import money
from cloud.api_schema import INTEGER_PATH_PARAMS, ROUTES, Route, openapi
from cloud.config import CloudConfig
from cloud.db import audit_log, make_engine, merchants, migrate, schema_revision
from cloud.disputes import (
    Dispute,
    Disputes,
)
from cloud.errors import (
    INTERNAL_CODE,
    INTERNAL_STATUS,
    BadJson,
    BadRequest,
    CloudError,
    Forbidden,
    InvalidBody,
    NotFound,
)
from cloud.fleet import (
    FleetLink,
    FleetSettings,
    Signatures,
    load_or_create_key,
    mqtt_options_from,
)
from cloud.fleet.alerting import AlertWatch
from cloud.fleet.http import FleetHandlers
from cloud.params import decimal
from cloud.payments import SIGNATURE_HEADER, PaymentError, SandboxProvider, WebhookInbox, WebhookRejected
from cloud.payments.registry import build_providers, is_real
from cloud.payments.webhooks import NotificationIgnored
from cloud.payouts import pay_merchant, payouts_of
from cloud.phone_auth import PhoneSignIn
from cloud.places import Places
from cloud.pricing import Tariff
from cloud.provider_events import EventOutcome, apply_provider_event, replay_unmatched
from cloud.public_http import PublicHandlers
from cloud.rentals import EjectCommand, RentalError, RentalService
from cloud.renter import RenterHandlers, add_app_routes
from cloud.settlement import settlement
from cloud.sms import build_sender
from cloud.users import (
    Accounts,
    NotAuthenticated,
    User,
)
from sync.signing import Signer

log = logging.getLogger(__name__)


class CloudContext:
    """Everything the handlers need, built once from the config (the composition root)."""

    def __init__(
        self,
        config: CloudConfig,
        clock: Callable[[], float] = time.time,
        command_sink: Callable[[EjectCommand], Any] | None = None,
        signer: Signer | None = None,
    ) -> None:
        self.config = config
        self._signer = signer
        self.clock = clock
        self.engine = make_engine(config.database_url)
        # every configured provider (a real one refuses to build without its keys: ConfigError)
        self.providers = build_providers(config, self.engine, clock)
        self.provider = self.providers[config.provider]  # the default
        sandbox = self.providers.get("sandbox")
        self.sandbox = sandbox if isinstance(sandbox, SandboxProvider) else None
        self.inbox = WebhookInbox(
            self.engine, "sandbox", config.webhook_secret, clock, config.webhook_tolerance_s
        )
        self.rentals = RentalService(
            self.engine,
            self.providers,
            clock,
            eject_timeout_s=config.eject_timeout_s,
            hold_capture_margin_s=config.hold_capture_margin_s,
            confirm_timeout_s=config.confirm_timeout_s,
            debt_retry_s=config.debt_retry_s,
            debt_retry_max_s=config.debt_retry_max_s,
            default_provider=config.provider,
        )
        self.catalog = self.rentals.catalog
        self.disputes = Disputes(self.engine, self.rentals.billing, clock)
        self.accounts = Accounts(
            self.engine,
            clock,
            session_ttl_s=config.session_ttl_s,
            max_failures_account=config.login_max_failures_account,
            max_failures_ip=config.login_max_failures_ip,
            window_s=config.login_window_s,
            scrypt_n=config.scrypt_n,
            max_signups_ip=config.signup_max_per_ip,
            signup_window_s=config.signup_window_s,
        )
        self.trusted_proxies = tuple(ipaddress.ip_network(c, strict=False) for c in config.trusted_proxies)
        self.places = Places(self.engine, clock)  # venues' places and hours, nearby, public cabinet pages
        self.phone_sign_in = PhoneSignIn(
            self.engine,
            self.accounts,
            build_sender(config),
            clock,
            code_ttl_s=config.sms_code_ttl_s,
            max_attempts=config.sms_max_attempts,
            max_per_phone=config.sms_max_per_phone,
            max_per_ip=config.sms_max_per_ip,
            window_s=config.sms_window_s,
        )
        self.signatures = Signatures(self.engine, self.rentals, lambda: self.signer, clock)
        self.fleet: FleetLink | None = None
        if config.broker_host:
            settings = FleetSettings(
                command_ttl_s=config.command_ttl_s,
                config_ttl_s=config.config_ttl_s,
                config_resign_margin_s=config.config_resign_margin_s,
            )
            self.fleet = FleetLink(
                self.engine, self.rentals, self.signatures, mqtt_options_from(config), settings, clock
            )
        # an app rental's eject: signed and published on cab/v1/{cabinet}/cmd by the fleet link
        default_sink = (
            self.fleet.send_eject
            if self.fleet
            else (lambda cmd: log.warning("no fleet link: eject %s stays queued", cmd.cmd_id))
        )
        self.command_sink = command_sink or default_sink
        self.pending_ejects = self.rentals.pending_commands  # queued by a sweep: the sweeper sends them

    @property
    def signer(self) -> Signer:
        """The cloud's signing key: given, or made once in ``data_dir`` (never in the repository)."""
        if self._signer is None:
            self._signer = load_or_create_key(self.config.data_dir, self.clock()).signer
        return self._signer

    def audit(self, actor_user_id: int | None, action: str, target: str, detail: Any) -> None:
        """Write an operator action to the audit log."""
        with self.engine.begin() as conn:
            conn.execute(
                audit_log.insert().values(
                    at=self.clock(),
                    actor_user_id=actor_user_id,
                    action=action,
                    target=target,
                    detail=json.dumps(detail, default=str),
                )
            )

    def housekeeping(self) -> dict[str, Any]:
        """One sweep: the sandbox's own expiries and webhooks, provider notifications that came
        before their API answer, then the rental sweep."""
        delivered = 0
        if self.sandbox is not None:
            self.sandbox.expire_holds()
            for d in self.sandbox.due_webhooks():
                try:
                    self.inbox.handle(d.body, d.headers[SIGNATURE_HEADER])
                    delivered += 1
                except WebhookRejected as e:
                    log.error("sandbox webhook rejected: %s", e)
        replayed = queried = 0
        for name, provider in self.providers.items():
            if is_real(provider):
                replayed += replay_unmatched(self.engine, self.rentals, name, self.clock)
            check = getattr(provider, "reconcile", None)  # a provider that does not notify every state
            if callable(check):
                for hold_ref in self.rentals.holds_to_query(name):
                    try:
                        event = check(hold_ref)
                    except PaymentError as e:
                        log.warning("%s: status of hold %s not read: %s", name, hold_ref, e)
                        continue
                    if event is not None:
                        queried += 1
                        outcome = apply_provider_event(self.engine, self.rentals, name, event, self.clock)
                        if outcome.command is not None:
                            self.pending_ejects.append(outcome.command)
        report = self.rentals.sweep()
        return {
            "webhooks": delivered,
            "notifications_replayed": replayed,
            "holds_queried": queried,
            **asdict(report),
        }

    def on_notification(self, provider_name: str, headers: Mapping[str, str], body: bytes) -> EventOutcome:
        """Verify and apply one notification of a real provider (raises WebhookRejected)."""
        provider = self.providers.get(provider_name)
        if provider is None or not is_real(provider):
            raise NotFound(f"no payment provider {provider_name!r} that sends notifications here")
        event = provider.parse_notification(headers, body)  # type: ignore[attr-defined]
        return apply_provider_event(self.engine, self.rentals, provider_name, event, self.clock)


CTX = web.AppKey("cloud", CloudContext)


def create_app(
    config: CloudConfig,
    *,
    clock: Callable[[], float] = time.time,
    command_sink: Callable[[EjectCommand], Any] | None = None,
    run_migrations: bool = True,
    background: bool = True,
    signer: Signer | None = None,
) -> web.Application:
    """Build the aiohttp application (migrates the database first unless told not to).

    With ``config.broker_host`` set, the fleet link (MQTT ingest, commands, config) runs with
    the app; ``signer`` replaces the key kept in ``config.data_dir`` (tests).
    """
    ctx = CloudContext(config, clock, command_sink, signer)
    if run_migrations:
        migrate(ctx.engine)
    app = web.Application(middlewares=[_errors], client_max_size=256 * 1024)
    app[CTX] = ctx
    api = _Handlers(ctx)
    for route in ROUTES:
        app.router.add_route(route.method, route.path, _wrap(route, getattr(api, route.handler)))
    add_app_routes(app, config)  # the renter app's pages at /app/ (cloud/renter)
    if background:
        app.cleanup_ctx.append(_sweeper)
    if ctx.fleet is not None:
        app.cleanup_ctx.append(_fleet_link)
        app.cleanup_ctx.append(alert_watch_ctx)  # silent cabinets, certificate and CRL expiry
    app.on_cleanup.append(_dispose)
    return app


async def alert_watch_ctx(app: Any) -> AsyncIterator[None]:
    """aiohttp cleanup context: runs ``AlertWatch`` beside the fleet link."""
    ctx = app[CTX]
    task = asyncio.create_task(AlertWatch(ctx.engine, ctx.config, ctx.clock).loop(), name="fleet-alerts")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _sweeper(app: web.Application) -> AsyncIterator[None]:
    ctx = app[CTX]

    async def loop() -> None:
        while True:
            await asyncio.sleep(ctx.config.sweep_interval_s)
            try:
                await asyncio.to_thread(ctx.housekeeping)
                while ctx.pending_ejects:
                    result = ctx.command_sink(ctx.pending_ejects.pop(0))
                    if asyncio.iscoroutine(result):
                        await result
            except Exception:  # a failed sweep must not stop the next one; it is logged loudly
                log.exception("sweep failed")

    task = asyncio.create_task(loop())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _fleet_link(app: web.Application) -> AsyncIterator[None]:
    fleet = app[CTX].fleet
    assert fleet is not None
    await fleet.start()
    yield
    await fleet.stop()


async def _dispose(app: web.Application) -> None:
    app[CTX].engine.dispose()


# --- errors --------------------------------------------------------------------------------


@web.middleware
async def _errors(request: web.Request, handler: Callable) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return _error_response(e.status, e.reason.lower().replace(" ", "_"), e.text or e.reason)
    except CloudError as e:
        if e.status == INTERNAL_STATUS:
            log.exception("internal error on %s %s", request.method, request.path)
        return cloud_error_response(e)
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return _error_response(INTERNAL_STATUS, INTERNAL_CODE, "unexpected error; it was logged")


def cloud_error_response(e: CloudError) -> web.Response:
    """The JSON answer to ``e``, from its class's ``status`` and ``code`` alone (cloud.errors).

    The message is passed through for people, never read; a 500 (a bug) shows none of it.
    """
    if e.status == INTERNAL_STATUS:
        return _error_response(INTERNAL_STATUS, INTERNAL_CODE, "unexpected error; it was logged")
    return _error_response(e.status, e.code, str(e), e.http_headers())


def _error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    if message.startswith("404: ") or message.startswith("405: "):
        message = message[5:]
    return web.json_response({"error": code, "message": message}, status=status, headers=headers)


# --- request plumbing ----------------------------------------------------------------------


def _wrap(route: Route, fn: Callable) -> Callable:
    """Authenticate, validate the body, and call ``fn(request, user, body)``."""

    async def handler(request: web.Request) -> web.StreamResponse:
        ctx = request.app[CTX]
        user = None
        if route.auth:
            header = request.headers.get("Authorization", "")
            token = header[7:].strip() if header.lower().startswith("bearer ") else None
            if token is not None and not _PRINTABLE_ASCII.fullmatch(token):
                # tokens are URL-safe ASCII; other bytes (aiohttp keeps invalid UTF-8 as surrogates) can match none
                raise NotAuthenticated("malformed bearer token")
            user = await asyncio.to_thread(ctx.accounts.authenticate, token)
            if route.auth == "operator" and user.role != "operator":
                raise Forbidden("operators only")
        for name in INTEGER_PATH_PARAMS:
            if name in request.match_info and decimal(request.match_info[name]) is None:
                raise NotFound(f"{name} must be a number, got {request.match_info[name]!r}")
        body: Any = None
        if route.body is not None and route.handler != "webhook":
            body = parse_json_body(await request.read())
            problems = validate(body, route.body, "body")
            if problems:
                raise InvalidBody("; ".join(problems))
        return await fn(request, user, body)

    return handler


def client_address(
    request: web.Request, trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
) -> str:
    """The client's IP for throttling: the peer, or, behind configured proxies, from ``X-Forwarded-For``.

    Only a peer inside ``trusted`` (``cloud.trusted_proxies``) is believed. Its header is read
    from the right, skipping the trusted proxies' own hops; the first other address is the client.
    Anything to its left was written by the client and is never believed. An entry that is not
    an address ends the walk at the last hop a trusted proxy vouched for.
    """
    peer = request.remote or "unknown"
    try:
        hop = ipaddress.ip_address(peer)
    except ValueError:
        return peer
    if not any(hop in net for net in trusted):
        return str(hop)
    forwarded = ",".join(request.headers.getall("X-Forwarded-For", []))
    for entry in reversed([e.strip() for e in forwarded.split(",") if e.strip()]):
        try:
            addr = ipaddress.ip_address(entry)
        except ValueError:
            break
        hop = addr
        if not any(addr in net for net in trusted):
            break
    return str(hop)


_PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]{1,512}")
MAX_JSON_DEPTH = 32
"""Deepest nesting of a request body (the API's bodies are at most 3 deep)."""


def parse_json_body(raw: bytes) -> Any:
    """A request body as JSON, or a 400 ``bad_json``: never a 500, whatever the bytes.

    ``json.loads`` raises ``RecursionError`` on deep nesting, and keeps lone surrogates
    (``"\\ud800"``) that no database driver can encode; both are refused here, and nesting
    beyond ``MAX_JSON_DEPTH`` too, before ``validate`` (which recurses) sees the value.
    """
    try:
        value = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        reason = "nested too deeply" if isinstance(e, RecursionError) else str(e)[:200]
        raise BadJson(f"request body is not valid JSON: {reason}") from None
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict | list):
            if depth >= MAX_JSON_DEPTH:
                raise BadJson(f"request body is nested deeper than {MAX_JSON_DEPTH}")
            items = v.items() if isinstance(v, dict) else enumerate(v)
            for k, x in items:
                if isinstance(k, str):
                    stack.append((k, depth + 1))
                stack.append((x, depth + 1))
        elif isinstance(v, str) and not v.isascii():
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise BadJson("request body has a lone surrogate (not valid Unicode)") from None
    return value


def validate(value: Any, schema: dict[str, Any], where: str) -> list[str]:
    """Check ``value`` against the JSON-schema subset used in api_schema; returns problems."""
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        ok = {
            "object": isinstance(value, dict),
            "string": isinstance(value, str),
            "integer": isinstance(value, int) and not isinstance(value, bool),
            "boolean": isinstance(value, bool),
            "null": value is None,
            "array": isinstance(value, list),
            "number": isinstance(value, int | float) and not isinstance(value, bool),
        }
        if not any(ok.get(k, False) for k in kinds):
            return [f"{where} must be {' or '.join(kinds)}"]
    problems: list[str] = []
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                problems.append(f"{where}.{key} is required")
        for key, item in value.items():
            if key in props:
                problems += validate(item, props[key], f"{where}.{key}")
            elif schema.get("additionalProperties") is False:
                problems.append(f"{where}.{key} is not a known field")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            problems += validate(item, schema.get("items", {}), f"{where}[{i}]")
    elif isinstance(value, str):
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", 10**9):
            problems.append(
                f"{where} must have {schema.get('minLength', 0)}..{schema.get('maxLength')} characters"
            )
        if "pattern" in schema and not re.search(schema["pattern"], value):
            problems.append(f"{where} must match {schema['pattern']}")
        if "enum" in schema and value not in schema["enum"]:
            problems.append(f"{where} must be one of {schema['enum']}")
        if "\x00" in value:
            problems.append(f"{where} must not contain NUL characters")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{where} must be a finite number")
        elif value < schema.get("minimum", -(10**18)) or value > schema.get("maximum", 10**18):
            problems.append(f"{where} must be between {schema.get('minimum')} and {schema.get('maximum')}")
    return problems


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


def _user_json(u: User) -> dict[str, Any]:
    return {
        "id": u.id,
        "email": u.email,
        "name": u.name,
        "role": u.role,
        "has_card": u.has_card,
        "phone": u.phone,
    }


def _dispute_json(d: Dispute, for_renter: bool = False) -> dict[str, Any]:
    data = asdict(d)
    if for_renter:
        del data["resolved_by"]  # which operator decided is internal
    return data


def _date(request: web.Request, name: str) -> date:
    raw = request.query.get(name)
    if raw is None:
        raise BadRequest(f"query parameter {name} (YYYY-MM-DD) is required")
    try:
        return date.fromisoformat(raw)
    except ValueError as e:
        raise BadRequest(f"query parameter {name}={raw!r} is not a date YYYY-MM-DD") from e


class _Handlers(FleetHandlers, PublicHandlers, RenterHandlers):
    """One coroutine per route of api_schema.ROUTES, named by its ``handler``."""

    def __init__(self, ctx: CloudContext) -> None:
        self.ctx = ctx

    def client_ip(self, request: web.Request) -> str:
        return client_address(request, self.ctx.trusted_proxies)

    def user_json(self, user: User) -> dict[str, Any]:
        return _user_json(user)

    async def health(self, request: web.Request, user: None, body: None) -> web.Response:
        revision = await asyncio.to_thread(schema_revision, self.ctx.engine)
        return _json({"ok": True, "schema": revision})

    async def openapi(self, request: web.Request, user: None, body: None) -> web.Response:
        return _json(openapi())

    async def register(self, request: web.Request, user: None, body: dict) -> web.Response:
        ip = client_address(request, self.ctx.trusted_proxies)
        u = await asyncio.to_thread(
            self.ctx.accounts.register, body["email"], body["password"], body.get("name"), ip=ip
        )
        return _json(_user_json(u), 201)

    async def login(self, request: web.Request, user: None, body: dict) -> web.Response:
        ip = client_address(request, self.ctx.trusted_proxies)
        s = await asyncio.to_thread(self.ctx.accounts.login, body["email"], body["password"], ip)
        return _json({"token": s.token, "expires_at": s.expires_at, "user": _user_json(s.user)})

    async def logout(self, request: web.Request, user: User, body: None) -> web.Response:
        token = request.headers["Authorization"][7:].strip()
        await asyncio.to_thread(self.ctx.accounts.logout, token)
        return web.Response(status=204)

    async def me(self, request: web.Request, user: User, body: None) -> web.Response:
        return _json(_user_json(user))

    async def delete_me(self, request: web.Request, user: User, body: None) -> web.Response:
        await asyncio.to_thread(self.ctx.accounts.delete, user.id)
        await self._publish_revocations()
        return web.Response(status=204)

    async def set_card(self, request: web.Request, user: User, body: dict) -> web.Response:
        u = await asyncio.to_thread(self.ctx.accounts.set_card, user.id, body["card_token"])
        await self._publish_revocations()
        return _json(_user_json(u))

    async def _publish_revocations(self) -> None:
        """Passes revoked by a card change or an account deletion reach every cabinet now (issue 11.1)."""
        if self.ctx.fleet is not None:
            await self.ctx.fleet.publish_revocations()

    async def my_rentals(self, request: web.Request, user: User, body: None) -> web.Response:
        rows = await asyncio.to_thread(self.ctx.rentals.rentals_of, user.id)
        return _json([self._public_rental(r) for r in rows])

    async def my_receipt(self, request: web.Request, user: User, body: None) -> web.Response:
        rental_id = request.match_info["rental_id"]
        r = await asyncio.to_thread(self._rental_or_404, rental_id)
        if r["user_id"] != user.id:
            raise NotFound(f"no rental {rental_id} in your account")
        return _json(await asyncio.to_thread(self.ctx.rentals.receipt, rental_id))

    async def rent(self, request: web.Request, user: User, body: dict) -> web.Response:
        start = await asyncio.to_thread(self.ctx.rentals.start_app_rental, user.id, body["cabinet_id"])
        if start.command is None:  # the renter confirms the hold in the provider's app first
            return _json(
                {
                    "rental_id": start.rental_id,
                    "status": "awaiting_confirmation",
                    "provider": start.provider,
                    "hold_amount": start.hold_amount,
                    "currency": start.currency,
                    "client_action": dict(start.client_action or {}),
                    "confirm_within_s": self.ctx.config.confirm_timeout_s,
                },
                202,
            )
        await self._send(start.command)
        return _json(
            {
                "rental_id": start.rental_id,
                "status": "ejecting",
                "provider": start.provider,
                "hold_amount": start.hold_amount,
                "currency": start.currency,
                "command": asdict(start.command),
            },
            201,
        )

    async def _send(self, command: EjectCommand) -> None:
        result = self.ctx.command_sink(command)
        if asyncio.iscoroutine(result):
            await result

    async def webhook(self, request: web.Request, user: None, body: None) -> web.Response:
        if request.match_info["provider"] != "sandbox" or self.ctx.sandbox is None:
            raise NotFound(
                f"no payment provider {request.match_info['provider']!r} signing webhooks this way"
            )
        raw = await request.read()
        outcome = await asyncio.to_thread(self.ctx.inbox.handle, raw, request.headers.get(SIGNATURE_HEADER))
        return _json(asdict(outcome))

    async def provider_notify(self, request: web.Request, user: None, body: None) -> web.StreamResponse:
        """A real provider's notification: verified by its adapter, applied once; answered the way
        the provider expects an acknowledgement (a confirmed hold's eject is sent from here)."""
        name = request.match_info["provider"]
        raw = await request.read()
        if len(raw) > 256 * 1024:
            raise BadRequest("notification too large")
        try:
            outcome = await asyncio.to_thread(self.ctx.on_notification, name, dict(request.headers), raw)
        except NotificationIgnored as e:  # verified, nothing to do: 200 so it is not sent again
            return _json({"ignored": True, "reason": str(e)[:200]})
        if outcome.command is not None:
            await self._send(outcome.command)
        ack = getattr(self.ctx.providers[name], "notification_ack", None)
        if callable(ack):
            status, text, content_type = ack()
            return web.Response(status=status, text=text, content_type=content_type)
        return _json(
            {"event_id": outcome.event_id, "duplicate": outcome.duplicate, "applied": outcome.applied}
        )

    async def my_debts(self, request: web.Request, user: User, body: None) -> web.Response:
        return _json(await asyncio.to_thread(self.ctx.rentals.debts, user.id))

    async def list_debts(self, request: web.Request, user: User, body: None) -> web.Response:
        return _json(await asyncio.to_thread(self.ctx.rentals.debts))

    async def add_payment_method(self, request: web.Request, user: User, body: dict) -> web.Response:
        if body["provider"] not in self.ctx.providers:
            raise BadRequest(
                f"provider {body['provider']!r} is not offered here ({', '.join(self.ctx.providers)})"
            )
        method = await asyncio.to_thread(
            self.ctx.accounts.add_payment_method,
            user.id,
            body["provider"],
            body["token"],
            body.get("label", ""),
        )
        return _json(method, 201)

    async def my_payment_methods(self, request: web.Request, user: User, body: None) -> web.Response:
        return _json(await asyncio.to_thread(self.ctx.accounts.payment_methods, user.id))

    async def delete_payment_method(self, request: web.Request, user: User, body: None) -> web.Response:
        method_id = int(request.match_info["method_id"])
        await asyncio.to_thread(self.ctx.accounts.delete_payment_method, user.id, method_id)
        return _json({"deleted": method_id})

    async def list_merchants(self, request: web.Request, user: User, body: None) -> web.Response:
        return _json([asdict(m) for m in await asyncio.to_thread(self.ctx.catalog.merchants)])

    async def create_merchant(self, request: web.Request, user: User, body: dict) -> web.Response:
        m = await asyncio.to_thread(
            self.ctx.catalog.create_merchant,
            body["name"],
            body["revenue_share_bp"],
            body["currency"],
            body.get("timezone", "UTC"),
        )
        return _json(asdict(m), 201)

    async def update_merchant(self, request: web.Request, user: User, body: dict) -> web.Response:
        mid = int(request.match_info["merchant_id"])
        m = await asyncio.to_thread(self.ctx.catalog.set_revenue_share, mid, body["revenue_share_bp"])
        return _json(asdict(m))

    async def set_merchant_payments(self, request: web.Request, user: User, body: dict) -> web.Response:
        mid = int(request.match_info["merchant_id"])
        unknown = [p for p in body["providers"] if p not in self.ctx.providers]
        if unknown:
            raise BadRequest(
                f"not configured here: {', '.join(unknown)} (configured: {', '.join(self.ctx.providers)})"
            )

        def save() -> int:
            with self.ctx.engine.begin() as conn:
                return conn.execute(
                    update(merchants)
                    .where(merchants.c.id == mid)
                    .values(providers=",".join(body["providers"]), payout_account=body.get("payout_account"))
                ).rowcount

        if not await asyncio.to_thread(save):
            raise NotFound(f"no merchant {mid}")
        await asyncio.to_thread(
            self.ctx.audit, user.id, "merchant_payments", f"merchant:{mid}",
            {"providers": body["providers"], "payout_account": body.get("payout_account")},
        )  # fmt: skip
        return _json(
            {"merchant_id": mid, "providers": body["providers"], "payout_account": body.get("payout_account")}
        )

    async def pay_merchant(self, request: web.Request, user: User, body: dict) -> web.Response:
        mid = int(request.match_info["merchant_id"])
        out = await asyncio.to_thread(
            pay_merchant, self.ctx.engine, self.ctx.providers, mid, body["amount"], body["currency"],
            body["reference"], self.ctx.clock, body.get("provider"),
        )  # fmt: skip
        await asyncio.to_thread(self.ctx.audit, user.id, "merchant_payout", f"merchant:{mid}", out)
        return _json(out, 201)

    async def list_payouts(self, request: web.Request, user: User, body: None) -> web.Response:
        mid = int(request.match_info["merchant_id"])
        return _json(await asyncio.to_thread(payouts_of, self.ctx.engine, mid))

    async def create_venue(self, request: web.Request, user: User, body: dict) -> web.Response:
        mid = int(request.match_info["merchant_id"])
        venue = await asyncio.to_thread(
            self.ctx.places.create_venue, mid, body["name"], body.get("address"),
            body.get("lat"), body.get("lon"), body.get("opening_hours"),
        )  # fmt: skip
        return _json(venue, 201)

    async def settlement(self, request: web.Request, user: User, body: None) -> web.Response:
        mid = int(request.match_info["merchant_id"])
        fmt = request.query.get("format", "json")
        if fmt not in ("json", "csv"):
            raise BadRequest(f"format must be json or csv, not {fmt!r}")
        report = await asyncio.to_thread(
            settlement, self.ctx.engine, mid, _date(request, "from"), _date(request, "to")
        )
        if fmt == "csv":
            return web.Response(text=report.to_csv(), content_type="text/csv")
        return _json(report.to_json_dict())

    async def create_tariff(self, request: web.Request, user: User, body: dict) -> web.Response:
        tariff = Tariff.from_dict(body["tariff"])
        tid = await asyncio.to_thread(
            self.ctx.catalog.create_tariff,
            body["name"],
            tariff,
            body.get("merchant_id"),
            bool(body.get("default")),
        )
        return _json({"id": tid, "tariff": asdict(tariff)}, 201)

    async def create_cabinet(self, request: web.Request, user: User, body: dict) -> web.Response:
        await asyncio.to_thread(
            self.ctx.catalog.add_cabinet,
            body["id"],
            body.get("venue_id"),
            body.get("tariff_id"),
            body.get("name"),
        )
        return _json(
            {"id": body["id"], "venue_id": body.get("venue_id"), "tariff_id": body.get("tariff_id")}, 201
        )

    async def get_rental(self, request: web.Request, user: User, body: None) -> web.Response:
        return _json(await asyncio.to_thread(self._rental_or_404, request.match_info["rental_id"]))

    async def refund(self, request: web.Request, user: User, body: dict) -> web.Response:
        rental_id = request.match_info["rental_id"]
        await asyncio.to_thread(self._rental_or_404, rental_id)
        total = await asyncio.to_thread(
            self.ctx.rentals.billing.refund, rental_id, body["amount"], body["reason"], user.id
        )
        return _json({"rental_id": rental_id, "refunded": total})

    async def open_dispute(self, request: web.Request, user: User, body: dict) -> web.Response:
        d = await asyncio.to_thread(
            self.ctx.disputes.open,
            user.id,
            request.match_info["rental_id"],
            body["reason"],
            body.get("amount_claimed"),
        )
        return _json(_dispute_json(d, for_renter=True), 201)

    async def my_disputes(self, request: web.Request, user: User, body: None) -> web.Response:
        rows = await asyncio.to_thread(self.ctx.disputes.of_user, user.id)
        return _json([_dispute_json(d, for_renter=True) for d in rows])

    async def list_disputes(self, request: web.Request, user: User, body: None) -> web.Response:
        raw_user = request.query.get("user_id")
        if raw_user is not None and decimal(raw_user) is None:
            raise BadRequest(f"query parameter user_id={raw_user!r} is not a number")
        rows = await asyncio.to_thread(
            self.ctx.disputes.find,
            request.query.get("status", "open"),
            int(raw_user) if raw_user is not None else None,
        )
        return _json([_dispute_json(d) for d in rows])

    async def resolve_dispute(self, request: web.Request, user: User, body: dict) -> web.Response:
        d = await asyncio.to_thread(
            self.ctx.disputes.resolve,
            int(request.match_info["dispute_id"]),
            body["decision"],
            body["note"],
            user.id,
            body.get("amount"),
        )
        return _json(_dispute_json(d))

    async def money_check(self, request: web.Request, user: User, body: None) -> web.Response:
        problems = await asyncio.to_thread(money.check, self.ctx.engine)
        return _json({"ok": not problems, "problems": [str(p) for p in problems]})

    async def sweep(self, request: web.Request, user: User, body: None) -> web.Response:
        return _json(await asyncio.to_thread(self.ctx.housekeeping))

    def _rental_or_404(self, rental_id: str) -> dict[str, Any]:
        try:
            return self.ctx.rentals.rental(rental_id)
        except RentalError as e:
            raise NotFound(str(e)) from e

    @staticmethod
    def _public_rental(r: dict[str, Any]) -> dict[str, Any]:
        keys = ("id", "status", "cabinet_id", "end_cabinet_id", "battery_sn", "created_at", "start_wall", "end_wall",
                "duration_s", "fee", "captured", "refunded", "currency", "payment_status", "source")  # fmt: skip
        return {k: r[k] for k in keys}
