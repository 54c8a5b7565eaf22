"""WebUI: the cabinet part that serves the kiosk, the technician UI and the local JSON API.

One aiohttp application on two listeners: plain HTTP on ``web.host:web.port`` (loopback: the
kiosk browser, ``cabinet status``) and, for technicians on the venue network, HTTPS on
``web.tech_host:web.tech_port`` with the cabinet's own certificate (``web.tech_tls``; see
``cabinet.config.tech_tls_files``). Plain HTTP never leaves the cabinet unless
``web.tech_tls = false``. Who may call what:

- ``/kiosk`` and ``/static``: anybody (the page itself holds nothing secret);
- read API (``/api/slots`` ...), ``/api/scan`` and the live stream: the cabinet itself
  (loopback: the kiosk screen, ``cabinet status``) or a logged-in technician;
- technician actions (``/api/tech/...``) and pages (``/tech``): a technician session, and a
  CSRF token on every POST; no state changes over GET.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import ssl
import time
from collections.abc import Callable

from aiohttp import web

from cabinet.tasks import cancel_and_wait

from . import api, kiosk, pages, tech
from .auth import Credentials, Session, Sessions, SetupCode, Throttle
from .common import COOKIE, STATIC, Handler, static_version
from .context import CONTEXT_KEY
from .diagnostics import LogRing
from .live import LiveHub, publish_loop
from .port import CabinetAdapter, CabinetParts, CabinetPort
from .state import health_view, slots_view

log = logging.getLogger(__name__)


class WebUI:
    """The web part of a running cabinet (``start()``/``stop()`` like every part).

    Built on the Cabinet (``WebUI(cab)``), which it sees only through
    :class:`~cabinet.web.port.CabinetPort`; its attributes ``cabinet``, ``credentials``,
    ``sessions``, ``throttle``, ``setup``, ``hub``, ``ring`` and ``static_v`` are the
    :class:`~cabinet.web.context.WebContext` the handlers use.
    """

    def __init__(
        self,
        cab: CabinetParts,
        *,
        clock: Callable[[], float] = time.monotonic,
        throttle: Throttle | None = None,
    ) -> None:
        self.cabinet: CabinetPort = CabinetAdapter(cab)
        c = self.cabinet.settings
        self.host, self.port = c.host, c.port
        self.tech_host, self.tech_port = c.tech_host, c.tech_port
        self.tls = self.cabinet.tech_tls_context()  # None: no HTTPS listener (technicians on loopback only)
        self.credentials = Credentials(c.data_dir)
        self.sessions = Sessions(c.session_idle_s, c.session_max_s, clock)
        self.throttle = throttle or Throttle(clock=clock)
        self.setup: SetupCode | None = None
        self.hub = LiveHub()
        self.ring = LogRing()
        self.static_v = static_version()
        self.app = self._build()
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.bound_port: int | None = None
        self.tech_bound_port: int | None = None  # the HTTPS listener's port once it listens

    # ---- life cycle ------------------------------------------------------------------

    async def start(self) -> None:
        logging.getLogger().addHandler(self.ring)
        if not self.credentials.exists():
            self.setup = SetupCode()
            # The one way in on a fresh cabinet: the code is only in the log and the console.
            log.warning(
                "technician setup code: %s (one-time: enter it at %s/tech/login "
                "to set the first technician password)",
                self.setup.code,
                f"https://<this cabinet>:{self.tech_port}" if self.tls else f"http://{self.host}:{self.port}",
            )
        self.cabinet.add_listener(self.hub.on_domain)
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        self._tasks.append(asyncio.create_task(self._listen(), name="web-listen"))
        if self.tls is not None:
            self._tasks.append(asyncio.create_task(self._listen_tls(), name="web-listen-tls"))
        elif self.cabinet.settings.tech_tls:
            log.warning(
                "no certificate for the technician HTTPS listener (sync.cert_file / web.tls_cert_file): "
                "the technician UI is served on %s:%d only",
                self.host,
                self.port,
            )
        self._tasks.append(
            asyncio.create_task(
                publish_loop(self.hub, lambda: slots_view(self.cabinet), lambda: health_view(self.cabinet)),
                name="web-live",
            )
        )

    async def _listen(self) -> None:
        """The plain-HTTP listener (loopback unless ``web.tech_tls = false``)."""
        self.bound_port = await self._bind(self.host, self.port, None)

    async def _listen_tls(self) -> None:
        """The technicians' HTTPS listener."""
        self.tech_bound_port = await self._bind(self.tech_host, self.tech_port, self.tls)

    async def _bind(self, host: str, port: int, tls: ssl.SSLContext | None) -> int:
        """Bind the port; if it is taken, say so and keep trying (renting goes on without the UI)."""
        scheme = "https" if tls else "http"
        delay = 1.0
        while True:
            site = web.TCPSite(self._runner, host, port, ssl_context=tls)  # type: ignore[arg-type]
            try:
                await site.start()
            except OSError as e:
                level = logging.ERROR if e.errno == errno.EADDRINUSE else logging.CRITICAL
                log.log(
                    level,
                    "web UI cannot listen on %s://%s:%d: %s (retrying in %.0f s)",
                    scheme,
                    host,
                    port,
                    e.strerror,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            server = getattr(site, "_server", None)
            socks = getattr(server, "sockets", None) or []
            bound = socks[0].getsockname()[1] if socks else port
            what = "technician UI /tech" if tls else "kiosk /kiosk, local API"
            log.info("web UI on %s://%s:%d/ (%s)", scheme, host, bound, what)
            return bound

    async def stop(self) -> None:
        self.cabinet.remove_listener(self.hub.on_domain)
        self.hub.close()
        await cancel_and_wait(self._tasks)
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner.cleanup()
        logging.getLogger().removeHandler(self.ring)

    # ---- application -----------------------------------------------------------------

    def _build(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=64 * 1024)
        app[CONTEXT_KEY] = self
        api.add_routes(app)
        kiosk.add_routes(app)
        tech.add_routes(app)
        pages.add_routes(app)
        app.router.add_get("/", pages.root)
        app.router.add_static("/static", STATIC)
        app.on_response_prepare.append(self._headers)
        return app

    def session_of(self, request: web.Request) -> Session | None:
        return self.sessions.get(request.cookies.get(COOKIE))

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Refuse cross-site POSTs outright; the per-route rules are in api/tech/pages."""
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            origin = request.headers.get("Origin")
            if origin and origin != "null" and origin.split("://", 1)[-1] != request.host:
                return web.json_response({"error": "cross-site request refused"}, status=403)
        return await handler(request)

    async def _headers(self, request: web.Request, response: web.StreamResponse) -> None:
        h = response.headers
        h.setdefault("X-Content-Type-Options", "nosniff")
        h.setdefault("Referrer-Policy", "no-referrer")
        h.setdefault("X-Frame-Options", "DENY")
        h.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        )
        if request.path.startswith("/static/"):
            h["Cache-Control"] = (
                "public, max-age=31536000, immutable" if request.query.get("v") else "public, max-age=300"
            )
        else:
            h.setdefault("Cache-Control", "no-store")
