"""The sandbox provider's hold life cycle, idempotency, and webhooks processed exactly once."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from cloud.db import webhooks_received
from cloud.payments import (
    SIGNATURE_HEADER,
    Declined,
    HoldExpired,
    IdempotencyConflict,
    InvalidRequest,
    SandboxProvider,
    WebhookInbox,
    WebhookRejected,
    sign,
)

SECRET = "whsec-test"


@pytest.fixture
def sandbox(engine, clock):
    return SandboxProvider(engine, clock, SECRET, hold_ttl_s=3600)


def test_partial_capture_releases_the_rest_and_refunds_up_to_capture(sandbox):
    hold = sandbox.authorize("tok_ok", 3500, "EUR", "k:hold")
    capture = sandbox.capture(hold.hold_ref, 750, "k:capture")
    assert (capture.amount, capture.released) == (750, 2750)
    assert sandbox.refund(hold.hold_ref, 500, "k:refund:1").refunded_total == 500
    with pytest.raises(InvalidRequest, match="refundable 250"):
        sandbox.refund(hold.hold_ref, 300, "k:refund:2")
    with pytest.raises(InvalidRequest, match="captured"):
        sandbox.capture(hold.hold_ref, 10, "k:capture:again")


def test_capture_cannot_exceed_the_hold(sandbox):
    hold = sandbox.authorize("tok_ok", 1000, "EUR", "k:hold")
    with pytest.raises(InvalidRequest, match="between 1 and the hold 1000"):
        sandbox.capture(hold.hold_ref, 1001, "k:capture")


@pytest.mark.parametrize(
    ("token", "amount", "code"),
    [
        ("tok_decline", 100, "card_declined"),
        ("tok_insufficient", 100, "insufficient_funds"),
        ("tok_expired", 100, "expired_card"),
        ("tok_limit_2000", 2001, "insufficient_funds"),
    ],
)
def test_test_cards_decline(sandbox, token, amount, code):
    with pytest.raises(Declined) as err:
        sandbox.authorize(token, amount, "EUR", "k:hold")
    assert err.value.code == code
    # the replay of the same key is the same decline, not a new attempt
    with pytest.raises(Declined) as again:
        sandbox.authorize(token, amount, "EUR", "k:hold")
    assert again.value.code == code


def test_limit_card_approves_up_to_its_limit(sandbox):
    assert sandbox.authorize("tok_limit_2000", 2000, "EUR", "k").amount == 2000


def test_unknown_card_token_is_an_invalid_request(sandbox):
    with pytest.raises(InvalidRequest, match="unknown sandbox card token"):
        sandbox.authorize("4111111111111111", 100, "EUR", "k")


def test_replay_returns_first_result_and_conflict_is_refused(sandbox):
    first = sandbox.authorize("tok_ok", 1000, "EUR", "k:hold")
    assert sandbox.authorize("tok_ok", 1000, "EUR", "k:hold") == first
    c1 = sandbox.capture(first.hold_ref, 400, "k:cap")
    assert sandbox.capture(first.hold_ref, 400, "k:cap") == c1
    with pytest.raises(IdempotencyConflict):
        sandbox.capture(first.hold_ref, 401, "k:cap")


def test_hold_expires_after_its_time(sandbox, clock):
    hold = sandbox.authorize("tok_ok", 1000, "EUR", "k:hold")
    clock.advance(3600)
    with pytest.raises(HoldExpired, match="expired"):
        sandbox.capture(hold.hold_ref, 100, "k:cap")
    assert sandbox.hold_status(hold.hold_ref)["status"] == "expired"
    assert sandbox.void(hold.hold_ref, "k:void").released == 0


def test_expire_holds_sweeps_only_due_holds(sandbox, clock):
    old = sandbox.authorize("tok_ok", 1000, "EUR", "k:1")
    clock.advance(1800)
    young = sandbox.authorize("tok_ok", 1000, "EUR", "k:2")
    clock.advance(1800)
    assert sandbox.expire_holds() == [old.hold_ref]
    assert sandbox.hold_status(young.hold_ref)["status"] == "held"


def test_webhooks_are_delayed_repeated_and_processed_once(engine, clock):
    sandbox = SandboxProvider(engine, clock, SECRET, webhook_delay_s=30, webhook_copies=3)
    inbox = WebhookInbox(engine, "sandbox", SECRET, clock)
    hold = sandbox.authorize("tok_ok", 1000, "EUR", "k:hold")
    sandbox.void(hold.hold_ref, "k:void")
    assert sandbox.due_webhooks() == []
    clock.advance(30)
    deliveries = sandbox.due_webhooks()
    assert len(deliveries) == 6  # two events, three copies each
    outcomes = [inbox.handle(d.body, d.headers[SIGNATURE_HEADER]) for d in deliveries]
    assert sum(not o.duplicate for o in outcomes) == 2
    assert {o.type for o in outcomes} == {"hold.authorized", "hold.voided"}
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(webhooks_received)).scalar_one() == 2
    assert sandbox.due_webhooks() == []


def test_webhook_with_bad_signature_or_old_timestamp_is_rejected(engine, clock):
    inbox = WebhookInbox(engine, "sandbox", SECRET, clock, tolerance_s=300)
    body = json.dumps({"id": "evt_1", "type": "hold.voided", "data": {}}).encode()
    now = int(clock())
    with pytest.raises(WebhookRejected, match="does not match"):
        inbox.handle(body, sign("other-secret", body, now))
    with pytest.raises(WebhookRejected, match="does not match"):
        inbox.handle(body + b" ", sign(SECRET, body, now))
    with pytest.raises(WebhookRejected, match="tolerance"):
        inbox.handle(body, sign(SECRET, body, now - 301))
    with pytest.raises(WebhookRejected, match="missing"):
        inbox.handle(body, None)
    with pytest.raises(WebhookRejected, match="malformed"):
        inbox.handle(body, "v1=abc")
    assert not inbox.handle(body, sign(SECRET, body, now - 299)).duplicate
