"""What a request handler may use of the web part: :class:`WebContext`, found on the request.

``app.WebUI`` provides it (the handler modules never import ``app``): the cabinet through its
port, the technicians' credentials, sessions and login throttle, the one-time setup code, the
live hub and the log ring. Also the two access rules every handler module shares: a technician
session (with its CSRF token on a POST) and "loopback or technician" for the read API.
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from .auth import Credentials, Session, Sessions, SetupCode, Throttle, csrf_ok
from .common import COOKIE, is_local, refuse
from .diagnostics import LogRing
from .live import LiveHub
from .port import CabinetPort


class WebContext(Protocol):
    """The web part's state that handlers share (``app.WebUI`` has exactly these)."""

    cabinet: CabinetPort
    credentials: Credentials
    sessions: Sessions
    throttle: Throttle
    setup: SetupCode | None  # the one-time setup code, while no technician has a password
    hub: LiveHub
    ring: LogRing
    static_v: str  # the static files' version, part of their URLs


CONTEXT_KEY: web.AppKey[WebContext] = web.AppKey("web_context")


def context_of(request: web.Request) -> WebContext:
    return request.app[CONTEXT_KEY]


def session_of(request: web.Request) -> Session | None:
    """The request's live technician session, or None."""
    return context_of(request).sessions.get(request.cookies.get(COOKIE))


def technician(request: web.Request, *, post: bool = True) -> Session:
    """The logged-in technician (401 otherwise); a POST also needs the session's CSRF token (403)."""
    s = session_of(request)
    if s is None:
        raise refuse(web.HTTPUnauthorized, "not logged in, or the session expired")
    if post and not csrf_ok(s, request.headers.get("X-CSRF-Token")):
        raise refuse(web.HTTPForbidden, "missing or wrong CSRF token")
    return s


def require_reader(request: web.Request) -> None:
    """Loopback callers and technicians may read; anyone else gets 401."""
    if not is_local(request) and session_of(request) is None:
        raise refuse(web.HTTPUnauthorized, "log in as a technician, or call from the cabinet itself")
