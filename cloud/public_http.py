"""HTTP handlers of issue 15's routes: nearby cabinets and a cabinet's public page (no sign-in),
phone sign-in with a one-time code, and the operator's venue settings.

Mixed into ``cloud.app``'s handler class like ``cloud.fleet.http.FleetHandlers`` (routes declared in
``cloud.api_schema``); ``self.ctx`` is the ``CloudContext`` (``places``, ``phone_sign_in``).
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from aiohttp import web

from cloud.errors import NotFound
from cloud.params import decimal
from cloud.places import DEFAULT_LIMIT, DEFAULT_RADIUS_M, MAX_LIMIT, MAX_RADIUS_M, PlaceError
from cloud.users import NotAuthenticated

# degrees as a query string: a JSON-style number (no nan, inf, spaces or digit separators)
_DEGREES = re.compile(r"[-+]?([0-9]{1,20}(\.[0-9]{0,20})?|\.[0-9]{1,20})([eE][-+]?[0-9]{1,3})?")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


def _degrees(request: web.Request, name: str, bound: float) -> float:
    raw = request.query.get(name)
    if raw is None:
        raise PlaceError(f"query parameter {name} (degrees, WGS 84) is required")
    if not _DEGREES.fullmatch(raw) or not -bound <= float(raw) <= bound:
        raise PlaceError(
            f"query parameter {name}={raw[:40]!r} must be a number of degrees in -{bound:g}..{bound:g}"
        )
    return float(raw)


def _bounded(request: web.Request, name: str, default: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    value = decimal(raw, 1, hi)
    if value is None:
        raise PlaceError(f"query parameter {name}={raw[:40]!r} must be an integer in 1..{hi}")
    return value


class PublicHandlers:
    """Route handlers; ``self.ctx`` is the ``CloudContext``; ``cloud.app``'s handler class gives the
    client's address and the account's JSON the way its own routes do (no import back into it)."""

    ctx: Any

    def client_ip(self, request: web.Request) -> str:
        raise NotImplementedError

    def user_json(self, user: Any) -> dict[str, Any]:
        raise NotImplementedError

    async def nearby_cabinets(self, request: web.Request, user: None, body: None) -> web.Response:
        lat, lon = _degrees(request, "lat", 90.0), _degrees(request, "lon", 180.0)
        limit = _bounded(request, "limit", DEFAULT_LIMIT, MAX_LIMIT)
        radius = _bounded(request, "radius_m", DEFAULT_RADIUS_M, MAX_RADIUS_M)
        found = await asyncio.to_thread(self.ctx.places.nearby, lat, lon, limit, radius)
        return _json({"cabinets": found})

    async def cabinet_public(self, request: web.Request, user: None, body: None) -> web.Response:
        return _json(
            await asyncio.to_thread(self.ctx.places.public_cabinet, request.match_info["cabinet_id"])
        )

    async def update_venue(self, request: web.Request, user: Any, body: dict) -> web.Response:
        raw = request.match_info["venue_id"]
        if decimal(raw) is None:
            raise NotFound(f"no venue {raw[:40]!r}")
        venue = await asyncio.to_thread(self.ctx.places.update_venue, int(raw), body)
        await asyncio.to_thread(self.ctx.audit, user.id, "venue_update", f"venue:{raw}", body)
        return _json(venue)

    async def sms_start(self, request: web.Request, user: None, body: dict) -> web.Response:
        ip = self.client_ip(request)
        sent = await asyncio.to_thread(self.ctx.phone_sign_in.start, body["phone"], ip)
        return _json(sent, 202)

    async def sms_verify(self, request: web.Request, user: None, body: dict) -> web.Response:
        """Sign in (or up) by phone; with a valid bearer token, add the phone to that account."""
        into = None
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("bearer "):
            token = header[7:].strip()
            if not re.fullmatch(r"[\x21-\x7e]{1,512}", token):
                raise NotAuthenticated("malformed bearer token")
            into = (await asyncio.to_thread(self.ctx.accounts.authenticate, token)).id
        ip = self.client_ip(request)
        signed = await asyncio.to_thread(self.ctx.phone_sign_in.verify, body["phone"], body["code"], ip, into)
        s = signed.session
        return _json({"token": s.token, "expires_at": s.expires_at, "user": self.user_json(s.user),
                      "created": signed.created})  # fmt: skip
