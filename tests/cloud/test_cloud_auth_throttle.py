"""Login and sign-up throttling that holds under concurrency and behind a reverse proxy (issue 11.6),
and the refusal to start with the public default webhook secret.

The concurrency tests run on SQLite and PostgreSQL (the ``engine`` fixture). Before the atomic
counters, every concurrent guess read the failure count before any of them had written it
(the scrypt time lies in between), so twenty parallel guesses all got a password check.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from unittest import mock

import pytest
from aiohttp.test_utils import make_mocked_request

from cloud.app import CTX, client_address, create_app
from cloud.config import CloudConfig, ConfigError
from cloud.users import Accounts, LoginFailed, LoginThrottled, SignupThrottled

PW = "correct horse battery"


def accounts_on(engine, clock, **kw) -> Accounts:
    return Accounts(
        engine, clock, max_failures_account=3, max_failures_ip=5, window_s=600, scrypt_n=2**12, **kw
    )


async def outcomes(calls) -> list[str]:
    results = await asyncio.gather(*(asyncio.to_thread(c) for c in calls), return_exceptions=True)
    return [type(r).__name__ for r in results]


async def test_concurrent_guesses_at_one_account_get_at_most_the_limit_of_password_checks(
    engine, clock
) -> None:
    accounts = accounts_on(engine, clock)
    accounts.register("ana@example.com", PW)
    calls = [
        lambda i=i: accounts.login("ana@example.com", f"wrong guess {i}", ip=f"10.0.0.{i}") for i in range(20)
    ]
    got = await outcomes(calls)
    assert got.count("LoginFailed") == 3, got
    assert got.count("LoginThrottled") == 17, got
    with pytest.raises(LoginThrottled):
        accounts.login("ana@example.com", PW, ip="10.0.1.1")


async def test_concurrent_guesses_from_one_address_get_at_most_the_limit_of_password_checks(
    engine, clock
) -> None:
    accounts = accounts_on(engine, clock)
    calls = [
        lambda i=i: accounts.login(f"guess{i}@example.com", "whatever pass", ip="203.0.113.9")
        for i in range(20)
    ]
    got = await outcomes(calls)
    assert got.count("LoginFailed") == 5, got
    assert got.count("LoginThrottled") == 15, got


def test_a_success_clears_the_account_and_gives_back_its_place_at_the_address(engine, clock) -> None:
    accounts = accounts_on(engine, clock)
    accounts.register("ana@example.com", PW)
    for _ in range(2):
        with pytest.raises(LoginFailed):
            accounts.login("ana@example.com", "wrong password!", ip="10.0.0.1")
    for _ in range(10):  # successes never use up the address's or the account's allowance
        accounts.login("ana@example.com", PW, ip="10.0.0.1")
    for _ in range(3):
        with pytest.raises(LoginFailed):
            accounts.login("ana@example.com", "wrong password!", ip="10.0.0.1")
    with pytest.raises(LoginThrottled, match="account"):
        accounts.login("ana@example.com", PW, ip="10.0.0.1")
    clock.advance(601)
    assert accounts.login("ana@example.com", PW, ip="10.0.0.1")


def test_sign_ups_are_throttled_per_address_and_recover(engine, clock) -> None:
    accounts = accounts_on(engine, clock, max_signups_ip=3, signup_window_s=3600)
    for i in range(3):
        accounts.register(f"u{i}@example.com", PW, ip="203.0.113.9")
    with pytest.raises(SignupThrottled) as err:
        accounts.register("u9@example.com", PW, ip="203.0.113.9")
    assert 0 < err.value.retry_after_s <= 3601
    accounts.register("other@example.com", PW, ip="198.51.100.1")
    accounts.register("by-an-operator@example.com", PW)  # the CLI and operators: no address, no limit
    clock.advance(3601)
    accounts.register("u9@example.com", PW, ip="203.0.113.9")


# --- the client address behind a proxy --------------------------------------------------------


def request(peer: str, *forwarded: str):
    headers = [("X-Forwarded-For", f) for f in forwarded]
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        (peer, 443) if name == "peername" else default
    )
    from multidict import CIMultiDict

    return make_mocked_request("POST", "/api/login", headers=CIMultiDict(headers), transport=transport)


def nets(*cidrs: str):
    import ipaddress

    return tuple(ipaddress.ip_network(c) for c in cidrs)


def test_forwarded_for_is_believed_only_from_a_configured_proxy() -> None:
    assert client_address(request("203.0.113.9", "198.51.100.1"), ()) == "203.0.113.9"
    assert client_address(request("203.0.113.9", "198.51.100.1"), nets("10.0.0.0/8")) == "203.0.113.9"
    proxies = nets("10.0.0.0/8", "fd00::/8")
    assert client_address(request("10.0.0.2", "198.51.100.1"), proxies) == "198.51.100.1"
    # the client's own (spoofed) entries are to the left of what the proxies appended
    assert client_address(request("10.0.0.2", "1.2.3.4, 198.51.100.1, 10.0.0.7"), proxies) == "198.51.100.1"
    assert client_address(request("10.0.0.2", "1.2.3.4", "198.51.100.1"), proxies) == "198.51.100.1"
    assert client_address(request("10.0.0.2", "2001:db8::1"), proxies) == "2001:db8::1"
    # no header, or garbage a proxy vouched for: the last trusted hop, never the garbage
    assert client_address(request("10.0.0.2"), proxies) == "10.0.0.2"
    assert client_address(request("10.0.0.2", "198.51.100.1, not-an-ip"), proxies) == "10.0.0.2"
    assert client_address(request("10.0.0.2", "é, 10.0.0.9"), proxies) == "10.0.0.9"


@pytest.fixture
async def proxied(aiohttp_client, db_url, clock):
    """The API behind a reverse proxy on loopback (the test client connects from 127.0.0.1)."""
    cfg = CloudConfig(database=db_url, scrypt_n=2**10, webhook_secret="whsec", login_max_failures_ip=3,
                      login_max_failures_account=100, signup_max_per_ip=2, trusted_proxies=["127.0.0.0/8"])  # fmt: skip
    return await aiohttp_client(create_app(cfg, clock=clock, background=False))


async def test_login_throttling_behind_the_proxy_is_per_client_not_per_proxy(proxied) -> None:
    proxied.server.app[CTX].accounts.register("ana@example.com", PW)
    attacker = {"X-Forwarded-For": "203.0.113.9"}
    for i in range(3):
        spoofed = {"X-Forwarded-For": f"192.0.2.{i}, 203.0.113.9"}  # a made-up first hop changes nothing
        r = await proxied.post(
            "/api/login", json={"email": f"g{i}@example.com", "password": "x" * 10}, headers=spoofed
        )
        assert r.status == 401
    r = await proxied.post("/api/login", json={"email": "ana@example.com", "password": PW}, headers=attacker)
    assert r.status == 429 and (await r.json())["error"] == "login_throttled"
    # Ana, behind the same proxy but at another address, is not locked out by the attacker
    r = await proxied.post("/api/login", json={"email": "ana@example.com", "password": PW},
                           headers={"X-Forwarded-For": "198.51.100.1"})  # fmt: skip
    assert r.status == 200, await r.text()


async def test_sign_ups_behind_the_proxy_are_throttled_per_client(proxied) -> None:
    for i in range(2):
        r = await proxied.post("/api/users", json={"email": f"u{i}@example.com", "password": PW},
                               headers={"X-Forwarded-For": "203.0.113.9"})  # fmt: skip
        assert r.status == 201
    r = await proxied.post("/api/users", json={"email": "u3@example.com", "password": PW},
                           headers={"X-Forwarded-For": "203.0.113.9"})  # fmt: skip
    assert r.status == 429 and (await r.json())["error"] == "signup_throttled"
    assert int(r.headers["Retry-After"]) > 0
    r = await proxied.post("/api/users", json={"email": "u3@example.com", "password": PW},
                           headers={"X-Forwarded-For": "198.51.100.1"})  # fmt: skip
    assert r.status == 201


# --- config ------------------------------------------------------------------------------------


def test_trusted_proxies_and_mode_are_checked() -> None:
    assert CloudConfig().trusted_proxies == [] and CloudConfig().mode == "production"
    cfg = CloudConfig.from_mapping({"trusted_proxies": ["10.0.0.0/8", "::1"]})
    assert cfg.trusted_proxies == ["10.0.0.0/8", "::1"]
    with pytest.raises(ConfigError, match="trusted_proxies"):
        CloudConfig.from_mapping({"trusted_proxies": ["10.0.0.0/33"]})
    with pytest.raises(ConfigError, match="list of strings"):
        CloudConfig.from_mapping({"trusted_proxies": "10.0.0.0/8"})
    with pytest.raises(ConfigError, match="mode"):
        CloudConfig.from_mapping({"mode": "prod"})


def test_the_default_webhook_secret_is_refused_outside_sandbox_and_demo_mode() -> None:
    with pytest.raises(ConfigError, match="webhook_secret is the public default"):
        CloudConfig().check_startable()
    CloudConfig(webhook_secret="a-real-secret-from-the-provider").check_startable()
    CloudConfig(mode="sandbox").check_startable()
    CloudConfig(mode="demo").check_startable()


def test_serve_with_the_default_webhook_secret_exits_with_one_line(tmp_path) -> None:
    cfg = tmp_path / "cloud.toml"
    cfg.write_text(f'[cloud]\ndatabase = "{tmp_path / "c.db"}"\nport = 1\n')
    proc = subprocess.run([sys.executable, "-m", "cloud.cli", "serve", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "webhook_secret is the public default" in lines[0], proc.stderr
    assert not (tmp_path / "c.db").exists()  # refused before touching anything
