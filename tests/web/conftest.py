"""A real cabinet against the simulator with its web UI on a free port, and HTTP clients for it."""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import free_port
from tests.rigs import MakeRig, Rig

PASSWORD = "correct horse battery"
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class TestPki:
    """A fleet CA and the test cabinet's certificate, issued by deploy/pki.py as provisioning does."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts only the test CA (the cabinet is reached by address, so
        the name is not checked; the chain and the certificate's purpose are)."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.check_hostname = False
        return ctx


@functools.cache
def test_pki(cabinet_id: str = "CAB-T1") -> TestPki:
    spec = importlib.util.spec_from_file_location("deploy_pki", REPO / "deploy" / "pki.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("deploy_pki", module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    root = Path(tempfile.mkdtemp(prefix="cabinet-web-pki-")) / "ca"
    ca = module.Pki.init(root)
    issued = ca.issue_cabinet(cabinet_id)
    return TestPki(issued.ca, issued.cert, issued.key)


test_pki.__test__ = False  # type: ignore[attr-defined]  # not a test, despite its name
TestPki.__test__ = False  # type: ignore[attr-defined]


@dataclass
class Web:
    """The rig plus its web addresses (plain HTTP on loopback, the technicians' HTTPS) and the WebUI part."""

    rig: Rig
    url: str
    tech_url: str = ""
    pki: TestPki | None = None

    @property
    def ui(self) -> Any:
        return self.rig.cab.web

    @property
    def setup_code(self) -> str:
        code: str = self.ui.setup.code
        return code

    def client(self) -> aiohttp.ClientSession:
        """A client of the plain-HTTP loopback listener (what the kiosk browser uses)."""
        # unsafe=True: keep cookies from an IP address host (127.0.0.1)
        return aiohttp.ClientSession(self.url, cookie_jar=aiohttp.CookieJar(unsafe=True))

    def tech_client(self) -> aiohttp.ClientSession:
        """A client of the technicians' HTTPS listener, trusting the test fleet CA."""
        assert self.pki is not None and self.tech_url, "this web UI has no HTTPS listener"
        return aiohttp.ClientSession(
            self.tech_url,
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            connector=aiohttp.TCPConnector(ssl=self.pki.client_context()),
        )

    async def technician(self, user: str = "ana") -> tuple[aiohttp.ClientSession, str]:
        """A logged-in client (the first technician, set up with the setup code) and its CSRF token,
        over HTTPS as a technician's laptop would be."""
        s = self.tech_client() if self.tech_url else self.client()
        if self.ui.credentials.exists():
            r = await s.post("/api/tech/login", json={"user": user, "password": PASSWORD})
        else:
            r = await s.post(
                "/api/tech/setup", json={"code": self.setup_code, "user": user, "password": PASSWORD}
            )
        assert r.status == 200, await r.text()
        return s, (await r.json())["csrf"]


async def start_web(make_rig: MakeRig, **over: Any) -> Web:
    """A rig with its web UI: plain HTTP on loopback and the technicians' HTTPS listener with
    the test cabinet certificate (``web={"tech_tls": False}`` for none)."""
    port, tech_port = free_port(), free_port()
    pki = test_pki()
    over.setdefault("web", {})
    over["web"] = {
        "enabled": True,
        "host": "127.0.0.1",
        "port": port,
        "tech_host": "127.0.0.1",
        "tech_port": tech_port,
        "tls_cert_file": str(pki.cert_file),
        "tls_key_file": str(pki.key_file),
        **over["web"],
    }
    rig = await make_rig(**over)
    await rig.until(lambda: rig.cab.web.bound_port, what="the web UI to listen")
    if rig.cab.web.tls is None:
        return Web(rig, f"http://127.0.0.1:{port}")
    await rig.until(lambda: rig.cab.web.tech_bound_port, what="the HTTPS listener")
    return Web(rig, f"http://127.0.0.1:{port}", f"https://127.0.0.1:{tech_port}", pki)


@pytest.fixture
async def web(make_rig: MakeRig) -> AsyncIterator[Web]:
    """8 slots (packs in 1, 2, 3 at 50 %, 5), web UI on a free port, sync disabled."""
    yield await start_web(make_rig)


SETUP_RE = re.compile(r"setup code: ([A-Z0-9-]+)")


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Debian's Chromium, headless, driven by Playwright (no browser download)."""
    import shutil

    from playwright.async_api import async_playwright

    exe = shutil.which("chromium") or "/usr/bin/chromium"
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


#: Runs in the page: problems a renter or a technician would meet (names, sizes, contrast, overflow).
A11Y_JS = """
(opts) => {
  const out = {unnamed: [], small: [], lowContrast: [], overflow: [], scroll: null};
  const visible = (el) => { const r = el.getBoundingClientRect(); const cs = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && cs.visibility !== 'hidden' && cs.display !== 'none' && !el.closest('[hidden]'); };
  const nameOf = (el) => (el.getAttribute('aria-label') || el.innerText || el.value || el.title ||
    (el.labels && el.labels[0] && el.labels[0].innerText) ||
    (el.getAttribute('aria-labelledby') && document.getElementById(el.getAttribute('aria-labelledby'))?.innerText) || '').trim();
  for (const el of document.querySelectorAll(opts.targets)) {
    if (!visible(el)) continue;
    if (!nameOf(el)) out.unnamed.push(el.outerHTML.slice(0, 80));
    const r = el.getBoundingClientRect();
    if (r.width < 48 || r.height < 48) out.small.push([el.outerHTML.slice(0, 60), Math.round(r.width), Math.round(r.height)]);
  }
  const rgb = (c) => { const m = c.match(/[\\d.]+/g).map(Number); return {r: m[0], g: m[1], b: m[2], a: m.length > 3 ? m[3] : 1}; };
  const lum = (c) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b); };
  const bgOf = (el) => { for (let e = el; e; e = e.parentElement) { const c = rgb(getComputedStyle(e).backgroundColor);
    if (c.a > 0.5) return c; } return {r: 255, g: 255, b: 255, a: 1}; };
  for (const el of document.querySelectorAll(opts.texts)) {
    if (!visible(el) || !el.innerText.trim()) continue;
    const fg = rgb(getComputedStyle(el).color), bg = bgOf(el);
    const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
    const ratio = (a + 0.05) / (b + 0.05);
    if (ratio < 4.5) out.lowContrast.push([el.tagName + '#' + el.id + ' ' + el.innerText.slice(0, 30), ratio.toFixed(2)]);
  }
  if (opts.fit) {
    const se = document.scrollingElement;
    out.scroll = [se.scrollWidth - innerWidth, se.scrollHeight - innerHeight];
    for (const el of document.querySelectorAll('body *')) {
      if (!visible(el) || el.closest('svg')) continue;
      const r = el.getBoundingClientRect();
      if (r.right > innerWidth + 1 || r.bottom > innerHeight + 1 || r.left < -1 || r.top < -1)
        out.overflow.push([el.tagName + '#' + el.id + '.' + el.className, Math.round(r.right), Math.round(r.bottom)]);
    }
  }
  return out;
}
"""

KIOSK_A11Y = {
    "targets": "button, input",
    "texts": "h1, h2, p, li, button, label, figcaption, footer",
    "fit": True,
}
TECH_A11Y = {
    "targets": "button, input, nav a, a.slot",
    "texts": "h1, h2, p, li, button, label, dt, dd, td, th, a, span",
    "fit": False,
}


async def a11y_problems(page: Any, opts: dict[str, Any]) -> dict[str, Any]:
    out = await page.evaluate(A11Y_JS, opts)
    problems = {k: v for k, v in out.items() if v and k != "scroll"}
    if opts["fit"] and (out["scroll"][0] > 0 or out["scroll"][1] > 0):
        problems["scroll"] = out["scroll"]
    return problems


AXE_VERSION = "4"  # axe-core major version from the npm registry
AXE_CACHE = Path(os.environ.get("CABINET_AXE_DIR") or Path.home() / ".cache" / "cabinet-tests" / "axe")


def axe_source() -> str | None:
    """axe-core's browser bundle: from CABINET_AXE_DIR or the cache, installed there with npm if missing."""
    js = AXE_CACHE / "node_modules" / "axe-core" / "axe.min.js"
    if not js.exists() and shutil.which("npm"):
        AXE_CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--silent", f"axe-core@{AXE_VERSION}"],
            cwd=AXE_CACHE,
            capture_output=True,
            timeout=180,
            check=False,
        )
    return js.read_text() if js.exists() else None


@pytest.fixture(scope="session")
def axe() -> str:
    src = axe_source()
    if src is None:
        pytest.skip("axe-core is not available (needs npm and the npm registry once; or set CABINET_AXE_DIR)")
    return src


async def axe_violations(page: Any, axe: str) -> list[str]:
    """Serious and critical axe-core violations on the page (injected through DevTools, not the page's CSP)."""
    await page.evaluate(axe)
    result = await page.evaluate(
        "async () => { const r = await axe.run(document, {resultTypes: ['violations']});"
        " return r.violations.map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target.join(' '))})); }"
    )
    return [
        f"{v['id']} ({v['impact']}): {v['nodes'][:3]}"
        for v in result
        if v["impact"] in ("serious", "critical")
    ]
