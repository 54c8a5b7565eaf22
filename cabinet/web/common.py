"""Helpers every module of the web package may use: file places, the session cookie, the
loopback test, JSON errors and request parsing.

Imports nothing of ``cabinet.web``, so any module of the package can import it without a cycle
(``tests/web/test_web_structure.py`` checks that).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

HERE = Path(__file__).parent
STATIC = HERE / "static"
TEMPLATES = HERE / "templates"
COOKIE = "cabinet_tech"
LOCAL = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})
MAX_REASON = 300  # characters of a technician's reason kept in the ledger

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def static_version() -> str:
    """A short hash of the static files: part of their URLs, so they can be cached for a year."""
    h = hashlib.sha256()
    for p in sorted(STATIC.glob("*")):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()[:10]


def is_local(request: web.Request) -> bool:
    """The request comes from the cabinet itself (kiosk screen, ``cabinet status``)."""
    return (request.remote or "") in LOCAL


def json_error(status: int, message: str, **extra: Any) -> web.Response:
    """An error answer: ``{"error": message, ...}`` with ``status``."""
    return web.json_response({"error": message, **extra}, status=status)


def refuse(exc: type[web.HTTPException], message: str) -> web.HTTPException:
    """An HTTP error to raise, with the JSON body ``{"error": message}``."""
    return exc(text=json.dumps({"error": message}), content_type="application/json")


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request's JSON body, which must be an object (400 otherwise)."""
    try:
        body = await request.json()
    except ValueError:
        raise refuse(web.HTTPBadRequest, "send a JSON object") from None
    if not isinstance(body, dict):
        raise refuse(web.HTTPBadRequest, "send a JSON object")
    return body


def slot_number(text: str, slots: int) -> int | None:
    """The slot number ``text`` names, or None when it names no slot 1..``slots``."""
    try:
        n = int(text)
    except ValueError:
        return None
    return n if 1 <= n <= slots else None
