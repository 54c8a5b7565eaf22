"""Contract tests of the Stripe provider: the adapter and the real ``stripe`` SDK against the local
fake (``tests/fakes/stripe_fake.py``), through a rental's whole money life and every failure
mode the fake plays (declines, 3-D Secure, a renter who never confirms, lapsed holds, disputes,
duplicated / delayed / reordered / early notifications, 5xx answers and timeouts), and each step
repeated by a new adapter instance (a cloud restart) with the same idempotency key.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from cloud.config import ConfigError
from cloud.payments.provider import (
    EVENT_KINDS,
    Declined,
    HoldExpired,
    IdempotencyConflict,
    InvalidRequest,
    PaymentError,
    ProviderEvent,
    ProviderUnavailable,
    StatementLine,
)
from cloud.payments.stripe_provider import (
    MIT_WINDOW_S,
    StripeEventIgnored,
    StripeProvider,
    card_token,
    parse_card_token,
)
from cloud.payments.webhooks import NotificationIgnored, WebhookRejected
from tests.fakes.stripe_fake import DEFAULT_WINDOW_S, DISPUTE_FEE, VISA_MIT_WINDOW_S, StripeFake

START = datetime(2026, 3, 2, 10, 0, tzinfo=UTC).timestamp()
DAY = date(2026, 3, 2)
VISA = "4242424242424242"
MASTERCARD = "5555555555554444"
DECLINES_ON_CHARGE = "4000000000000341"
NEEDS_3DS = "4000002760003184"


class Receiver:
    """The cloud's webhook endpoint in the test: records every delivery and answers 200."""

    def __init__(self) -> None:
        self.got: list[tuple[dict[str, str], bytes, float]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.got.append((dict(self.headers.items()), body, time.monotonic()))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/webhooks/stripe"

    def events(self, provider: StripeProvider) -> list[ProviderEvent]:
        """Every delivery so far, verified and normalised (the ones the cloud ignores left out)."""
        out = []
        for headers, body, _ in self.got:
            try:
                out.append(provider.parse_notification(headers, body))
            except StripeEventIgnored:
                continue
        return out

    def wait(self, n: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.got) < n:
            assert time.monotonic() < deadline, f"{len(self.got)} deliveries, expected {n}"
            time.sleep(0.02)


@pytest.fixture
def fake() -> Iterator[StripeFake]:
    with StripeFake(start_at=START) as f:
        yield f


@pytest.fixture
def receiver(fake: StripeFake) -> Iterator[Receiver]:
    r = Receiver()
    fake.webhook_url = r.url
    yield r
    r.server.shutdown()
    r.server.server_close()


def make(fake: StripeFake, timeout_s: float = 5.0, **kw: Any) -> StripeProvider:
    """A new adapter instance (a new cloud process), with credentials from its environment."""
    env = {"STRIPE_SECRET_KEY": fake.api_key, "STRIPE_WEBHOOK_SECRET": fake.webhook_secret}
    return StripeProvider(api_base=fake.url, environ=env, timeout_s=timeout_s, **kw)


def kinds(events: list[ProviderEvent]) -> list[str]:
    return [e.kind for e in events]


def saved_card(fake: StripeFake, provider: StripeProvider, number: str = VISA) -> str:
    setup = provider.save_card(None, f"user:{number}:card:0")
    assert fake.confirm_setup(setup["setup_intent"], number)
    return provider.confirmed_card_token(setup["setup_intent"])


# --- configuration ---------------------------------------------------------------------------


def test_credentials_come_from_the_named_variables_or_files_and_missing_ones_are_refused(
    fake: StripeFake, tmp_path: Any
) -> None:
    env = {"MY_SK": fake.api_key, "MY_WH": fake.webhook_secret}
    p = StripeProvider(secret_key_env="MY_SK", webhook_secret_env="MY_WH", environ=env, api_base=fake.url)
    assert p.name == "stripe" and not p.live
    with pytest.raises(ConfigError, match="MY_SK"):
        StripeProvider(
            secret_key_env="MY_SK", webhook_secret_env="MY_WH", environ={"MY_WH": fake.webhook_secret}
        )
    with pytest.raises(ConfigError, match="MY_WH"):
        StripeProvider(secret_key_env="MY_SK", webhook_secret_env="MY_WH", environ={"MY_SK": fake.api_key})
    with pytest.raises(ConfigError, match="secret API key"):
        StripeProvider(secret_key_env=None, environ=env)
    with pytest.raises(ConfigError, match="whsec_"):  # a secret in the wrong variable, value never shown
        StripeProvider(secret_key_env="MY_SK", webhook_secret_env="MY_SK", environ=env)
    key_file = tmp_path / "sk"
    key_file.write_text(fake.api_key + "\n")
    p = StripeProvider.from_config(
        {
            "stripe_secret_key_file": str(key_file),
            "stripe_webhook_secret_env": "MY_WH",
            "stripe_api_base": fake.url,
        },
        environ=env,
    )
    assert p.authorize(fake.add_card(), 100, "EUR", "cfg:hold:0").status == "held"
    with pytest.raises(ConfigError, match="cannot read"):
        StripeProvider.from_config({"stripe_secret_key_file": str(tmp_path / "nope")}, environ=env)
    with pytest.raises(ConfigError, match="stripe_secret_kee"):
        StripeProvider.from_config({"stripe_secret_kee": "x"}, environ=env)


def test_a_wrong_api_key_is_refused_as_such(fake: StripeFake) -> None:
    p = StripeProvider(
        api_base=fake.url,
        environ={"STRIPE_SECRET_KEY": "sk_test_wrong", "STRIPE_WEBHOOK_SECRET": fake.webhook_secret},
    )
    with pytest.raises(PaymentError) as e:
        p.authorize(fake.add_card(), 100, "EUR", "k")
    assert e.value.code == "provider_auth"


def test_card_tokens() -> None:
    assert parse_card_token(card_token("cus_1", "pm_2")) == ("cus_1", "pm_2")
    for bad in ("tok_ok", "cus_1", "pm_2:cus_1", "cus_1:pm_2:x", ""):
        with pytest.raises(InvalidRequest):
            parse_card_token(bad)


# --- the money life cycle --------------------------------------------------------------------


def test_save_a_card_hold_and_capture_part_of_it(fake: StripeFake, receiver: Receiver) -> None:
    p = make(fake, publishable_key=fake.publishable_key)
    setup = p.save_card(None, "user:U1:card:0")
    assert setup["customer"].startswith("cus_") and setup["client_secret"].startswith(setup["setup_intent"])
    assert setup["publishable_key"] == fake.publishable_key
    assert fake.obj(setup["setup_intent"])["usage"] == "off_session"
    with pytest.raises(InvalidRequest, match="not confirmed"):
        p.attach_confirmed_setup(setup["setup_intent"])
    pm = fake.confirm_setup(setup["setup_intent"], VISA)
    assert p.attach_confirmed_setup(setup["setup_intent"]) == pm
    token = p.confirmed_card_token(setup["setup_intent"])
    assert token == f"{setup['customer']}:{pm}"
    # a second card for the same customer reuses it
    again = p.save_card(setup["customer"], "user:U1:card:1")
    assert again["customer"] == setup["customer"] and again["setup_intent"] != setup["setup_intent"]

    hold = p.authorize(token, 3500, "EUR", "rental:R1:hold:0")
    assert (hold.status, hold.amount, hold.currency, hold.client_action) == ("held", 3500, "EUR", None)
    pi = fake.obj(hold.hold_ref)
    assert (pi["capture_method"], pi["status"], pi["amount_capturable"]) == (
        "manual",
        "requires_capture",
        3500,
    )
    charge = fake.obj(pi["latest_charge"])
    assert hold.expires_at == charge["payment_method_details"]["card"]["capture_before"]
    assert hold.expires_at == pytest.approx(charge["created"] + VISA_MIT_WINDOW_S)  # Visa, off session
    assert p.hold_status(hold.hold_ref) == "held"
    assert p.hold_expires_at(hold.hold_ref) == hold.expires_at

    cap = p.capture(hold.hold_ref, 500, "rental:R1:capture:0")
    assert (cap.hold_ref, cap.amount, cap.released, cap.capture_ref) == (
        hold.hold_ref,
        500,
        3000,
        pi["latest_charge"],
    )
    pi = fake.obj(hold.hold_ref)
    assert (pi["status"], pi["amount_received"], pi["amount_capturable"]) == ("succeeded", 500, 0)
    assert p.hold_status(hold.hold_ref) == "captured"
    assert p.hold_expires_at(hold.hold_ref) is None
    with pytest.raises(InvalidRequest):  # one capture per hold
        p.capture(hold.hold_ref, 100, "rental:R1:capture:1")

    fake.deliver()
    events = receiver.events(p)
    assert kinds(events) == ["hold.confirmed", "hold.captured"]
    assert all(e.kind in EVENT_KINDS for e in events)
    assert events[0].hold_ref == hold.hold_ref and events[0].amount == 3500 and events[0].currency == "EUR"
    assert events[1].amount == 500 and events[1].provider_type == "payment_intent.succeeded"
    assert events[1].data["ref"] == cap.capture_ref  # the payment record it confirms


def test_capture_in_full_and_the_mastercard_window(fake: StripeFake) -> None:
    p = make(fake)
    hold = p.authorize(fake.add_card(MASTERCARD), 3500, "EUR", "rental:R1:hold:0")
    assert hold.expires_at == pytest.approx(fake.obj(hold.hold_ref)["created"] + DEFAULT_WINDOW_S)
    cap = p.capture(hold.hold_ref, 3500, "rental:R1:capture:0")
    assert (cap.amount, cap.released) == (3500, 0)
    with pytest.raises(InvalidRequest):
        p.capture(fake.add_card(), 100, "k")  # not a hold at all
    with pytest.raises(InvalidRequest):
        p.capture("pi_missing", 100, "k2")


def test_void_releases_the_hold_once(fake: StripeFake, receiver: Receiver) -> None:
    p = make(fake)
    hold = p.authorize(fake.add_card(), 3500, "EUR", "rental:R1:hold:0")
    void = p.void(hold.hold_ref, "rental:R1:void:0")
    assert (void.hold_ref, void.released) == (hold.hold_ref, 3500)
    assert fake.obj(hold.hold_ref)["cancellation_reason"] == "abandoned"
    assert p.hold_status(hold.hold_ref) == "voided"
    assert p.void(hold.hold_ref, "rental:R1:void:0").released == 3500  # the same key: the same answer
    assert p.void(hold.hold_ref, "rental:R1:void:1").released == 0  # nothing left to release
    with pytest.raises(InvalidRequest):
        p.capture(hold.hold_ref, 100, "rental:R1:capture:0")
    captured = p.authorize(fake.add_card(), 1000, "EUR", "rental:R2:hold:0")
    p.capture(captured.hold_ref, 1000, "rental:R2:capture:0")
    with pytest.raises(InvalidRequest):
        p.void(captured.hold_ref, "rental:R2:void:0")
    fake.deliver()
    voided = [e for e in receiver.events(p) if e.kind == "hold.voided"]
    assert [(e.hold_ref, e.amount, e.data["ref"]) for e in voided] == [(hold.hold_ref, 3500, hold.hold_ref)]


def test_partial_refunds_up_to_the_capture(fake: StripeFake, receiver: Receiver) -> None:
    p = make(fake)
    hold = p.authorize(fake.add_card(), 3500, "EUR", "rental:R1:hold:0")
    with pytest.raises(InvalidRequest):  # nothing captured yet
        p.refund(hold.hold_ref, 100, "rental:R1:refund:0")
    p.capture(hold.hold_ref, 1000, "rental:R1:capture:0")
    r1 = p.refund(hold.hold_ref, 300, "rental:R1:refund:1")
    r2 = p.refund(hold.hold_ref, 200, "rental:R1:refund:2")
    assert (r1.amount, r1.refunded_total, r2.amount, r2.refunded_total) == (300, 300, 200, 500)
    assert r1.refund_ref.startswith("re_") and r1.refund_ref != r2.refund_ref
    with pytest.raises(InvalidRequest):
        p.refund(hold.hold_ref, 501, "rental:R1:refund:3")
    r3 = p.refund(hold.hold_ref, 500, "rental:R1:refund:4")
    assert r3.refunded_total == 1000
    assert p.refund(hold.hold_ref, 300, "rental:R1:refund:1") == r1  # replayed, not refunded twice
    assert fake.count("refunds.create") == 3
    fake.deliver()
    refunds = [e for e in receiver.events(p) if e.kind == "refund.succeeded"]
    assert [(e.hold_ref, e.amount, e.data["ref"]) for e in refunds] == [
        (hold.hold_ref, 300, r1.refund_ref),
        (hold.hold_ref, 200, r2.refund_ref),
        (hold.hold_ref, 500, r3.refund_ref),
    ]


# --- declines and the renter's confirmation -------------------------------------------------------


@pytest.mark.parametrize("case", ["declines_on_charge", "insufficient_funds", "expired_card"])
def test_declines_are_replayed_as_the_same_decline(fake: StripeFake, receiver: Receiver, case: str) -> None:
    p = make(fake)
    token = fake.add_card(DECLINES_ON_CHARGE if case == "declines_on_charge" else VISA)
    pm = token.split(":")[1]
    if case == "insufficient_funds":
        fake.set_funds(pm, 2000)
        assert p.authorize(token, 2000, "EUR", "rental:R0:hold:0").status == "held"  # within the funds
    if case == "expired_card":
        fake.expire_card(pm)
    expected = {"declines_on_charge": "card_declined"}.get(case, case)
    with pytest.raises(Declined) as e:
        p.authorize(token, 3500, "EUR", "rental:R1:hold:0")
    assert e.value.code == expected
    with pytest.raises(Declined) as again:
        make(fake).authorize(token, 3500, "EUR", "rental:R1:hold:0")
    assert again.value.code == expected
    assert fake.count("payment_intents.create") == (2 if case == "insufficient_funds" else 1)
    fake.deliver()
    failed = [ev for ev in receiver.events(p) if ev.kind == "payment.failed"]
    assert len(failed) == 1 and failed[0].data["decline_code"] in failed[0].data["reason"]
    assert failed[0].data["decline_code"] in (
        "generic_decline",
        "insufficient_funds",
        "expired_card",
    )


@pytest.mark.parametrize(
    ("number", "code"),
    [
        ("4000000000000002", "card_declined"),
        ("4000000000009995", "insufficient_funds"),
        ("4000000000000069", "expired_card"),
    ],
)
def test_a_card_refused_at_setup_is_declined(fake: StripeFake, number: str, code: str) -> None:
    p = make(fake)
    setup = p.save_card(None, "user:U1:card:0")
    assert fake.confirm_setup(setup["setup_intent"], number) is None
    with pytest.raises(Declined) as e:
        p.attach_confirmed_setup(setup["setup_intent"])
    assert e.value.code == code


def test_3ds_hold_is_pending_until_the_renter_confirms(fake: StripeFake, receiver: Receiver) -> None:
    p = make(fake)
    token = saved_card(fake, p, NEEDS_3DS)
    hold = p.authorize(token, 3500, "EUR", "rental:R1:hold:0")
    assert hold.status == "pending"
    assert hold.client_action is not None
    assert hold.client_action["client_secret"] == fake.obj(hold.hold_ref)["client_secret"]
    assert hold.client_action["payment_method"] == token.split(":")[1]
    assert p.hold_status(hold.hold_ref) == "pending"
    assert make(fake).authorize(token, 3500, "EUR", "rental:R1:hold:0") == hold  # a restart gets the same
    with pytest.raises(InvalidRequest):
        p.capture(hold.hold_ref, 100, "rental:R1:capture:0")
    fake.deliver()
    receiver.got.clear()

    fake.authenticate(hold.hold_ref)  # 3-D Secure on the phone, customer-initiated from now on
    fake.deliver()
    confirmed = [e for e in receiver.events(p) if e.kind == "hold.confirmed"]
    assert [(e.hold_ref, e.amount) for e in confirmed] == [(hold.hold_ref, 3500)]
    assert p.hold_status(hold.hold_ref) == "held"
    expires = p.hold_expires_at(hold.hold_ref)
    assert expires == pytest.approx(fake.now() + DEFAULT_WINDOW_S, abs=5)  # Visa, customer-initiated: 7 days
    with pytest.raises(InvalidRequest):  # the key's first answer (not capturable) is kept by Stripe
        p.capture(hold.hold_ref, 100, "rental:R1:capture:0")
    assert p.capture(hold.hold_ref, 700, "rental:R1:capture:1").released == 2800


def test_a_renter_who_fails_or_never_confirms_3ds(fake: StripeFake, receiver: Receiver) -> None:
    p = make(fake)
    token = fake.add_card(NEEDS_3DS)
    failing = p.authorize(token, 3500, "EUR", "rental:R1:hold:0")
    fake.authenticate(failing.hold_ref, ok=False)
    assert p.hold_status(failing.hold_ref) == "pending"  # may still try again on the phone
    fake.deliver()
    failed = [e for e in receiver.events(p) if e.kind == "payment.failed" and e.hold_ref == failing.hold_ref]
    assert [e.data["code"] for e in failed] == ["payment_intent_authentication_failure"]  # not the first 402

    never = p.authorize(token, 3500, "EUR", "rental:R2:hold:0")
    fake.advance(10 * 86400)  # no authorisation: nothing lapses, it stays pending
    assert p.hold_status(never.hold_ref) == "pending"
    assert p.void(never.hold_ref, "rental:R2:void:0").released == 0  # nothing was reserved
    assert p.hold_status(never.hold_ref) == "voided"
    fake.deliver()
    assert ("hold.voided", never.hold_ref) in [(e.kind, e.hold_ref) for e in receiver.events(p)]


@pytest.mark.parametrize("reason", ["expired", "automatic"])
def test_an_uncaptured_hold_lapses(fake: StripeFake, receiver: Receiver, reason: str) -> None:
    fake.expiry_reason = reason  # "automatic": an endpoint on an API version before 2025-03-31.basil
    p = make(fake)
    visa = p.authorize(fake.add_card(VISA), 3500, "EUR", "rental:R1:hold:0")
    mc = p.authorize(fake.add_card(MASTERCARD), 3500, "EUR", "rental:R2:hold:0")
    fake.advance(VISA_MIT_WINDOW_S - 60)
    assert p.hold_status(visa.hold_ref) == "held"
    fake.advance(120)
    assert (p.hold_status(visa.hold_ref), p.hold_status(mc.hold_ref)) == ("expired", "held")
    with pytest.raises(HoldExpired):
        p.capture(visa.hold_ref, 500, "rental:R1:capture:0")
    assert p.void(visa.hold_ref, "rental:R1:void:0").released == 0
    fake.advance(DEFAULT_WINDOW_S)
    with pytest.raises(HoldExpired):
        make(fake).capture(mc.hold_ref, 500, "rental:R2:capture:0")
    fake.deliver()
    expired = [e for e in receiver.events(p) if e.kind == "hold.expired"]
    assert [e.hold_ref for e in expired] == [visa.hold_ref, mc.hold_ref]
    assert expired[0].data["cancellation_reason"] == reason


# --- disputes, statement, payouts -------------------------------------------------------------


@pytest.mark.parametrize("won", [True, False])
def test_a_dispute_opens_and_closes(fake: StripeFake, receiver: Receiver, won: bool) -> None:
    p = make(fake)
    hold = p.authorize(fake.add_card(), 3500, "EUR", "rental:R1:hold:0")
    p.capture(hold.hold_ref, 1200, "rental:R1:capture:0")
    fake.deliver()
    receiver.got.clear()
    dp = fake.open_dispute(hold.hold_ref)
    fake.close_dispute(dp, won=won)
    fake.deliver()
    events = receiver.events(p)
    assert kinds(events) == ["dispute.opened", "dispute.funds_withdrawn"] + (
        ["dispute.funds_reinstated"] if won else []
    ) + ["dispute.closed"]
    assert {(e.hold_ref, e.amount, e.currency) for e in events} == {(hold.hold_ref, 1200, "EUR")}
    assert events[0].data["reason"] == "fraudulent"
    assert {e.data["dispute_ref"] for e in events} == {dp}
    assert events[-1].data["outcome"] == ("won" if won else "lost")
    assert all(e.data["withdraws_funds"] for e in events[1:])  # Stripe withholds at the open
    disputes = [line for line in p.statement(DAY) if line.kind == "dispute"]
    expected = [(dp, -1200), (f"{dp}:reinstated", 1200)] if won else [(dp, -1200)]
    assert [(line.provider_ref, line.amount) for line in disputes] == expected
    assert all(line.hold_ref == hold.hold_ref for line in disputes)


def test_the_statement_of_a_day_is_what_happened(fake: StripeFake) -> None:
    fake.advance(datetime(2026, 3, 2, 23, 59, 30, tzinfo=UTC).timestamp() - fake.now())  # late on the day
    p = make(fake, statement_page_size=2)  # several pages
    acct = fake.add_account()
    h1 = p.authorize(fake.add_card(), 3500, "EUR", "rental:R1:hold:0")
    cap = p.capture(h1.hold_ref, 1000, "rental:R1:capture:0")
    refund = p.refund(h1.hold_ref, 400, "rental:R1:refund:0")
    dp = fake.open_dispute(h1.hold_ref)
    payout = p.payout(acct, 300, "EUR", h1.hold_ref, "payout:M1:2026-03-02")
    voided = p.authorize(fake.add_card(), 3500, "EUR", "rental:R2:hold:0")
    p.void(voided.hold_ref, "rental:R2:void:0")  # a released hold moves no money
    fake.advance(60)  # the next day
    h3 = p.authorize(fake.add_card(), 3500, "EUR", "rental:R3:hold:0")
    p.capture(h3.hold_ref, 2000, "rental:R3:capture:0")

    lines = p.statement(DAY)
    fee = (1000 * 150 + 5000) // 10000 + 25
    # by the references our records carry: Capture.capture_ref, Refund.refund_ref, the dispute
    # (a lost one is booked as a chargeback under it), Payout.payout_ref
    assert [(line.provider_ref, line.kind, line.amount, line.hold_ref) for line in lines] == [
        (cap.capture_ref, "capture", 1000, h1.hold_ref),
        (f"{cap.capture_ref}:fee", "fee", -fee, h1.hold_ref),
        (refund.refund_ref, "refund", -400, h1.hold_ref),
        (dp, "dispute", -600, h1.hold_ref),
        (f"{dp}:fee", "fee", -DISPUTE_FEE, h1.hold_ref),
        (payout.payout_ref, "payout", -300, h1.hold_ref),
    ]
    assert {line.currency for line in lines} == {"EUR"}
    assert all(DAY == datetime.fromtimestamp(line.at, UTC).date() for line in lines)
    txns = {t["id"]: t for t in fake.objects["balance_transactions"].values()}
    assert sum(line.amount for line in lines) == sum(
        t["net"] for t in txns.values() if datetime.fromtimestamp(t["created"], UTC).date() == DAY
    )
    next_day = p.statement(date(2026, 3, 3))
    assert [(line.kind, line.hold_ref) for line in next_day] == [
        ("capture", h3.hold_ref),
        ("fee", h3.hold_ref),
    ]
    assert p.statement(date(2026, 3, 1)) == []
    assert fake.sent("balance_transactions.list") >= 4  # pages were followed


def test_payouts_are_connect_transfers_once_per_key(fake: StripeFake, receiver: Receiver) -> None:
    p = make(fake)
    acct = fake.add_account()
    hold = p.authorize(fake.add_card(), 3500, "EUR", "rental:R1:hold:0")
    p.capture(hold.hold_ref, 2000, "rental:R1:capture:0")
    out = p.payout(acct, 1500, "EUR", hold.hold_ref, "payout:M1:R1")
    assert (out.destination, out.amount, out.currency, out.status) == (acct, 1500, "EUR", "paid")
    tr = fake.obj(out.payout_ref)
    assert (tr["destination"], tr["source_transaction"], tr["transfer_group"]) == (
        acct,
        fake.obj(hold.hold_ref)["latest_charge"],
        hold.hold_ref,
    )
    assert make(fake).payout(acct, 1500, "EUR", hold.hold_ref, "payout:M1:R1") == out  # a restart
    with pytest.raises(IdempotencyConflict):
        p.payout(acct, 1400, "EUR", hold.hold_ref, "payout:M1:R1")
    with pytest.raises(InvalidRequest):  # more than the charge has left
        p.payout(acct, 600, "EUR", hold.hold_ref, "payout:M1:R1:b")
    plain = p.payout(acct, 100, "EUR", None, "payout:M1:2026-03-02")  # from the balance
    assert fake.obj(plain.payout_ref)["source_transaction"] is None
    with pytest.raises(InvalidRequest):
        p.payout(fake.add_account(), 10**6, "EUR", None, "payout:M2:big")  # the balance does not cover it
    with pytest.raises(InvalidRequest):
        p.payout("acct_unknown", 100, "EUR", None, "payout:M3")
    with pytest.raises(InvalidRequest):
        p.payout("merchant-3", 100, "EUR", None, "payout:M3")
    assert fake.count("transfers.create") == 2
    fake.deliver()
    paid = [e for e in receiver.events(p) if e.kind == "payout.paid"]
    assert [(e.amount, e.hold_ref, e.data["destination"], e.data["ref"]) for e in paid] == [
        (1500, hold.hold_ref, acct, out.payout_ref),
        (100, None, acct, plain.payout_ref),
    ]


# --- notifications ------------------------------------------------------------------------------


def test_notifications_are_verified_with_the_stripe_signature(fake: StripeFake, receiver: Receiver) -> None:
    p = make(fake)
    p.authorize(fake.add_card(), 3500, "EUR", "rental:R1:hold:0")
    fake.deliver()
    headers, body, _ = next(
        g for g in receiver.got if json.loads(g[1])["type"].startswith("payment_intent.amount")
    )
    assert "v0=" in headers["Stripe-Signature"]  # the test-mode v0 signature is ignored
    assert p.parse_notification(headers, body).kind == "hold.confirmed"
    lower = {k.lower(): v for k, v in headers.items()}
    assert p.parse_notification(lower, body).kind == "hold.confirmed"  # header names are case-blind

    tampered = body.replace(b'"amount": 3500', b'"amount": 35')
    assert tampered != body
    wrong_secret = StripeProvider(
        api_base=fake.url,
        environ={"STRIPE_SECRET_KEY": fake.api_key, "STRIPE_WEBHOOK_SECRET": "whsec_other"},
    )
    sig = headers["Stripe-Signature"]
    only_v0 = ",".join(part for part in sig.split(",") if not part.startswith("v1="))
    for bad_headers, bad_body, provider in [
        (headers, tampered, p),
        (headers, body, wrong_secret),
        ({}, body, p),
        ({"Stripe-Signature": only_v0}, body, p),
        ({"Stripe-Signature": "garbage"}, body, p),
        ({"Stripe-Signature": sig + ",v1=\u00e9"}, body, p),
        (headers, b"\xff" + body, p),
    ]:
        with pytest.raises(WebhookRejected) as e:
            provider.parse_notification(bad_headers, bad_body)
        assert not isinstance(e.value, StripeEventIgnored)

    for offset in (-400, 400):  # a replayed old delivery, or a clock far ahead
        fake.sign_offset_s = offset
        payload = fake.payload(fake.events[-1])
        with pytest.raises(WebhookRejected):
            p.parse_notification({"Stripe-Signature": fake.signature_header(payload)}, payload.encode())
    fake.sign_offset_s = 0
    ignored = next(g for g in receiver.got if json.loads(g[1])["type"] == "charge.succeeded")
    with pytest.raises(StripeEventIgnored) as ig:
        p.parse_notification(ignored[0], ignored[1])
    assert isinstance(ig.value, NotificationIgnored)  # the notify route acknowledges it with a 200


def test_duplicated_reordered_delayed_and_early_notifications(fake: StripeFake, receiver: Receiver) -> None:
    p = make(fake)
    token = fake.add_card()
    # before the API answer: the hold's notification arrives while the authorisation is in flight
    fake.deliver_before_response = True
    hold = p.authorize(token, 3500, "EUR", "rental:R1:hold:0")
    answered = time.monotonic()
    early = [e for e in receiver.events(p) if e.kind == "hold.confirmed"]
    assert [e.hold_ref for e in early] == [hold.hold_ref]
    assert all(at < answered for _, _, at in receiver.got)
    fake.deliver_before_response = False
    receiver.got.clear()

    # duplicated and in reverse order
    p.capture(hold.hold_ref, 900, "rental:R1:capture:0")
    p.refund(hold.hold_ref, 100, "rental:R1:refund:0")
    fake.deliver(order="lifo", copies=2)
    events = receiver.events(p)
    assert kinds(events) == ["refund.succeeded", "refund.succeeded", "hold.captured", "hold.captured"]
    assert events[0] == events[1] and events[2] == events[3]  # the same event id: the inbox applies it once
    receiver.got.clear()

    # delayed, twice
    fake.auto_deliver, fake.delivery_delay_s, fake.delivery_copies = True, 1.0, 2
    other = p.authorize(token, 1000, "EUR", "rental:R2:hold:0")
    assert not [e for e in receiver.events(p) if e.hold_ref == other.hold_ref]
    receiver.wait(2 * 3)  # payment_intent.created, charge.succeeded, amount_capturable_updated
    confirmed = [e for e in receiver.events(p) if e.kind == "hold.confirmed"]
    assert [e.hold_ref for e in confirmed] == [other.hold_ref, other.hold_ref]


# --- idempotency, restarts, server errors and timeouts ---------------------------------------------


def _steps(fake: StripeFake) -> dict[str, tuple[str, Callable[[StripeProvider], Any]]]:
    """Each money step, its fake op, and a call that repeats it with the same key."""
    token = fake.add_card()
    acct = fake.add_account()
    setup = make(fake)
    held = setup.authorize(token, 3500, "EUR", "setup:hold:1")
    captured = setup.authorize(token, 3500, "EUR", "setup:hold:2")
    setup.capture(captured.hold_ref, 2000, "setup:capture:2")
    return {
        "authorize": (
            "payment_intents.create",
            lambda p: p.authorize(token, 3500, "EUR", "rental:R9:hold:0"),
        ),
        "capture": (
            "payment_intents.capture",
            lambda p: p.capture(held.hold_ref, 800, "rental:R9:capture:0"),
        ),
        "void": ("payment_intents.cancel", lambda p: p.void(held.hold_ref, "rental:R9:void:0")),
        "refund": ("refunds.create", lambda p: p.refund(captured.hold_ref, 300, "rental:R9:refund:0")),
        "payout": ("transfers.create", lambda p: p.payout(acct, 500, "EUR", captured.hold_ref, "payout:R9")),
        "save_card": ("setup_intents.create", lambda p: p.save_card(token.split(":")[0], "card:R9")),
    }


STEPS = ["authorize", "capture", "void", "refund", "payout", "save_card"]


@pytest.mark.parametrize("step", STEPS)
def test_a_restart_in_the_middle_of_each_step_has_one_effect(fake: StripeFake, step: str) -> None:
    op, call = _steps(fake)[step]
    effects, sent = fake.count(op), fake.sent(op)
    fake.timeout_next(op, delay_s=0.6)  # the effect happens, the answer is lost: the process dies
    with pytest.raises(ProviderUnavailable):
        call(make(fake, timeout_s=0.25))
    first = call(make(fake))  # the new process repeats the step with the same key
    assert call(make(fake)) == first
    assert fake.count(op) == effects + 1
    # one request per call (the SDK does not retry); refunds and payouts are found before sending
    assert fake.sent(op) == sent + (1 if step in ("refund", "payout") else 3)


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("stage", ["edge", "stored", "after_effect"])
def test_server_errors_then_a_retry_with_the_same_key(fake: StripeFake, step: str, stage: str) -> None:
    op, call = _steps(fake)[step]
    before = fake.count(op)
    fake.fail_next(op, status=500 if stage != "edge" else 503, stage=stage)
    with pytest.raises(ProviderUnavailable):
        call(make(fake))
    first = call(make(fake))
    assert call(make(fake)) == first
    assert fake.count(op) == before + 1


def test_a_retry_while_the_first_request_still_runs_is_unavailable_then_replayed(fake: StripeFake) -> None:
    p = make(fake, timeout_s=0.25)
    token = fake.add_card()
    fake.timeout_next("payment_intents.create", delay_s=0.8, after_effect=False)
    with pytest.raises(ProviderUnavailable):
        p.authorize(token, 3500, "EUR", "rental:R1:hold:0")
    with pytest.raises(ProviderUnavailable, match="still running"):  # Stripe's 409 for a key in progress
        p.authorize(token, 3500, "EUR", "rental:R1:hold:0")
    time.sleep(0.8)
    hold = make(fake).authorize(token, 3500, "EUR", "rental:R1:hold:0")
    assert hold.status == "held" and fake.count("payment_intents.create") == 1


def test_the_same_key_for_another_request_is_a_conflict(fake: StripeFake) -> None:
    p = make(fake)
    token = fake.add_card()
    hold = p.authorize(token, 3500, "EUR", "rental:R1:hold:0")
    with pytest.raises(IdempotencyConflict):
        p.authorize(token, 3000, "EUR", "rental:R1:hold:0")
    p.capture(hold.hold_ref, 500, "rental:R1:capture:0")
    with pytest.raises(IdempotencyConflict):
        p.capture(hold.hold_ref, 600, "rental:R1:capture:0")
    p.refund(hold.hold_ref, 100, "rental:R1:refund:0")
    with pytest.raises(IdempotencyConflict):
        p.refund(hold.hold_ref, 200, "rental:R1:refund:0")
    with pytest.raises(IdempotencyConflict):  # a key used on another endpoint
        p.void(hold.hold_ref, "rental:R1:hold:0")


def test_after_stripe_prunes_a_key_the_effect_is_found_by_its_metadata(fake: StripeFake) -> None:
    p = make(fake)
    acct = fake.add_account()
    hold = p.authorize(fake.add_card(MASTERCARD), 3500, "EUR", "rental:R1:hold:0")
    cap = p.capture(hold.hold_ref, 1500, "rental:R1:capture:0")
    ref = p.refund(hold.hold_ref, 200, "rental:R1:refund:0")
    out = p.payout(acct, 700, "EUR", hold.hold_ref, "payout:R1")
    plain = p.payout(acct, 10, "EUR", None, "payout:day")
    fake.advance(25 * 3600)  # keys older than 24 h are gone
    q = make(fake)
    assert q.capture(hold.hold_ref, 1500, "rental:R1:capture:0") == cap
    assert q.refund(hold.hold_ref, 200, "rental:R1:refund:0") == ref
    assert q.payout(acct, 700, "EUR", hold.hold_ref, "payout:R1") == out
    assert q.payout(acct, 10, "EUR", None, "payout:day") == plain
    assert (
        fake.count("payment_intents.capture"),
        fake.count("refunds.create"),
        fake.count("transfers.create"),
    ) == (
        1,
        1,
        2,
    )


def test_statement_lines_are_typed(fake: StripeFake) -> None:
    p = make(fake)
    hold = p.authorize(fake.add_card(), 3500, "EUR", "rental:R1:hold:0")
    p.capture(hold.hold_ref, 3500, "rental:R1:capture:0")
    lines = p.statement(DAY)
    assert all(isinstance(line, StatementLine) and isinstance(line.amount, int) for line in lines)
    assert lines[0].hold_ref == hold.hold_ref and lines[0].at == pytest.approx(fake.now(), abs=5)
    assert MIT_WINDOW_S == VISA_MIT_WINDOW_S
