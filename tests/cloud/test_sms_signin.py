"""Phone sign-in with a one-time code through the pluggable SMS sender.

The code is read from what the sender was given (the ``log`` backend's own log line in one test),
never from the database: only its salted hash is stored.
"""

from __future__ import annotations

import logging
import re

import pytest
from sqlalchemy import select

from cloud.app import CTX, create_app
from cloud.config import SMS_BACKENDS, CloudConfig, ConfigError
from cloud.db import sms_codes, users
from cloud.sms import BACKENDS, LogSender, SmsFailed, SmsSender, build_sender, masked

PW = "correct horse battery"
PHONE = "+8613800138000"


class Outbox:
    """An SmsSender that keeps the messages (the Protocol is all a backend implements)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.fail = False

    def send(self, phone: str, text: str) -> None:
        if self.fail:
            raise SmsFailed("gateway down")
        self.sent.append((phone, text))

    def code(self, phone: str = PHONE) -> str:
        texts = [t for p, t in self.sent if p == phone]
        found = re.search(r"your code is (\d{6})", texts[-1])
        assert found, texts[-1]
        return found.group(1)


@pytest.fixture
def outbox() -> Outbox:
    return Outbox()


@pytest.fixture
async def client(aiohttp_client, db_url, clock, outbox):
    cfg = CloudConfig(database=db_url, scrypt_n=2**10, webhook_secret="whsec", sms_max_per_phone=3,
                      sms_max_per_ip=8, sms_max_attempts=3)  # fmt: skip
    app = create_app(cfg, clock=clock, command_sink=lambda c: None, background=False)
    app[CTX].phone_sign_in.sender = outbox
    return await aiohttp_client(app)


async def start(client, phone: str = PHONE, status: int = 202) -> dict:
    r = await client.post("/api/auth/sms/start", json={"phone": phone})
    assert r.status == status, await r.text()
    return await r.json()


async def verify(client, code: str, phone: str = PHONE, status: int = 200, headers=None) -> dict:
    r = await client.post("/api/auth/sms/verify", json={"phone": phone, "code": code}, headers=headers or {})
    assert r.status == status, await r.text()
    return await r.json()


def bearer(answer: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {answer['token']}"}


async def test_first_verify_signs_up_and_the_next_signs_in_to_the_same_account(client, outbox) -> None:
    assert (await start(client))["expires_in_s"] == 300
    first = await verify(client, outbox.code())
    assert first["created"] is True and first["user"]["phone"] == PHONE and first["user"]["email"] is None
    assert first["user"]["role"] == "renter"
    me = await (await client.get("/api/me", headers=bearer(first))).json()
    assert (me["phone"], me["email"]) == (PHONE, None)
    await start(client)
    again = await verify(client, outbox.code())
    assert again["created"] is False and again["user"]["id"] == first["user"]["id"]
    assert again["token"] != first["token"]
    # the renter can put a card on the account like any other
    r = await client.put("/api/me/card", headers=bearer(again), json={"card_token": "tok_ok"})
    assert r.status == 200 and (await r.json())["has_card"] is True


async def test_the_code_is_random_stored_hashed_and_works_once(client, outbox) -> None:
    codes = set()
    for phone in ("+4915112345678", "+4915112345679", "+4915112345670"):
        await start(client, phone)
        codes.add(outbox.code(phone))
    assert len(codes) == 3 and all(len(c) == 6 and c.isdigit() for c in codes)
    await start(client)
    code = outbox.code()
    with client.server.app[CTX].engine.connect() as conn:
        stored = conn.execute(select(sms_codes).where(sms_codes.c.phone == PHONE)).mappings().one()
    assert code not in str(dict(stored)) and len(stored["code_hash"]) == 64
    await verify(client, code)
    body = await verify(client, code, status=401)  # used
    assert body["error"] == "code_rejected"


async def test_a_new_code_replaces_the_pending_one(client, outbox) -> None:
    await start(client)
    old = outbox.code()
    await start(client)
    new = outbox.code()
    if old != new:
        await verify(client, old, status=401)
    await verify(client, new)


async def test_codes_expire(client, outbox, clock) -> None:
    await start(client)
    clock.advance(301)
    assert "ask for a new one" in (await verify(client, outbox.code(), status=401))["message"]


async def test_wrong_tries_are_limited_per_code(client, outbox) -> None:
    await start(client)
    code = outbox.code()
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    assert "2 more tries" in (await verify(client, wrong, status=401))["message"]
    assert "1 more tries" in (await verify(client, wrong, status=401))["message"]
    assert "no tries left" in (await verify(client, wrong, status=401))["message"]
    await verify(client, code, status=401)  # the right code no longer opens anything: it is void


async def test_sending_is_throttled_per_phone_and_per_address(client, outbox, clock) -> None:
    for _ in range(3):
        await start(client)
    r = await client.post("/api/auth/sms/start", json={"phone": PHONE})
    assert r.status == 429 and int(r.headers["Retry-After"]) > 0
    assert (await r.json())["error"] == "sms_throttled"
    assert len(outbox.sent) == 3  # the refused one sent nothing
    for i in range(4):  # other phones, same address: 8 asks in all, the 9th refused
        await start(client, f"+4930123456{i:02d}")
    await start(client, "+4930123456999", status=429)
    clock.advance(901)  # a new window
    await start(client)


async def test_tries_are_throttled_per_address(client, outbox) -> None:
    for i in range(8):
        await verify(client, "000000", phone=f"+4930123457{i:02d}", status=401)
    r = await client.post("/api/auth/sms/verify", json={"phone": PHONE, "code": "000000"})
    assert r.status == 429 and "Retry-After" in r.headers


async def test_bad_numbers_and_codes_are_400(client, outbox) -> None:
    for phone in (
        "8613800138000",
        "+86 138 0013 8000",
        "+0123456789",
        "+12",
        "+1234567890123456",
        "",
        "+8613800138000\n",
    ):
        r = await client.post("/api/auth/sms/start", json={"phone": phone})
        assert r.status == 400, phone
    for code in ("12345", "1234567", "abcdef", "١٢٣٤٥٦"):
        r = await client.post("/api/auth/sms/verify", json={"phone": PHONE, "code": code})
        assert r.status == 400, code
    assert outbox.sent == []


async def test_email_accounts_keep_working_and_can_add_a_phone(client, outbox) -> None:
    r = await client.post("/api/users", json={"email": "ana@example.com", "password": PW})
    assert r.status == 201
    login = await (await client.post("/api/login", json={"email": "ana@example.com", "password": PW})).json()
    await start(client)
    linked = await verify(client, outbox.code(), headers=bearer(login))
    assert linked["created"] is False and linked["user"]["id"] == login["user"]["id"]
    assert (linked["user"]["email"], linked["user"]["phone"]) == ("ana@example.com", PHONE)
    await start(client)
    by_phone = await verify(client, outbox.code())  # the phone now opens the email account
    assert by_phone["user"]["id"] == login["user"]["id"]
    r = await client.post("/api/login", json={"email": "ana@example.com", "password": PW})
    assert r.status == 200  # and so does the password
    # another account cannot take the same phone
    await client.post("/api/users", json={"email": "bo@example.com", "password": PW})
    bo = await (await client.post("/api/login", json={"email": "bo@example.com", "password": PW})).json()
    await start(client)
    assert (await verify(client, outbox.code(), headers=bearer(bo), status=409))["error"] == "phone_taken"
    await verify(client, "123456", headers={"Authorization": "Bearer nonsense"}, status=401)


async def test_operators_do_not_sign_in_by_phone(client, outbox) -> None:
    ctx = client.server.app[CTX]
    ctx.accounts.register("ops@example.com", PW, role="operator")
    ops = await (await client.post("/api/login", json={"email": "ops@example.com", "password": PW})).json()
    await start(client)
    await verify(client, outbox.code(), headers=bearer(ops), status=400)
    with ctx.engine.connect() as conn:
        assert conn.execute(select(users.c.phone).where(users.c.role == "operator")).scalar_one() is None


async def test_deleting_the_account_frees_and_erases_the_phone(client, outbox) -> None:
    await start(client)
    first = await verify(client, outbox.code())
    assert (await client.delete("/api/me", headers=bearer(first))).status == 204
    with client.server.app[CTX].engine.connect() as conn:
        assert (
            conn.execute(select(users.c.phone).where(users.c.id == first["user"]["id"])).scalar_one() is None
        )
    await start(client)
    second = await verify(client, outbox.code())
    assert second["created"] is True and second["user"]["id"] != first["user"]["id"]


async def test_a_failing_backend_is_a_503_and_phone_registration_emails_are_reserved(client, outbox) -> None:
    outbox.fail = True
    r = await client.post("/api/auth/sms/start", json={"phone": PHONE})
    assert r.status == 503 and (await r.json())["error"] == "sms_unavailable"
    r = await client.post("/api/users", json={"email": "8613800138000@phone.invalid", "password": PW})
    assert r.status == 400


# --- the pluggable sender ------------------------------------------------------------------------


def test_the_log_backend_writes_the_code_to_the_log_with_the_number_masked(caplog) -> None:
    sender = build_sender(CloudConfig())
    assert isinstance(sender, LogSender) and isinstance(sender, SmsSender)
    with caplog.at_level(logging.WARNING, logger="cloud.sms"):
        sender.send(PHONE, "your code is 123456")
    assert caplog.messages == ["SMS to +861380013****: your code is 123456"]
    assert masked(PHONE) == "+861380013****" and PHONE not in caplog.text


def test_sms_backend_is_a_checked_config_key() -> None:
    assert set(BACKENDS) == set(SMS_BACKENDS)
    assert CloudConfig.from_mapping({"sms_backend": "log"}).sms_backend == "log"
    with pytest.raises(ConfigError, match="sms_backend"):
        CloudConfig.from_mapping({"sms_backend": "carrier-pigeon"})
    with pytest.raises(ConfigError, match="sms_code_ttl_s"):
        CloudConfig.from_mapping({"sms_code_ttl_s": 0})
