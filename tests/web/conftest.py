"""A real cabinet against the simulator with its web UI on a free port, and HTTP clients for it."""

from __future__ import annotations

import functools
import importlib.util
import re
import shutil
import ssl
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.browser import CHROMIUM_ARGS, a11y_problems, axe_source, axe_violations
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


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Debian's Chromium, headless, driven by Playwright (no browser download)."""
    from playwright.async_api import async_playwright

    exe = shutil.which("chromium") or "/usr/bin/chromium"
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


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


@pytest.fixture(scope="session")
def axe() -> str:
    src = axe_source()
    if src is None:
        pytest.skip("axe-core is not available (needs npm and the npm registry once; or set CABINET_AXE_DIR)")
    return src


__all__ = ["CHROMIUM_ARGS", "a11y_problems", "axe_violations"]  # the tests import them from here
