"""The app's pages as the cloud serves them (no browser): the shell at every /app/ address, its
headers (CSP, caching, compression), the service worker and manifest, the language the phone asks
for, the tile setting, what the wheel ships, and that the app calls only documented API routes."""

from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from cloud.api_schema import openapi
from cloud.app import create_app
from cloud.config import CloudConfig, ConfigError
from cloud.renter.pages import STATIC, Assets, csp, language, tile_source
from sync.amounts import format_duration, format_money

REPO = Path(__file__).resolve().parents[2]
RENTER = REPO / "cloud" / "renter"


@pytest.fixture
async def client(tmp_path: Path, sqlite_template: Path) -> AsyncIterator[TestClient]:
    db = tmp_path / "cloud.db"
    shutil.copy(sqlite_template, db)
    config = CloudConfig(database=f"sqlite:///{db}", data_dir=str(tmp_path), scrypt_n=16)
    async with TestClient(TestServer(create_app(config, background=False))) as c:
        yield c


@pytest.mark.parametrize(
    ("header", "want"),
    [
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh"),
        ("en-US,en;q=0.9,zh-CN;q=0.8", "en"),
        ("fr-FR,fr;q=0.9,zh-TW;q=0.5", "zh"),
        ("en;q=0.2, zh;q=0.7", "zh"),
        ("de-DE", "en"),
        ("", "en"),
        ("zh;q=abc, en", "en"),
        ("*", "en"),
    ],
)
def test_the_language_follows_accept_language(header: str, want: str) -> None:
    assert language(header) == want


def test_the_tile_setting_names_the_one_host_the_csp_allows() -> None:
    assert tile_source("https://tile.openstreetmap.org/{z}/{x}/{y}.png") == "https://tile.openstreetmap.org"
    assert tile_source("https://{s}.tiles.example.cn/{z}/{x}/{y}.png") == "https://*.tiles.example.cn"
    assert tile_source("") == ""
    for bad in ("ftp://t.example/{z}/{x}/{y}", "https://t.example/tiles.png", "javascript:alert(1)//{z}{x}{y}",
                "https://a.{s}.example/{z}/{x}/{y}", "/tiles/{z}/{x}/{y}.png"):  # fmt: skip
        with pytest.raises(ConfigError, match="app_tile_url"):
            tile_source(bad)
    policy = csp("https://tile.openstreetmap.org")
    assert "img-src 'self' data: https://tile.openstreetmap.org;" in policy
    assert "script-src 'self';" in policy and "connect-src 'self';" in policy and "'unsafe" not in policy
    assert "img-src 'self' data:;" in csp("")


def test_a_bad_tile_setting_stops_the_cloud_at_start(tmp_path: Path) -> None:
    config = CloudConfig(database=f"sqlite:///{tmp_path / 'c.db'}", app_tile_url="http://tiles.example/x.png")
    with pytest.raises(ConfigError, match="app_tile_url"):
        create_app(config, background=False)


async def test_every_app_address_gets_the_shell_with_a_strict_csp(client: TestClient) -> None:
    for path in ("/app/", "/app/c/CAB-T1", "/app/r/4d7c0c4e-1f7a-4f7e-9a55-0c3e2c1d9b10", "/app/account"):
        r = await client.get(path, headers={"Accept-Language": "zh-CN,zh;q=0.9"})
        assert r.status == 200 and r.content_type == "text/html", path
        html = await r.text()
        assert '<html lang="zh"' in html and '<script type="module" src="/app/s/' in html
        assert "<script>" not in html and "style=" not in html  # nothing inline: the CSP allows none
        h = r.headers
        assert h["Content-Security-Policy"].startswith(
            "default-src 'none'; script-src 'self'; style-src 'self';"
        )
        assert "img-src 'self' data: https://tile.openstreetmap.org;" in h["Content-Security-Policy"]
        assert (h["X-Content-Type-Options"], h["X-Frame-Options"], h["Cache-Control"]) == (
            "nosniff",
            "DENY",
            "no-cache",
        )
    r = await client.get("/app/", headers={"Accept-Language": "en-GB"})
    assert '<html lang="en"' in await r.text()
    r = await client.get("/app", allow_redirects=False)
    assert (r.status, r.headers["Location"]) == (308, "/app/")


async def test_static_files_are_versioned_compressed_and_cached(client: TestClient) -> None:
    build = Assets().build
    html = await (await client.get("/app/")).text()
    config = json.loads(re.search(r'data-config="([^"]+)"', html).group(1).replace("&quot;", '"'))
    assert config == {"build": build, "tiles": "https://tile.openstreetmap.org/{z}/{x}/{y}.png",
                      "attribution": "© OpenStreetMap contributors"}  # fmt: skip
    r = await client.get(
        f"/app/s/{build}/app.js", headers={"Accept-Encoding": "gzip, br"}, auto_decompress=False
    )
    raw = await r.read()
    assert r.headers["Content-Encoding"] == "gzip" and raw[:2] == b"\x1f\x8b"
    assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert r.content_type == "text/javascript" and len(raw) < (STATIC / "app.js").stat().st_size / 2
    r = await client.get(
        f"/app/s/{build}/app.js", headers={"Accept-Encoding": "identity"}, auto_decompress=False
    )
    assert "Content-Encoding" not in r.headers and await r.read() == (STATIC / "app.js").read_bytes()
    r = await client.get("/app/s/000000000000/app.js")  # a page of an older release: today's file, not kept
    assert r.status == 200 and r.headers["Cache-Control"] == "no-cache"
    for missing in ("nope.js", "sw.js", "vendor/leaflet/README.md", "pages.py"):
        r = await client.get(f"/app/s/{build}/{missing}")
        assert r.status == 404 and (await r.json())["error"] == "not_found", missing


async def test_the_service_worker_keeps_the_shell_and_no_api_answer(client: TestClient) -> None:
    build = Assets().build
    r = await client.get("/app/sw.js")
    assert (
        r.status == 200 and r.content_type == "text/javascript" and r.headers["Cache-Control"] == "no-cache"
    )
    sw = await r.text()
    assert f"const BUILD = '{build}';" in sw
    shell = json.loads(re.search(r"const SHELL = (\[.*?\]);", sw).group(1))
    assert f"/app/s/{build}/app.js" in shell and f"/app/s/{build}/i18n.js" in shell
    assert all(p.startswith(f"/app/s/{build}/") for p in shell)
    assert not [p for p in shell if "/api/" in p or "vendor/" in p or p.endswith((".png", "sw.js"))]
    assert "'/api/'" not in sw and "startsWith('/app/')" in sw  # /api/ requests are never even looked at
    manifest = await (await client.get(f"/app/s/{build}/manifest.webmanifest")).json(content_type=None)
    assert (manifest["start_url"], manifest["scope"], manifest["display"]) == ("/app/", "/app/", "standalone")
    sizes = {i["sizes"] for i in manifest["icons"]}
    assert {"192x192", "512x512"} <= sizes
    for icon in manifest["icons"]:
        assert (await client.get(f"/app/s/{build}/{icon['src']}")).status == 200


def test_the_wheel_ships_every_file_of_the_app() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    patterns = [p.strip() for p in cfg["options.package_data"]["cloud.renter"].split(",")]
    shipped = {p.relative_to(RENTER) for pattern in patterns for p in RENTER.glob(pattern) if p.is_file()}
    needed = {
        p.relative_to(RENTER)
        for p in RENTER.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    }
    assert needed - shipped == set()
    assert Path("shell.html") in needed and Path("static/vendor/leaflet/leaflet.js") in needed


def test_the_vendored_leaflet_is_the_pinned_release_with_its_license() -> None:
    leaflet = STATIC / "vendor" / "leaflet"
    assert (leaflet / "leaflet.js").read_text()[:200].count("Leaflet 1.9.") == 1
    assert "BSD 2-Clause License" in (leaflet / "LICENSE.txt").read_text()
    assert (leaflet / "leaflet.css").stat().st_size > 10_000


def api_calls(source: str) -> set[str]:
    """The API paths a script calls, with ``${...}`` parts as ``{}`` and without the query."""
    found = set()
    for m in re.finditer(r"[`'](/api/[^`'?]*)", source):
        found.add(re.sub(r"\$\{[^}]*\}", "{}", m.group(1)))
    return found


def test_the_app_calls_only_routes_of_the_openapi_document() -> None:
    documented = {re.sub(r"\{[^}]+\}", "{}", p) for p in openapi()["paths"]}
    called: set[str] = set()
    for js in STATIC.glob("*.js"):
        called |= api_calls(js.read_text())
    called.discard("/api/")  # the service worker's own test of what never to touch
    assert called, "no API call found: the pattern is wrong"
    assert called - documented == set()
    assert {"/api/me/rentals/{}", "/api/cabinets/nearby", "/api/cabinets/{}/public", "/api/auth/sms/verify",
            "/api/me/passes/{}/qr.svg", "/api/rentals"} <= called  # fmt: skip
    assert api_calls("api('GET', `/api/me/rentals/${id}/receipt`); x('/api/me?x=1')") == {
        "/api/me/rentals/{}/receipt", "/api/me",
    }  # fmt: skip


def test_the_app_formats_money_and_durations_as_the_cloud_does() -> None:
    """static/format.js (run by Node) against sync.amounts, the cloud's one formatter."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("needs Node.js to run the app's formatter outside a browser")
    cases = [(3500, "EUR"), (3500, "CNY"), (9900, "JPY"), (-250, "EUR"), (1234567, "KWD"), (5, "USD"),
             (0, "GBP"), (10**12, "EUR"), (99, "CLP")]  # fmt: skip
    durations = [0, 42, 59, 60, 307, 3599, 3600, 3900, 86399, 183900]
    script = (
        "import { money, duration } from './format.js';"
        f"console.log(JSON.stringify([{json.dumps(cases)}.map(([m, c]) => money(m, c)),"
        f" {json.dumps(durations)}.map((s) => duration(s, 'en'))]));"
    )
    out = subprocess.run(
        [node, "--input-type=module", "-e", script],
        cwd=STATIC,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    shown, spans = json.loads(out.stdout)
    assert shown == [format_money(m, c, symbol=c in ("CNY", "JPY")) for m, c in cases]
    assert shown[:3] == ["35.00 EUR", "¥35.00", "¥9900"]
    assert spans == [format_duration(s) for s in durations]
