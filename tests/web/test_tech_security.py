"""Technician log-in, sessions, CSRF, audited actions and the diagnostics bundle."""

from __future__ import annotations

import asyncio
import io
import logging
import tarfile

import pytest

from cabinet.web.auth import Throttle
from tests.web.conftest import PASSWORD, Web


async def test_fresh_cabinet_logs_a_setup_code_and_has_no_default_password(make_rig, caplog) -> None:
    from tests.web.conftest import start_web

    caplog.set_level(logging.WARNING)
    web = await start_web(make_rig)
    logged = [r.getMessage() for r in caplog.records if "setup code" in r.getMessage()]
    assert len(logged) == 1 and web.setup_code in logged[0]
    async with web.client() as s:
        for user, password in (("admin", "admin"), ("technician", "cabinet")):  # 2 of the 3 free failures
            r = await s.post("/api/tech/login", json={"user": user, "password": password})
            assert r.status in (401, 429)
        wrong = await s.post(
            "/api/tech/setup", json={"code": "AAAA-BBBB-CCCC", "user": "ana", "password": PASSWORD}
        )
        assert wrong.status == 401
    async with web.client() as s:
        ok = await s.post(
            "/api/tech/setup", json={"code": web.setup_code.lower(), "user": "ana", "password": PASSWORD}
        )
        assert ok.status == 200
        cookie = ok.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        again = await s.post("/api/tech/setup", json={"code": "x", "user": "bob", "password": PASSWORD})
        assert again.status == 409  # the code was one-time
    async with web.client() as s:
        assert (await s.post("/api/tech/login", json={"user": "ana", "password": PASSWORD})).status == 200
    stored = web.ui.credentials.path.read_text()
    assert PASSWORD not in stored and '"kdf": "scrypt"' in stored
    assert web.ui.credentials.path.stat().st_mode & 0o077 == 0
    actions = [(e.body["technician"], e.body["action"]) for e in await web.rig.events("tech_action")]
    assert actions == [("ana", "setup"), ("ana", "login")]


async def test_brute_force_is_throttled_per_user_and_per_address(web: Web) -> None:
    s0, _ = await web.technician("ana")
    await s0.close()
    web.ui.throttle = Throttle(free=3, base_s=30.0)
    async with web.client() as s:
        codes = []
        for i in range(5):
            r = await s.post("/api/tech/login", json={"user": "ana", "password": f"guess-{i}"})
            codes.append(r.status)
        assert codes == [401, 401, 401, 401, 429]
        assert int(r.headers["Retry-After"]) >= 29
        # the right password is refused too while the back-off lasts: guessing gains nothing
        r = await s.post("/api/tech/login", json={"user": "ana", "password": PASSWORD})
        assert r.status == 429
        # another user name from the same address is blocked by the address counter
        r = await s.post("/api/tech/login", json={"user": "bob", "password": "whatever-long"})
        assert r.status == 429
    kinds = [e.body["kind"] for e in await web.rig.events("security_event")]
    assert "tech_login_throttled" in kinds


def test_throttle_backs_off_exponentially_and_forgets_on_success() -> None:
    now = [0.0]
    t = Throttle(free=2, base_s=1.0, max_s=8.0, clock=lambda: now[0])
    waits = []
    for _ in range(7):
        t.failed("user:a")
        waits.append(t.wait_s("user:a"))
    assert waits == [0.0, 0.0, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert t.wait_s("user:b") == 0.0
    now[0] = 8.0
    assert t.wait_s("user:a") == 0.0
    t.succeeded("user:a")
    t.failed("user:a")
    assert t.wait_s("user:a") == 0.0


async def test_actions_need_a_session_and_the_csrf_token(web: Web) -> None:
    s, csrf = await web.technician()
    async with web.client() as anonymous:
        r = await anonymous.post("/api/tech/slots/4/quarantine", json={"reason": "test"})
        assert r.status == 401
    async with s:
        no_token = await s.post("/api/tech/slots/4/quarantine", json={"reason": "test"})
        wrong = await s.post(
            "/api/tech/slots/4/quarantine", json={"reason": "test"}, headers={"X-CSRF-Token": "forged"}
        )
        cross_site = await s.post(
            "/api/tech/slots/4/quarantine",
            json={"reason": "test"},
            headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"},
        )
        get = await s.get("/api/tech/slots/4/quarantine")
        assert (no_token.status, wrong.status, cross_site.status, get.status) == (403, 403, 403, 405)
        assert not (await web.rig.ledger.slot(4) or type("S", (), {"quarantined": False})).quarantined
        ok = await s.post(
            "/api/tech/slots/4/quarantine", json={"reason": "contacts bent"}, headers={"X-CSRF-Token": csrf}
        )
        assert ok.status == 200
    assert (await web.rig.ledger.slot(4)).quarantined
    audit = [e.body for e in await web.rig.events("tech_action") if e.body["action"] == "quarantine_slot"]
    assert audit == [{"technician": "ana", "action": "quarantine_slot", "detail": "slot 4: contacts bent"}]


async def test_session_ends_after_idle_and_absolute_timeouts(web: Web) -> None:
    now = [1000.0]
    web.ui.sessions.clock = lambda: now[0]
    idle, most = web.ui.sessions.idle_s, web.ui.sessions.max_s
    s, _ = await web.technician()
    async with s:
        assert (await s.get("/api/tech/me")).status == 200 and (await (await s.get("/api/tech/me")).json())[
            "user"
        ]
        now[0] += idle + 1
        assert (await (await s.get("/api/tech/me")).json())["user"] is None
        assert (await s.get("/tech", allow_redirects=False)).headers["Location"] == "/tech/login"
    s, _ = await web.technician()
    async with s:
        start = now[0]
        while now[0] - start <= most:  # active all along: only the absolute timeout ends it
            now[0] += idle / 2
            user = (await (await s.get("/api/tech/me")).json())["user"]
            if now[0] - start <= most:
                assert user == "ana"
        assert user is None


async def test_unlock_needs_a_reason_and_is_audited(web: Web) -> None:
    s, csrf = await web.technician()
    h = {"X-CSRF-Token": csrf}
    async with s:
        r = await s.post("/api/tech/slots/6/unlock", json={"reason": "  "}, headers=h)
        assert r.status == 400
        r = await s.post("/api/tech/slots/99/unlock", json={"reason": "x"}, headers=h)
        assert r.status == 404
        unlock = asyncio.create_task(
            s.post("/api/tech/slots/5/unlock", json={"reason": "check the latch"}, headers=h)
        )
        await web.rig.until(lambda: web.rig.simcab.slot(5).presented, what="slot 5 to open")
        web.rig.simcab.take(5)
        r = await asyncio.wait_for(unlock, 10)
        assert (await r.json()) == {"ok": True, "slot": 5, "result": "opened, battery PB000005 taken out"}
    audit = [e.body for e in await web.rig.events("tech_action") if e.body["action"] == "unlock"]
    assert audit == [{"technician": "ana", "action": "unlock", "detail": "slot 5: check the latch"}]


async def test_battery_removed_for_repair_only_when_it_is_out(web: Web) -> None:
    rig = web.rig
    s, csrf = await web.technician()
    h = {"X-CSRF-Token": csrf}
    async with s:
        r = await s.post("/api/tech/batteries/PB000002/removed", json={"reason": "swollen"}, headers=h)
        assert r.status == 409 and "still in slot 2" in (await r.json())["error"]
        unlock = asyncio.create_task(
            s.post("/api/tech/slots/2/unlock", json={"reason": "swollen"}, headers=h)
        )
        await rig.until(lambda: rig.simcab.slot(2).presented, what="slot 2 to open")
        rig.simcab.take(2)
        assert "taken out" in (await (await asyncio.wait_for(unlock, 10)).json())["result"]
    b = await rig.ledger.battery("PB000002")
    assert b.place == "gone" and "ana" in b.gone_reason


async def test_self_test_and_event_export(web: Web) -> None:
    s, csrf = await web.technician()
    async with s:
        r = await s.post("/api/tech/selftest", headers={"X-CSRF-Token": csrf})
        j = await r.json()
        assert [c["name"] for c in j["checks"]] == ["bus", "locks", "ledger"]
        assert j["ok"] is True, j
        csv_text = await (await s.get("/api/tech/events?type=battery_seen&format=csv")).text()
        lines = csv_text.strip().splitlines()
        assert lines[0].startswith("seq,time_utc,type") and len(lines) == 1 + 4
        assert all(",battery_seen," in line for line in lines[1:])
        slot5 = await (await s.get("/api/tech/events?slot=5")).json()
        assert slot5["events"] and all(
            5 in (e["body"].get("slot"), e["body"].get("end_slot")) for e in slot5["events"]
        )
        bad = await s.get("/api/tech/events?since=yesterday")
        assert bad.status == 400 and "since" in (await bad.json())["error"]
    assert any(e.body["action"] == "self_test" for e in await web.rig.events("tech_action"))


@pytest.mark.parametrize("secret_key", ["sync.key_file"])
async def test_diagnostics_bundle_has_no_secrets(make_rig, secret_key: str) -> None:
    from tests.web.conftest import start_web

    web = await start_web(make_rig, sync={"key_file": "/etc/cabinet/tls/very-secret-client.key"})
    code = web.setup_code
    logging.getLogger("cabinet").warning("technician setup code: %s (test line)", code)
    s, csrf = await web.technician()
    async with s:
        r = await s.post("/api/tech/diagnostics", headers={"X-CSRF-Token": csrf})
        assert r.status == 200 and "attachment" in r.headers["Content-Disposition"]
        data = await r.read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = sorted(n.split("/", 1)[1] for n in tar.getnames())
        text = "".join(tar.extractfile(m).read().decode() for m in tar.getmembers())
    for want in ("config.json", "ledger-verify.txt", "bus-stats.json", "logs.txt", "health.json"):
        assert want in names
    assert "very-secret-client.key" not in text and code not in text and PASSWORD not in text
    assert "scrypt" not in text and "<redacted>" in text
    assert "OK (integrity" in text  # the ledger verify output is in the bundle
