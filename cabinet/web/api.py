"""The local JSON API: slots, batteries, rentals, health, scanned codes and the live stream.

Allowed to the cabinet itself (loopback) or a logged-in technician; see docs/api.md.
"""

from __future__ import annotations

import json

from aiohttp import web

from cabinet.passes import REASONS

from .common import json_error
from .context import context_of, require_reader
from .port import CabinetPort
from .state import batteries_view, battery_json, health_view, rentals_view, slots_view

MAX_CODE = 4096


def _cab(request: web.Request) -> CabinetPort:
    return context_of(request).cabinet


async def get_slots(request: web.Request) -> web.Response:
    require_reader(request)
    return web.json_response({"slots": await slots_view(_cab(request))})


async def get_batteries(request: web.Request) -> web.Response:
    require_reader(request)
    return web.json_response({"batteries": await batteries_view(_cab(request))})


async def get_battery(request: web.Request) -> web.Response:
    require_reader(request)
    cab = _cab(request)
    b = await cab.battery(request.match_info["sn"])
    if b is None:
        return json_error(404, f"battery {request.match_info['sn']!r} is not known to this cabinet")
    return web.json_response(battery_json(cab, b))


async def get_rentals(request: web.Request) -> web.Response:
    require_reader(request)
    open_only = request.query.get("open") in ("1", "true", "yes")
    return web.json_response({"rentals": await rentals_view(_cab(request), open_only)})


async def get_health(request: web.Request) -> web.Response:
    require_reader(request)
    return web.json_response(await health_view(_cab(request)), dumps=lambda o: json.dumps(o, default=str))


async def post_scan(request: web.Request) -> web.Response:
    """A scanned or typed code: an offline pass is verified and, if good, a battery is handed out.

    Waits for the outcome (taken, not taken, refused); the ``eject`` event on the live stream
    tells the kiosk the slot number while the renter takes the battery.
    """
    require_reader(request)
    try:
        body = await request.json()
        text = body["code"]
        if not isinstance(text, str):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        return json_error(400, 'send JSON {"code": "<scanned text>"}')
    if not text.strip() or len(text) > MAX_CODE:
        return json_error(400, f"code: 1 to {MAX_CODE} characters")
    out = await _cab(request).submit_pass(text)
    if out is None:  # no pass desk: the ledger is unusable
        reason = "ledger_unusable"
        return web.json_response(
            {
                "status": "refused",
                "reason": reason,
                "message": REASONS[reason],
                "rental_id": "",
                "slot": None,
                "sn": None,
            }
        )
    return web.json_response(
        {
            "status": out.status,
            "reason": out.reason,
            "message": REASONS.get(out.reason, "") if out.reason else "",
            "rental_id": out.rental_id,
            "slot": out.slot,
            "sn": out.sn,
        }
    )


async def get_stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: domain happenings as they occur, ``slots`` on change, ``health`` every 5 s."""
    require_reader(request)
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    await resp.prepare(request)
    async for chunk in context_of(request).hub.subscribe():
        try:
            await resp.write(chunk)
        except (ConnectionResetError, RuntimeError):
            break
    return resp


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/slots", get_slots)
    r.add_get("/api/batteries", get_batteries)
    r.add_get("/api/batteries/{sn}", get_battery)
    r.add_get("/api/rentals", get_rentals)
    r.add_get("/api/health", get_health)
    r.add_post("/api/scan", post_scan)
    r.add_get("/api/events/stream", get_stream)
