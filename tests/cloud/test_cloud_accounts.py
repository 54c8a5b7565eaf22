"""Accounts: real KDF, rate-limited login, hashed session tokens, erasure that keeps money records."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select

from cloud import money
from cloud.db import sessions, users
from cloud.users import (
    Accounts,
    AlreadyRegistered,
    LoginFailed,
    LoginThrottled,
    NotAuthenticated,
    UserError,
    check_password,
    hash_password,
)

PW = "correct horse battery"


@pytest.fixture
def accounts(engine, clock):
    return Accounts(engine, clock, scrypt_n=2**10, max_failures_account=3, max_failures_ip=5, window_s=600)


def test_password_is_stored_as_salted_scrypt():
    a, b = hash_password(PW, 2**10), hash_password(PW, 2**10)
    assert a.startswith("scrypt$1024$") and a != b and PW not in a
    assert check_password(PW, a) and not check_password(PW + "!", a) and not check_password(PW, None)


def test_register_login_and_session_token_hashed_at_rest(accounts, engine):
    user = accounts.register("Ana@Example.com", PW, "Ana")
    assert user.email == "ana@example.com"
    with pytest.raises(AlreadyRegistered):
        accounts.register("ana@example.com", PW)
    session = accounts.login("ANA@example.com ", PW, ip="10.0.0.1")
    assert accounts.authenticate(session.token) == user
    with engine.connect() as conn:
        stored = conn.execute(select(sessions.c.token_hash)).scalars().all()
    assert stored == [hashlib.sha256(session.token.encode()).hexdigest()]
    accounts.logout(session.token)
    with pytest.raises(NotAuthenticated, match="logged out"):
        accounts.authenticate(session.token)


def test_session_expires(accounts, clock):
    accounts.register("ana@example.com", PW)
    session = accounts.login("ana@example.com", PW)
    clock.advance(accounts.session_ttl_s + 1)
    with pytest.raises(NotAuthenticated, match="expired"):
        accounts.authenticate(session.token)


@pytest.mark.parametrize(
    ("email", "password", "match"), [("nope", PW, "address"), ("a@b.cd", "short", "at least")]
)
def test_register_rejects_bad_input(accounts, email, password, match):
    with pytest.raises(UserError, match=match):
        accounts.register(email, password)


def test_login_is_throttled_per_account_then_recovers(accounts, clock):
    accounts.register("ana@example.com", PW)
    for _ in range(3):
        with pytest.raises(LoginFailed):
            accounts.login("ana@example.com", "wrong password!", ip="10.0.0.1")
    with pytest.raises(LoginThrottled) as err:
        accounts.login("ana@example.com", PW, ip="10.0.0.2")  # even the right password, from elsewhere
    assert 0 < err.value.retry_after_s <= 601
    clock.advance(601)
    assert accounts.login("ana@example.com", PW, ip="10.0.0.2").user.email == "ana@example.com"


def test_login_is_throttled_per_ip_across_accounts(accounts):
    for i in range(5):
        with pytest.raises(LoginFailed):
            accounts.login(f"guess{i}@example.com", "whatever pass", ip="203.0.113.9")
    accounts.register("ana@example.com", PW)
    with pytest.raises(LoginThrottled, match="ip"):
        accounts.login("ana@example.com", PW, ip="203.0.113.9")
    assert accounts.login("ana@example.com", PW, ip="198.51.100.1")


def test_delete_account_erases_personal_data_but_keeps_money(world, clock):
    user = world.renter()
    session = world.accounts.login("ana@example.com", "correct horse battery")
    start = world.service.start_app_rental(user, "CAB-A")
    with pytest.raises(UserError, match="rental in progress"):
        world.accounts.delete(user)
    ev = world.event(
        "CAB-A", "rental_started", mono=1.0, boot="a", rental_id=start.rental_id, sn="S1", source="cloud"
    )
    world.service.on_rental_started("CAB-A", ev)
    clock.advance(3600)
    world.service.on_battery_returned(
        "CAB-A", world.event("CAB-A", "battery_returned", mono=3601.0, boot="a", sn="S1")
    )
    world.accounts.delete(user)
    with world.engine.connect() as conn:
        row = conn.execute(select(users).where(users.c.id == user)).mappings().one()
    assert (row["email"], row["name"], row["password_hash"], row["card_token"]) == (
        f"deleted-{user}@invalid",
        None,
        None,
        None,
    )
    with pytest.raises(NotAuthenticated):
        world.accounts.authenticate(session.token)
    with pytest.raises(LoginFailed):
        world.accounts.login("ana@example.com", "correct horse battery")
    assert world.service.rental(start.rental_id)["captured"] == 250
    assert money.check(world.engine) == []
