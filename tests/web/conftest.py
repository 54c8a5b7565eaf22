"""A real cabinet against the simulator with its web UI on a free port, and HTTP clients for it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from tests.cabinet.conftest import Rig, cloud_keys, make_rig, rig  # noqa: F401 (fixtures)
from tests.conftest import free_port

PASSWORD = "correct horse battery"


@dataclass
class Web:
    """The rig plus its web address and the WebUI part."""

    rig: Rig
    url: str

    @property
    def ui(self) -> Any:
        return self.rig.cab.web

    @property
    def setup_code(self) -> str:
        return self.ui.setup.code

    def client(self) -> aiohttp.ClientSession:
        # unsafe=True: keep cookies from an IP address host (127.0.0.1)
        return aiohttp.ClientSession(self.url, cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def technician(self, user: str = "ana") -> tuple[aiohttp.ClientSession, str]:
        """A logged-in client (the first technician, set up with the setup code) and its CSRF token."""
        s = self.client()
        if self.ui.credentials.exists():
            r = await s.post("/api/tech/login", json={"user": user, "password": PASSWORD})
        else:
            r = await s.post(
                "/api/tech/setup", json={"code": self.setup_code, "user": user, "password": PASSWORD}
            )
        assert r.status == 200, await r.text()
        return s, (await r.json())["csrf"]


async def start_web(make_rig: Any, **over: Any) -> Web:  # noqa: F811
    port = free_port()
    over.setdefault("web", {})
    over["web"] = {"host": "127.0.0.1", "port": port, **over["web"]}
    rig = await make_rig(**over)  # noqa: F811
    await rig.until(lambda: rig.cab.web.bound_port, what="the web UI to listen")
    return Web(rig, f"http://127.0.0.1:{port}")


@pytest.fixture
async def web(make_rig: Any) -> AsyncIterator[Web]:  # noqa: F811
    """8 slots (packs in 1, 2, 3 at 50 %, 5), web UI on a free port, sync disabled."""
    yield await start_web(make_rig)


SETUP_RE = re.compile(r"setup code: ([A-Z0-9-]+)")
