"""Technician API: log in (or first set-up), and the audited actions on slots and batteries.

Every action is one :func:`tech_action`: session and CSRF token (``X-CSRF-Token`` on every POST
but login/setup), readiness, slot or battery and reason, the action's own checks, then its
``tech_action(technician, action, detail)`` record in the ledger, then the act. The unlock's
record is written by the controller itself, inside its rent lock and before the pulse.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Literal

from aiohttp import web

from cabinet.ledger import LedgerRuleError

from . import diagnostics, eventlog
from .auth import CredentialError, Session
from .common import COOKIE, MAX_REASON, Handler, json_error, json_object, refuse, slot_number
from .context import WebContext, context_of, session_of, technician
from .port import CabinetPort

log = logging.getLogger(__name__)


def _ready(cab: CabinetPort) -> None:
    if not cab.can_act:
        raise refuse(web.HTTPServiceUnavailable, f"the ledger is unusable: {cab.ledger_problem}")


def _reason(body: dict[str, object]) -> str:
    reason = str(body.get("reason") or "").strip()
    if not reason:
        raise refuse(web.HTTPBadRequest, "a reason is required")
    return reason[:MAX_REASON]


def _slot(request: web.Request, cab: CabinetPort) -> int:
    n = slot_number(request.match_info["slot"], cab.settings.slots)
    if n is None:
        raise refuse(web.HTTPNotFound, f"no slot {request.match_info['slot']!r} in this cabinet")
    return n


# ---- the shape of every technician action ----------------------------------------------


@dataclass(frozen=True)
class Action:
    """A technician action's request, checked: who, on what, and why."""

    request: web.Request
    ui: WebContext
    session: Session
    slot: int = 0  # the slot acted on (0: the action names none)
    sn: str = ""  # the battery acted on ("": the action names none)
    reason: str = ""  # the technician's reason ("": the action asks for none)

    @property
    def cabinet(self) -> CabinetPort:
        return self.ui.cabinet


@dataclass(frozen=True)
class Plan:
    """What an action will do once its checks passed: ``audit`` is its record's detail."""

    audit: str
    act: Callable[[], Awaitable[web.StreamResponse]]


Prepare = Callable[[Action], Awaitable[web.StreamResponse | Plan]]


def tech_action(
    name: str,
    *,
    target: Literal["slot", "battery"] | None = None,
    reason: bool = False,
    ready: bool = True,
    audited_by_act: bool = False,
) -> Callable[[Prepare], Handler]:
    """Make a technician action's handler from its ``prepare`` step.

    In this order: the session and its CSRF token (401/403); with ``ready``, the ledger and the
    controller (503); the slot (404) or battery named in the URL; with ``reason``, the reason
    from the JSON body (400). Then ``prepare`` runs the action's own checks, reading only: it
    answers a refusal (nothing is recorded) or a :class:`Plan`. The plan's ``tech_action``
    record (``name``, technician, detail) is written, and only then its ``act`` runs; a ledger
    rule the act breaks is a 409. With ``audited_by_act`` the act writes that same record
    itself before it acts (``CabinetPort.unlock``), so it is not written twice.
    """

    def wrap(prepare: Prepare) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            s = technician(request)
            ui = context_of(request)
            cab = ui.cabinet
            if ready:
                _ready(cab)
            slot = _slot(request, cab) if target == "slot" else 0
            sn = request.match_info["sn"] if target == "battery" else ""
            why = _reason(await json_object(request)) if reason else ""
            plan = await prepare(Action(request, ui, s, slot, sn, why))
            if not isinstance(plan, Plan):
                return plan  # refused by the action's checks: nothing recorded, nothing done
            if not audited_by_act:
                await cab.audit(s.user, name, plan.audit)
            try:
                return await plan.act()
            except LedgerRuleError as e:
                if target is None:
                    raise
                what = f"slot {slot}" if target == "slot" else f"battery {sn}"
                return json_error(409, f"{what}: {e}")

        handler.__name__ = handler.__qualname__ = prepare.__name__
        handler.__doc__ = prepare.__doc__
        return handler

    return wrap


def _login_response(ui: WebContext, user: str, status: dict[str, object]) -> web.Response:
    token, s = ui.sessions.create(user)
    resp = web.json_response({**status, "user": user, "csrf": s.csrf})
    resp.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/", max_age=int(ui.sessions.max_s))
    return resp


def _too_many(wait: float) -> web.Response:
    return web.json_response(
        {"error": f"too many failed attempts: wait {wait:.0f} s", "retry_after_s": wait},
        status=429,
        headers={"Retry-After": str(int(wait) + 1)},
    )


# ---- log in, set up, log out ----------------------------------------------------------


async def login(request: web.Request) -> web.Response:
    ui = context_of(request)
    body = await json_object(request)
    user, password = str(body.get("user") or "").strip(), str(body.get("password") or "")
    keys = (f"user:{user.lower()}", f"ip:{request.remote}")
    wait = ui.throttle.wait_s(*keys)
    if wait > 0:
        return _too_many(wait)
    ok = await asyncio.to_thread(ui.credentials.check, user, password) if user and password else False
    if not ok:
        ui.throttle.failed(*keys)
        if ui.throttle.wait_s(*keys) > 0:
            await ui.cabinet.security_event(
                "tech_login_throttled", f"failed logins for user {user[:40]!r} from {request.remote}"
            )
        return json_error(401, "wrong user name or password")
    ui.throttle.succeeded(*keys)
    await ui.cabinet.audit(user, "login", f"from {request.remote}")
    return _login_response(ui, user, {"ok": True})


async def setup(request: web.Request) -> web.Response:
    """First technician: the one-time setup code from the log sets user name and password."""
    ui = context_of(request)
    body = await json_object(request)
    keys = ("setup", f"ip:{request.remote}")
    wait = ui.throttle.wait_s(*keys)
    if wait > 0:
        return _too_many(wait)
    if ui.setup is not None and ui.credentials.exists():
        ui.setup.use()  # a password was set meanwhile (cabinet tech set-password): the code is void
    if ui.setup is None or ui.setup.code is None:
        return json_error(
            409, "a technician password is already set: log in, or use 'cabinet tech set-password'"
        )
    if not ui.setup.matches(str(body.get("code") or "")):
        ui.throttle.failed(*keys)
        return json_error(
            401, "wrong setup code (it is in the cabinet's log: journalctl -u cabinet | grep 'setup code')"
        )
    user, password = str(body.get("user") or "").strip(), str(body.get("password") or "")
    try:
        await asyncio.to_thread(ui.credentials.set_password, user, password)
    except CredentialError as e:
        return json_error(400, str(e))
    ui.setup.use()
    ui.throttle.succeeded(*keys)
    log.warning("technician %s set the first password with the setup code; the code is no longer valid", user)
    await ui.cabinet.audit(user, "setup", "first password set")
    return _login_response(ui, user, {"ok": True})


@tech_action("logout", ready=False)
async def logout(a: Action) -> Plan:
    async def act() -> web.Response:
        a.ui.sessions.end(a.request.cookies.get(COOKIE))
        resp = web.json_response({"ok": True})
        resp.del_cookie(COOKIE, path="/")
        return resp

    return Plan("", act)


async def whoami(request: web.Request) -> web.Response:
    ui = context_of(request)
    s = session_of(request)
    return web.json_response(
        {
            "user": s.user if s else None,
            "csrf": s.csrf if s else None,
            "needs_setup": bool(ui.setup and ui.setup.code),
        }
    )


# ---- actions --------------------------------------------------------------------------


@tech_action("unlock", target="slot", reason=True, audited_by_act=True)
async def unlock(a: Action) -> Plan:
    async def act() -> web.Response:
        result = await a.cabinet.unlock(a.slot, a.reason, a.session.user)  # records tech_action first
        return web.json_response({"ok": result != "jammed", "slot": a.slot, "result": result})

    return Plan(f"slot {a.slot}: {a.reason}", act)


@tech_action("quarantine_slot", target="slot", reason=True)
async def quarantine(a: Action) -> web.Response | Plan:
    st = await a.cabinet.slot(a.slot)
    if st is not None and st.quarantined:
        return json_error(409, f"slot {a.slot} is already quarantined ({st.quarantine_reason})")

    async def act() -> web.Response:
        await a.cabinet.quarantine_slot(a.slot, a.reason, a.session.user)
        return web.json_response({"ok": True, "slot": a.slot, "result": "quarantined"})

    return Plan(f"slot {a.slot}: {a.reason}", act)


@tech_action("release_slot", target="slot", reason=True)
async def release(a: Action) -> web.Response | Plan:
    st = await a.cabinet.slot(a.slot)
    if st is None or not (st.quarantined or st.fault_kind):
        return json_error(409, f"slot {a.slot} is neither quarantined nor faulty: nothing to release")

    async def act() -> web.Response:
        await a.cabinet.release_slot(a.slot, a.reason, a.session.user)
        return web.json_response({"ok": True, "slot": a.slot, "result": "released"})

    return Plan(f"slot {a.slot}: {a.reason}", act)


@tech_action("battery_removed", target="battery", reason=True)
async def battery_removed(a: Action) -> web.Response | Plan:
    """A battery taken away for repair: recorded as ``battery_gone`` (reason starts with 'repair')."""
    sn = a.sn
    b = await a.cabinet.battery(sn)
    if b is None:
        return json_error(404, f"battery {sn!r} is not known to this cabinet")
    if b.place == "gone":
        return json_error(409, f"battery {sn} is already recorded as gone ({b.gone_reason})")
    here = [o.slot for o in a.cabinet.observed().values() if o.has_battery and o.sn == sn]
    if here:
        return json_error(
            409,
            f"battery {sn} is still in slot {here[0]}: unlock the slot and take it out "
            "(the unlock records it as removed)",
        )

    async def act() -> web.Response:
        await a.cabinet.battery_removed_for_repair(sn, a.reason)
        return web.json_response({"ok": True, "sn": sn, "result": "removed for repair"})

    return Plan(f"battery {sn}: {a.reason}", act)


@tech_action("self_test", ready=False)
async def self_test(a: Action) -> Plan:
    """Run the self-test (it reads only: nothing pulsed, nothing written); its result is the record."""
    checks = await diagnostics.self_test(a.cabinet)
    ok = all(c.ok for c in checks)

    async def act() -> web.Response:
        return web.json_response({"ok": ok, "checks": [asdict(c) for c in checks]})

    detail = ("passed: " if ok else "FAILED: ") + "; ".join(
        f"{c.name} {'ok' if c.ok else 'FAIL'}" for c in checks
    )
    return Plan(detail, act)


@tech_action("diagnostics", ready=False)
async def diagnostics_bundle(a: Action) -> Plan:
    async def act() -> web.Response:
        name, data = await diagnostics.bundle(a.cabinet, a.ui.ring, a.session.user)
        return web.Response(
            body=data,
            content_type="application/gzip",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    return Plan("diagnostics bundle downloaded", act)


async def events(request: web.Request) -> web.Response:
    """Filtered events as JSON (newest first) or an export file (CSV / JSON lines, oldest first)."""
    technician(request, post=False)
    cab = context_of(request).cabinet
    if not cab.has_ledger:
        return json_error(503, f"the ledger is unusable: {cab.ledger_problem}")
    fmt = request.query.get("format", "json")
    try:
        cap = 1000 if fmt == "json" else 1_000_000
        f = eventlog.EventFilter.from_query(
            request.query, max_limit=cap, default_limit=200 if fmt == "json" else cap
        )
        rows = await asyncio.to_thread(eventlog.query, cab.ledger_path, f, fmt == "json")
        if fmt == "json":
            return web.json_response({"events": [eventlog.event_json(e) for e in rows]})
        text = eventlog.export(rows, fmt)
    except eventlog.FilterError as e:
        return json_error(400, str(e))
    ctype = "text/csv" if fmt == "csv" else "application/x-ndjson"
    name = f"events-{cab.settings.cabinet_id}.{fmt}"
    return web.Response(
        text=text,
        content_type=ctype,
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/api/tech/login", login)
    r.add_post("/api/tech/setup", setup)
    r.add_post("/api/tech/logout", logout)
    r.add_get("/api/tech/me", whoami)
    r.add_post("/api/tech/slots/{slot}/unlock", unlock)
    r.add_post("/api/tech/slots/{slot}/quarantine", quarantine)
    r.add_post("/api/tech/slots/{slot}/release", release)
    r.add_post("/api/tech/batteries/{sn}/removed", battery_removed)
    r.add_post("/api/tech/selftest", self_test)
    r.add_post("/api/tech/diagnostics", diagnostics_bundle)
    r.add_get("/api/tech/events", events)
