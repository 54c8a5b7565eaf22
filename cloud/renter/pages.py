"""The renter app's pages: one HTML shell for every ``/app/...`` address, its static files, the
service worker and the web app manifest, each with a strict Content-Security-Policy.

The shell is the same for every screen (the app's router, ``static/app.js``, draws the screen the
address names), so a kiosk's QR code (``/app/c/{cabinet_id}``) and a reload land where they
should. Static files are read once at start, served from ``/app/s/{build}/...`` (``build`` is a
hash of all of them, so a new release is a new address and old ones can be cached for a year),
gzipped when the browser accepts it. Nothing here reads the database or a token: the app talks to
the public JSON API (``/api/...``) only.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import json
import mimetypes
import re
from dataclasses import dataclass
from pathlib import Path
from string import Template
from urllib.parse import urlsplit

from aiohttp import web

from cloud.config import CloudConfig, ConfigError

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
SHELL = HERE / "shell.html"
LANGUAGES = ("zh", "en")
#: files the service worker template gets filled into; never served from /app/s/
TEMPLATES = ("sw.js",)
TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain",
    ".html": "text/html",
}
_TILE_VAR = re.compile(r"\{[a-z]+\}")


@dataclass(frozen=True)
class Asset:
    body: bytes
    gz: bytes | None  # None: not worth compressing (images)
    content_type: str


class Assets:
    """Every static file in memory, and the build id (a hash of them all)."""

    def __init__(self, root: Path = STATIC) -> None:
        self.files: dict[str, Asset] = {}
        digest = hashlib.sha256()
        for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix != ".md"):  # notes stay
            name = path.relative_to(root).as_posix()
            body = path.read_bytes()
            digest.update(name.encode() + b"\0" + body + b"\0")
            kind = TYPES.get(path.suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
            textual = kind.startswith("text/") or kind.endswith(("json", "xml"))
            self.files[name] = Asset(body, gzip.compress(body, 9, mtime=0) if textual else None, kind)
        self.build = digest.hexdigest()[:12]

    def shell_files(self) -> list[str]:
        """What the service worker keeps at install for offline use: the app's own files. Vendored
        libraries are kept when first used (the map needs the network anyway), the PNG icons are
        the system's business when it installs the app."""
        return sorted(
            n
            for n in self.files
            if n not in TEMPLATES and not n.startswith("vendor/") and not n.endswith(".png")
        )


def tile_source(url: str) -> str:
    """The origin to allow in ``img-src`` for the tile URL template ('' for none); ConfigError if unusable."""
    if not url:
        return ""
    parts = urlsplit(url)
    if (
        parts.scheme not in ("https", "http")
        or not parts.netloc
        or not all(v in url for v in ("{z}", "{x}", "{y}"))
    ):
        raise ConfigError(
            f"cloud.app_tile_url must be empty or an http(s) URL template with {{z}}, {{x}} and {{y}}, got {url!r}"
        )
    host = parts.netloc
    if "{" in host:  # a subdomain template ({s}.tile.example.org): any subdomain of the rest
        labels = host.split(".")
        if any(_TILE_VAR.search(label) for label in labels[1:]) or not _TILE_VAR.fullmatch(labels[0]):
            raise ConfigError(
                f"cloud.app_tile_url: only the first label of the host may be a template, got {host!r}"
            )
        host = "*." + ".".join(labels[1:])
    return f"{parts.scheme}://{host}"


def csp(tiles: str) -> str:
    img = " ".join(x for x in ("'self'", "data:", tiles) if x)
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        f"img-src {img}; connect-src 'self'; manifest-src 'self'; worker-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )


def language(accept_language: str) -> str:
    """zh or en, whichever the Accept-Language header prefers (en when it names neither)."""
    best, best_q = "en", -1.0
    for i, item in enumerate(accept_language.split(",")[:20]):
        tag, _, params = item.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                continue
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGUAGES and q - i * 1e-6 > best_q:
            best, best_q = primary, q - i * 1e-6
    return best


class Pages:
    """The handlers of ``/app``."""

    def __init__(self, config: CloudConfig, assets: Assets | None = None) -> None:
        self.assets = assets or Assets()
        self.tiles = tile_source(config.app_tile_url)
        self.headers = {
            "Content-Security-Policy": csp(self.tiles),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "strict-origin",  # tile servers want to know the site, never the page
            "X-Frame-Options": "DENY",
            "Permissions-Policy": "geolocation=(self), camera=(), microphone=(), payment=()",
            "Cross-Origin-Opener-Policy": "same-origin",
        }
        app_config = {
            "build": self.assets.build,
            "tiles": config.app_tile_url,
            "attribution": config.app_tile_attribution,
        }
        self.shell = Template(SHELL.read_text())
        self.shell_values = {
            "build": self.assets.build,
            "config": html.escape(json.dumps(app_config), quote=True),
        }
        sw = self.assets.files["sw.js"].body.decode()
        self.sw = (
            sw.replace("__BUILD__", self.assets.build)
            .replace(
                "__SHELL__",
                json.dumps([f"/app/s/{self.assets.build}/{n}" for n in self.assets.shell_files()]),
            )
            .encode()
        )

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/app", self.to_app)
        app.router.add_get("/app/sw.js", self.service_worker)
        app.router.add_get("/app/s/{build}/{name:.+}", self.static)
        app.router.add_get("/app/{path:.*}", self.page)

    def _respond(self, request: web.Request, asset: Asset, cache: str) -> web.Response:
        headers = {**self.headers, "Cache-Control": cache, "Vary": "Accept-Encoding"}
        body = asset.body
        if asset.gz is not None and "gzip" in request.headers.get("Accept-Encoding", ""):
            body, headers["Content-Encoding"] = asset.gz, "gzip"
        return web.Response(body=body, headers=headers, content_type=asset.content_type)

    async def to_app(self, request: web.Request) -> web.Response:
        raise web.HTTPPermanentRedirect("/app/")

    async def page(self, request: web.Request) -> web.Response:
        lang = language(request.headers.get("Accept-Language", ""))
        body = self.shell.substitute(lang=lang, **self.shell_values).encode()
        asset = Asset(body, gzip.compress(body, 6, mtime=0), "text/html")
        return self._respond(request, asset, "no-cache")

    async def service_worker(self, request: web.Request) -> web.Response:
        body = self.sw
        return self._respond(
            request, Asset(body, gzip.compress(body, 6, mtime=0), "text/javascript"), "no-cache"
        )

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        asset = self.assets.files.get(name)
        if asset is None or name in TEMPLATES:
            raise web.HTTPNotFound(text=f"no file {name!r} in the app")
        # an older build's address (a page cached before a release) still gets today's file, uncached
        fresh = request.match_info["build"] == self.assets.build
        return self._respond(request, asset, "public, max-age=31536000, immutable" if fresh else "no-cache")


def add_app_routes(app: web.Application, config: CloudConfig) -> None:
    """Serve the renter app at ``/app/`` on ``app`` (called once by ``cloud.app.create_app``)."""
    Pages(config).add_routes(app)
