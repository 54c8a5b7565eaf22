"""Technician API: log in (or first set-up), and the audited actions on slots and batteries.

Every action is written to the ledger as ``tech_action(technician, action, detail)`` before
it is carried out (the unlock's audit record is written by the controller itself). Every POST
but login/setup needs the session's CSRF token in the ``X-CSRF-Token`` header.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import asdict
from typing import Any

from aiohttp import web

from cabinet.ledger import LedgerRuleError

from . import diagnostics, eventlog
from .auth import CredentialError, Session, csrf_ok

log = logging.getLogger(__name__)
MAX_REASON = 300


def _ui(request: web.Request) -> Any:
    from .app import ui_of

    return ui_of(request)


def _err(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "send a JSON object"}), content_type="application/json"
        ) from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "send a JSON object"}), content_type="application/json"
        )
    return body


def technician(request: web.Request, *, post: bool = True) -> Session:
    """The logged-in technician; a POST also needs the session's CSRF token."""
    s = _ui(request).session_of(request)
    if s is None:
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": "not logged in, or the session expired"}),
            content_type="application/json",
        )
    if post and not csrf_ok(s, request.headers.get("X-CSRF-Token")):
        raise web.HTTPForbidden(
            text=json.dumps({"error": "missing or wrong CSRF token"}), content_type="application/json"
        )
    return s


def _reason(body: dict[str, Any]) -> str:
    reason = str(body.get("reason") or "").strip()
    if not reason:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "a reason is required"}), content_type="application/json"
        )
    return reason[:MAX_REASON]


def _ready(cab: Any) -> None:
    if cab.controller is None or cab.ledger is None:
        raise web.HTTPServiceUnavailable(
            text=json.dumps({"error": f"the ledger is unusable: {cab.ledger_problem}"}),
            content_type="application/json",
        )


def _slot(request: web.Request, cab: Any) -> int:
    try:
        n = int(request.match_info["slot"])
    except ValueError:
        n = 0
    if not 1 <= n <= cab.config["cabinet.slots"]:
        raise web.HTTPNotFound(
            text=json.dumps({"error": f"no slot {request.match_info['slot']!r} in this cabinet"}),
            content_type="application/json",
        )
    return n


async def audit(cab: Any, s: Session, action: str, detail: str) -> None:
    if cab.ledger is not None:
        await cab.ledger.record("tech_action", technician=s.user, action=action, detail=detail[:2000])


def _login_response(ui: Any, user: str, status: dict[str, Any]) -> web.Response:
    from .app import COOKIE

    token, s = ui.sessions.create(user)
    resp = web.json_response({**status, "user": user, "csrf": s.csrf})
    resp.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/", max_age=int(ui.sessions.max_s))
    return resp


# ---- log in, set up, log out ----------------------------------------------------------


async def login(request: web.Request) -> web.Response:
    ui = _ui(request)
    body = await _body(request)
    user, password = str(body.get("user") or "").strip(), str(body.get("password") or "")
    keys = (f"user:{user.lower()}", f"ip:{request.remote}")
    wait = ui.throttle.wait_s(*keys)
    if wait > 0:
        return web.json_response(
            {"error": f"too many failed attempts: wait {wait:.0f} s", "retry_after_s": wait},
            status=429,
            headers={"Retry-After": str(int(wait) + 1)},
        )
    ok = await asyncio.to_thread(ui.credentials.check, user, password) if user and password else False
    if not ok:
        ui.throttle.failed(*keys)
        if ui.throttle.wait_s(*keys) > 0 and ui.cab.ledger is not None:
            await ui.cab.ledger.record(
                "security_event",
                kind="tech_login_throttled",
                detail=f"failed logins for user {user[:40]!r} from {request.remote}",
            )
        return _err(401, "wrong user name or password")
    ui.throttle.succeeded(*keys)
    if ui.cab.ledger is not None:
        await ui.cab.ledger.record(
            "tech_action", technician=user, action="login", detail=f"from {request.remote}"
        )
    return _login_response(ui, user, {"ok": True})


async def setup(request: web.Request) -> web.Response:
    """First technician: the one-time setup code from the log sets user name and password."""
    ui = _ui(request)
    body = await _body(request)
    keys = ("setup", f"ip:{request.remote}")
    wait = ui.throttle.wait_s(*keys)
    if wait > 0:
        return web.json_response(
            {"error": f"too many failed attempts: wait {wait:.0f} s", "retry_after_s": wait},
            status=429,
            headers={"Retry-After": str(int(wait) + 1)},
        )
    if ui.setup is not None and ui.credentials.exists():
        ui.setup.use()  # a password was set meanwhile (cabinet tech set-password): the code is void
    if ui.setup is None or ui.setup.code is None:
        return _err(409, "a technician password is already set: log in, or use 'cabinet tech set-password'")
    if not ui.setup.matches(str(body.get("code") or "")):
        ui.throttle.failed(*keys)
        return _err(
            401, "wrong setup code (it is in the cabinet's log: journalctl -u cabinet | grep 'setup code')"
        )
    user, password = str(body.get("user") or "").strip(), str(body.get("password") or "")
    try:
        await asyncio.to_thread(ui.credentials.set_password, user, password)
    except CredentialError as e:
        return _err(400, str(e))
    ui.setup.use()
    ui.throttle.succeeded(*keys)
    log.warning("technician %s set the first password with the setup code; the code is no longer valid", user)
    if ui.cab.ledger is not None:
        await ui.cab.ledger.record(
            "tech_action", technician=user, action="setup", detail="first password set"
        )
    return _login_response(ui, user, {"ok": True})


async def logout(request: web.Request) -> web.Response:
    from .app import COOKIE

    s = technician(request)
    _ui(request).sessions.end(request.cookies.get(COOKIE))
    await audit(_ui(request).cab, s, "logout", "")
    resp = web.json_response({"ok": True})
    resp.del_cookie(COOKIE, path="/")
    return resp


async def whoami(request: web.Request) -> web.Response:
    ui = _ui(request)
    s = ui.session_of(request)
    return web.json_response(
        {
            "user": s.user if s else None,
            "csrf": s.csrf if s else None,
            "needs_setup": bool(ui.setup and ui.setup.code),
        }
    )


# ---- actions --------------------------------------------------------------------------


async def unlock(request: web.Request) -> web.Response:
    s = technician(request)
    cab = _ui(request).cab
    _ready(cab)
    slot, reason = _slot(request, cab), _reason(await _body(request))
    result = await cab.controller.unlock(slot, reason, s.user)  # records tech_action itself
    return web.json_response({"ok": result != "jammed", "slot": slot, "result": result})


async def quarantine(request: web.Request) -> web.Response:
    s = technician(request)
    cab = _ui(request).cab
    _ready(cab)
    slot, reason = _slot(request, cab), _reason(await _body(request))
    st = await cab.ledger.slot(slot)
    if st is not None and st.quarantined:
        return _err(409, f"slot {slot} is already quarantined ({st.quarantine_reason})")
    await audit(cab, s, "quarantine_slot", f"slot {slot}: {reason}")
    try:
        await cab.controller.quarantine_slot(slot, reason, s.user)
    except LedgerRuleError as e:
        return _err(409, f"slot {slot}: {e}")
    return web.json_response({"ok": True, "slot": slot, "result": "quarantined"})


async def release(request: web.Request) -> web.Response:
    s = technician(request)
    cab = _ui(request).cab
    _ready(cab)
    slot, reason = _slot(request, cab), _reason(await _body(request))
    st = await cab.ledger.slot(slot)
    if st is None or not (st.quarantined or st.fault_kind):
        return _err(409, f"slot {slot} is neither quarantined nor faulty: nothing to release")
    await audit(cab, s, "release_slot", f"slot {slot}: {reason}")
    try:
        await cab.controller.release_slot(slot, reason, s.user)
    except LedgerRuleError as e:
        return _err(409, f"slot {slot}: {e}")
    return web.json_response({"ok": True, "slot": slot, "result": "released"})


async def battery_removed(request: web.Request) -> web.Response:
    """A battery taken away for repair: recorded as ``battery_gone`` (reason starts with 'repair')."""
    s = technician(request)
    cab = _ui(request).cab
    _ready(cab)
    sn, reason = request.match_info["sn"], _reason(await _body(request))
    b = await cab.ledger.battery(sn)
    if b is None:
        return _err(404, f"battery {sn!r} is not known to this cabinet")
    if b.place == "gone":
        return _err(409, f"battery {sn} is already recorded as gone ({b.gone_reason})")
    here = [o.slot for o in cab.controller.observed.values() if o.has_battery and o.sn == sn]
    if here:
        return _err(
            409,
            f"battery {sn} is still in slot {here[0]}: unlock the slot and take it out "
            "(the unlock records it as removed)",
        )
    await audit(cab, s, "battery_removed", f"battery {sn}: {reason}")
    try:
        await cab.ledger.record("battery_gone", sn=sn, reason=f"repair: {reason}"[:500])
    except LedgerRuleError as e:
        return _err(409, f"battery {sn}: {e}")
    return web.json_response({"ok": True, "sn": sn, "result": "removed for repair"})


async def self_test(request: web.Request) -> web.Response:
    s = technician(request)
    cab = _ui(request).cab
    checks = await diagnostics.self_test(cab)
    ok = all(c.ok for c in checks)
    await audit(
        cab,
        s,
        "self_test",
        ("passed: " if ok else "FAILED: ")
        + "; ".join(f"{c.name} {'ok' if c.ok else 'FAIL'}" for c in checks),
    )
    return web.json_response({"ok": ok, "checks": [asdict(c) for c in checks]})


async def diagnostics_bundle(request: web.Request) -> web.Response:
    s = technician(request)
    ui = _ui(request)
    await audit(ui.cab, s, "diagnostics", "diagnostics bundle downloaded")
    name, data = await diagnostics.bundle(ui.cab, ui.ring, s.user)
    return web.Response(
        body=data,
        content_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


async def events(request: web.Request) -> web.Response:
    """Filtered events as JSON (newest first) or an export file (CSV / JSON lines, oldest first)."""
    technician(request, post=False)
    cab = _ui(request).cab
    if cab.ledger is None:
        return _err(503, f"the ledger is unusable: {cab.ledger_problem}")
    fmt = request.query.get("format", "json")
    try:
        cap = 1000 if fmt == "json" else 1_000_000
        f = eventlog.EventFilter.from_query(
            request.query, max_limit=cap, default_limit=200 if fmt == "json" else cap
        )
        rows = await asyncio.to_thread(eventlog.query, diagnostics.ledger_path(cab), f, fmt == "json")
        if fmt == "json":
            return web.json_response({"events": [eventlog.event_json(e) for e in rows]})
        text = eventlog.export(rows, fmt)
    except eventlog.FilterError as e:
        return _err(400, str(e))
    ctype = "text/csv" if fmt == "csv" else "application/x-ndjson"
    name = f"events-{cab.config['cabinet.id']}.{fmt}"
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
