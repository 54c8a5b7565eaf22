"""The technician's pages, rendered on the server (tech.js adds live updates and the actions)."""

from __future__ import annotations

import asyncio
import html
import string
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from cabinet.ledger import Event

from . import charts, eventlog
from .auth import Session
from .common import TEMPLATES, is_local, slot_number
from .context import context_of, session_of
from .port import CabinetPort
from .state import risk_of, slots_view

e = html.escape
STATE_TEXT = {
    "unknown": "Board not answering",
    "fault": "Fault",
    "quarantined": "Quarantined",
    "checking": "Checking",
    "charging": "Charging",
    "ready": "Ready",
    "low": "Low charge",
    "empty": "Empty",
}
#: Event types that make a slot's or battery's history (not every scan-level detail).
HISTORY_TYPES = (
    "rental_started",
    "rental_aborted",
    "battery_returned",
    "battery_seen",
    "battery_removed_unexpected",
    "battery_quarantined",
    "battery_released",
    "battery_gone",
    "slot_fault",
    "slot_fault_cleared",
    "slot_quarantined",
    "slot_released",
    "tech_action",
    "security_event",
)


def render(
    request: web.Request, title: str, body: str, *, session: Session | None = None, status: int = 200
) -> web.Response:
    ui = context_of(request)
    cab = ui.cabinet
    banner = ""
    if cab.ledger_problem:
        banner = (
            f'<div class="banner danger" role="alert"><strong>LEDGER UNUSABLE: the cabinet refuses to rent.'
            f"</strong> {e(cab.ledger_problem)} See docs/ledger.md, “Restore”.</div>"
        )
    nav = ""
    if session is not None:
        nav = (
            f'<nav aria-label="Main"><a href="/tech">Overview</a><a href="/tech/events">Event log</a>'
            f'<button type="button" data-action="selftest">Run self-test</button>'
            f'<button type="button" data-action="diagnostics">Download diagnostics</button>'
            f'<span class="who">{e(session.user)}</span>'
            f'<button type="button" data-action="logout">Log out</button></nav>'
        )
    page = string.Template((TEMPLATES / "tech.html").read_text(encoding="utf-8"))
    text = page.substitute(
        title=e(title),
        cabinet=e(cab.settings.cabinet_id),
        v=ui.static_v,
        nav=nav,
        banner=banner,
        body=body,
        csrf=e(session.csrf) if session else "",
    )
    return web.Response(text=text, content_type="text/html", status=status)


def _session_or_login(request: web.Request) -> Session:
    s = session_of(request)
    if s is None:
        raise web.HTTPFound("/tech/login")
    return s


async def root(request: web.Request) -> web.Response:
    raise web.HTTPFound("/kiosk" if is_local(request) else "/tech")


async def login_page(request: web.Request) -> web.Response:
    ui = context_of(request)
    if session_of(request) is not None:
        raise web.HTTPFound("/tech")
    if ui.setup is not None and ui.setup.code is not None and ui.credentials.exists():
        ui.setup.use()  # a password was set meanwhile (cabinet tech set-password): the code is void
    if ui.setup is not None and ui.setup.code is not None:
        body = (
            '<section class="card narrow"><h2>First set-up</h2>'
            "<p>No technician password is set on this cabinet yet. Enter the one-time <strong>setup code</strong> "
            "from the cabinet's log (<code>journalctl -u cabinet | grep 'setup code'</code>) and choose your "
            "user name and password (at least 10 characters).</p>"
            '<form id="setup-form" class="stack">'
            '<label for="code">Setup code</label><input id="code" name="code" autocomplete="off" required>'
            '<label for="user">User name</label><input id="user" name="user" autocomplete="username" required>'
            '<label for="password">New password</label>'
            '<input id="password" name="password" type="password" autocomplete="new-password" minlength="10" required>'
            '<label for="password2">New password again</label>'
            '<input id="password2" name="password2" type="password" autocomplete="new-password" required>'
            '<button type="submit">Set password and log in</button>'
            '<p id="form-error" class="error" role="alert"></p></form></section>'
        )
    else:
        body = (
            '<section class="card narrow"><h2>Technician log-in</h2>'
            '<form id="login-form" class="stack">'
            '<label for="user">User name</label><input id="user" name="user" autocomplete="username" required>'
            '<label for="password">Password</label>'
            '<input id="password" name="password" type="password" autocomplete="current-password" required>'
            '<button type="submit">Log in</button>'
            '<p id="form-error" class="error" role="alert"></p></form></section>'
        )
    return render(request, "Log in", body)


async def overview(request: web.Request) -> web.Response:
    s = _session_or_login(request)
    legend = "".join(
        f'<li><span class="dot st-{k}" aria-hidden="true"></span>{e(v)}</li>' for k, v in STATE_TEXT.items()
    )
    body = (
        '<section aria-labelledby="slots-h"><h2 id="slots-h">Slots</h2>'
        f'<ul class="legend" aria-label="Colour legend">{legend}</ul>'
        '<div id="grid" class="grid" aria-live="polite"><p>Loading…</p></div></section>'
        '<section aria-labelledby="health-h"><h2 id="health-h">Cabinet health</h2>'
        '<div id="health" class="health"><p>Loading…</p></div></section>'
        '<p id="action-result" class="result" role="status"></p>'
    )
    return render(request, "Overview", body, session=s)


def _events_table(events: list[Event], caption: str) -> str:
    if not events:
        return f"<p class='muted'>{e(caption)}: nothing recorded.</p>"
    rows = "".join(
        f"<tr><td>{ev.seq}</td><td>{e(eventlog.iso(ev.at_wall))}</td><td>{e(ev.type)}</td>"
        f"<td>{e(', '.join(f'{k}={v}' for k, v in sorted(ev.body.items())))}</td></tr>"
        for ev in events
    )
    return (
        f'<table class="events"><caption>{e(caption)}</caption><thead><tr><th scope="col">Seq</th>'
        f'<th scope="col">Time (UTC)</th><th scope="col">Event</th><th scope="col">Details</th></tr></thead>'
        f"<tbody>{rows}</tbody></table>"
    )


async def _history(cab: CabinetPort, **filt: Any) -> list[Event]:
    if not cab.has_ledger:
        return []
    f = eventlog.EventFilter(types=HISTORY_TYPES, limit=50, **filt)
    return await asyncio.to_thread(eventlog.query, cab.ledger_path, f)


def _feature(f: Any) -> str:
    if not isinstance(f, dict):
        return str(f)
    rest = ", ".join(
        f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
        for k, v in f.items()
        if k not in ("name", "value")
    )
    value = f.get("value")
    shown = f"{value:.3g}" if isinstance(value, float) else str(value)
    return f"{f.get('name', '?')} = {shown}" + (f" ({rest})" if rest else "")


def _risk_html(pred: dict[str, Any] | None) -> str:
    if pred is None:
        return "<p>Fault risk: <strong>no prediction yet</strong>.</p>"
    feats = "".join(f"<li>{e(_feature(f))}</li>" for f in pred["top_features"]) or "<li>none reported</li>"
    flags = ", ".join(pred["flags"]) or "none"
    return (
        f"<p>Fault risk: <strong>{pred['risk'] * 100:.0f} %</strong> (flags: {e(flags)})</p>"
        f"<p>What drove it:</p><ul>{feats}</ul>"
    )


def _slot_actions(n: int) -> str:
    return (
        '<section aria-labelledby="act-h" class="card"><h2 id="act-h">Actions</h2>'
        '<form class="stack" data-slot-action>'
        f'<label for="reason">Reason (required, written to the ledger)</label>'
        '<input id="reason" name="reason" required maxlength="300">'
        '<div class="buttons">'
        f'<button type="button" data-action="unlock" data-slot="{n}">Unlock slot {n}</button>'
        f'<button type="button" data-action="quarantine" data-slot="{n}">Quarantine slot {n}</button>'
        f'<button type="button" data-action="release" data-slot="{n}">Release slot {n}</button>'
        '</div></form><p id="action-result" class="result" role="status"></p></section>'
    )


async def slot_page(request: web.Request) -> web.Response:
    s = _session_or_login(request)
    cab = context_of(request).cabinet
    n = slot_number(request.match_info["slot"], cab.settings.slots)
    if n is None:
        return render(
            request,
            "No such slot",
            f"<p>No slot {e(request.match_info['slot'])} here.</p>",
            session=s,
            status=404,
        )
    view = next(v for v in await slots_view(cab) if v["slot"] == n)
    facts = [
        ("State", STATE_TEXT.get(view["state"], view["state"])),
        ("Battery", view["sn"] or "none"),
        ("State of charge", f"{view['soc']} %" if view["soc"] is not None else "–"),
        ("Temperature", f"{view['temp_c']} °C" if view["temp_c"] is not None else "–"),
        ("Voltage", f"{view['voltage_v']} V" if view["voltage_v"] is not None else "–"),
        ("Current", f"{view['current_a']} A" if view["current_a"] is not None else "–"),
        ("Charging", "yes" if view["charging"] else "no"),
        ("Fault", f"{view['fault']}: {view['fault_detail'] or ''}" if view["fault"] else "none"),
        ("Quarantine", view["quarantine_reason"] or "yes" if view["quarantined"] else "no"),
    ]
    dl = "".join(f"<dt>{e(k)}</dt><dd>{e(str(v))}</dd>" for k, v in facts)
    battery_link = (
        f'<p><a href="/tech/battery/{e(view["sn"])}">Battery {e(view["sn"])}: details and charts</a></p>'
        if view["sn"]
        else ""
    )
    samples = cab.telemetry(view["sn"], limit=720) if view["sn"] else []
    body = (
        f'<section class="card" aria-labelledby="slot-h"><h2 id="slot-h">Slot {n}</h2>'
        f'<p><span class="badge st-{e(view["state"])}">{e(STATE_TEXT.get(view["state"], ""))}</span></p>'
        f"<dl class='facts'>{dl}</dl>{battery_link}{_risk_html(view['risk'])}</section>"
        + _slot_actions(n)
        + f'<section class="charts" aria-label="Telemetry">{charts.telemetry_charts(samples) if samples else ""}</section>'
        + _events_table(await _history(cab, slot=n), f"History of slot {n} (newest first)")
    )
    return render(request, f"Slot {n}", body, session=s)


async def battery_page(request: web.Request) -> web.Response:
    s = _session_or_login(request)
    cab = context_of(request).cabinet
    sn = request.match_info["sn"]
    b = await cab.battery(sn)
    if b is None:
        return render(
            request,
            "Unknown battery",
            f"<p>Battery {e(sn)} is not known to this cabinet.</p>",
            session=s,
            status=404,
        )
    where = {
        "slot": f"in slot {b.slot}",
        "rental": f"rented out ({b.rental_id})",
        "gone": f"gone: {b.gone_reason}",
    }.get(b.place, b.place)
    facts = [
        ("Where", where),
        ("Cycles", b.cycles if b.cycles is not None else "–"),
        ("Quarantined", b.quarantine_reason or "yes" if b.quarantined else "no"),
    ]
    dl = "".join(f"<dt>{e(k)}</dt><dd>{e(str(v))}</dd>" for k, v in facts)
    samples = cab.telemetry(sn, limit=720)
    action = ""
    if b.place != "gone":
        action = (
            '<section class="card" aria-labelledby="bact-h"><h2 id="bact-h">Actions</h2>'
            '<form class="stack" data-slot-action><label for="reason">Reason (required)</label>'
            '<input id="reason" name="reason" required maxlength="300"><div class="buttons">'
            f'<button type="button" data-action="removed" data-sn="{e(sn)}">Mark removed for repair</button>'
            '</div></form><p id="action-result" class="result" role="status"></p></section>'
        )
    body = (
        f'<section class="card" aria-labelledby="bat-h"><h2 id="bat-h">Battery {e(sn)}</h2>'
        f"<dl class='facts'>{dl}</dl>{_risk_html(risk_of(cab, sn))}</section>{action}"
        f'<section class="charts" aria-label="Telemetry">{charts.telemetry_charts(samples)}</section>'
        + _events_table(await _history(cab, sn=sn), f"History of battery {sn} (newest first)")
    )
    return render(request, f"Battery {sn}", body, session=s)


async def events_page(request: web.Request) -> web.Response:
    s = _session_or_login(request)
    cab = context_of(request).cabinet
    q = request.query
    error, rows = "", []
    try:
        f = eventlog.EventFilter.from_query(q, max_limit=1000)
        if cab.has_ledger:
            rows = await asyncio.to_thread(eventlog.query, cab.ledger_path, f)
    except eventlog.FilterError as ex:
        error = f'<p class="error" role="alert">{e(str(ex))}</p>'

    def field(name: str, label: str, kind: str = "text") -> str:
        return (
            f'<label for="f-{name}">{label}</label>'
            f'<input id="f-{name}" name="{name}" type="{kind}" value="{e(q.get(name, ""))}">'
        )

    qs = urlencode({k: v for k, v in q.items() if k in ("type", "slot", "sn", "since", "until") and v})
    body = (
        '<section class="card"><h2>Event log</h2><form class="filters" method="get" action="/tech/events">'
        + field("type", "Types (comma list)")
        + field("slot", "Slot", "number")
        + field("sn", "Battery")
        + field("since", "From (UTC, 2026-11-22T08:00)")
        + field("until", "To (UTC)")
        + '<button type="submit">Filter</button></form>'
        f'<p>Export these events: <a href="/api/tech/events?{qs}&amp;format=csv" download>CSV</a> · '
        f'<a href="/api/tech/events?{qs}&amp;format=jsonl" download>JSON lines</a></p>'
        f"{error}</section>"
        + _events_table(rows, f"{len(rows)} events (newest first, at most {f.limit if not error else 0})")
    )
    return render(request, "Event log", body, session=s)


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/tech/login", login_page)
    r.add_get("/tech", overview)
    r.add_get("/tech/slot/{slot}", slot_page)
    r.add_get("/tech/battery/{sn}", battery_page)
    r.add_get("/tech/events", events_page)
