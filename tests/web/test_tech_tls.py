"""The technician UI over TLS (issue 11.6): HTTPS with the cabinet's provisioned certificate on the
venue-facing listener, plain HTTP only on loopback for the kiosk browser."""

from __future__ import annotations

import ipaddress
from typing import Any

import aiohttp
import pytest

from tests.web.conftest import start_web


async def test_tech_ui_answers_over_https_with_the_provisioned_cabinet_certificate(make_rig: Any) -> None:
    web = await start_web(make_rig)
    async with web.tech_client() as s:  # trusts only the test fleet CA; checks the chain and purpose
        r = await s.get("/tech/login")
        assert r.status == 200
        assert "<form" in await r.text()
    s, csrf = await web.technician()  # log-in and an action over HTTPS
    async with s:
        r = await s.get("/api/slots")
        assert r.status == 200 and csrf


async def test_the_https_listener_does_not_answer_plain_http(make_rig: Any) -> None:
    web = await start_web(make_rig)
    plain = web.tech_url.replace("https://", "http://")
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.ClientError):
            r = await s.get(plain + "/tech/login")
            await r.read()


async def test_the_https_listener_refuses_a_client_that_does_not_trust_the_fleet_ca(make_rig: Any) -> None:
    web = await start_web(make_rig)
    async with aiohttp.ClientSession() as s:  # the system CAs only
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await s.get(web.tech_url + "/tech/login")


async def test_kiosk_stays_on_loopback_plain_http(make_rig: Any) -> None:
    web = await start_web(make_rig)
    async with web.client() as s:
        r = await s.get("/kiosk")
        assert r.status == 200
    plain = [a for a in web.ui._runner.addresses if a[1] == web.ui.bound_port]
    assert plain and all(ipaddress.ip_address(a[0]).is_loopback for a in plain), plain


async def test_without_a_certificate_there_is_no_https_listener(make_rig: Any) -> None:
    web = await start_web(make_rig, web={"tls_cert_file": "", "tls_key_file": ""})
    assert web.ui.tls is None and not web.tech_url
    assert all(a[1] != web.ui.tech_port for a in web.ui._runner.addresses)
    s, _ = await web.technician()  # on loopback only
    async with s:
        assert (await s.get("/tech")).status == 200
