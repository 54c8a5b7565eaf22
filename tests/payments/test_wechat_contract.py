"""Contract tests of WeChat Pay Score: ``cloud.payments.wechat_provider`` through the real
``wechatpayv3`` SDK against the local fake (``tests/fakes/wechat_fake.py``).

The whole money life of a rental (hold, the renter's confirmation, capture, partial capture,
cancel, refunds, a complaint as the dispute, the statement, profit sharing as the payout), every
failure mode the fake plays (declines, a renter who never confirms or cannot, expired orders,
failed collections, 5xx and timeouts before or after the effect, duplicated, delayed,
reordered and early notifications, forged signatures both ways), and idempotency across a
"cloud restart": a new adapter instance repeats a step with the same idempotency key, gets the
same result, and the fake shows one effect. Keys are generated here; none is in the repository.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from wechatpayv3.utils import build_authorization, load_private_key  # type: ignore[import-untyped]

from cloud.config import ConfigError
from cloud.payments import (
    Declined,
    Hold,
    HoldExpired,
    IdempotencyConflict,
    InvalidRequest,
    PaymentError,
    Payout,
    ProviderEvent,
    ProviderUnavailable,
    RealProvider,
    WebhookRejected,
    rental_key,
)
from cloud.payments.wechat_provider import WeChatPayScoreConfig, WeChatPayScoreProvider, parse_trade_bill
from tests.fakes.wechat_fake import WeChatPayFake, aes_gcm_encrypt, rsa_sign, self_signed_certificate

PEM = "PRIVATE" + " KEY"  # spelled in two parts: tests/chaos/test_repo_secrets.py finds no key here

MCHID = "1900000109"
APPID = "wxd678efh567hg6787"
SERVICE_ID = "2002000000000558128851361561536"
MERCHANT_SERIAL = "3775B6A45ACD588826D15E583A95F5DD2F8E0D0A"
PUBLIC_KEY_ID = "PUB_KEY_ID_0119000001092025061800000000"
PARTNER = "1900000200"
PARTNER_NAME = "某某充电宝运营有限公司"
DAY = 86400.0


@dataclass(frozen=True)
class Keys:
    merchant: rsa.RSAPrivateKey
    platform: rsa.RSAPrivateKey
    platform2: rsa.RSAPrivateKey
    stranger: rsa.RSAPrivateKey
    apiv3: str


def pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module")
def keys() -> Keys:
    def new() -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    return Keys(new(), new(), new(), new(), "a12d3924fd499edac8a5efc0e1b2c3d4")


class Receiver:
    """The cloud's notification endpoint, as small as it gets: records every delivery and
    answers 200 {"code": "SUCCESS"} (or 500 for the next ``fail`` deliveries)."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes, float, int]] = []
        self.fail = 0
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.cond:
                    status = 500 if receiver.fail > 0 else 200
                    receiver.fail -= status == 500
                    receiver.received.append((dict(self.headers.items()), body, time.time(), status))
                    receiver.cond.notify_all()
                answer = json.dumps(
                    {"code": "SUCCESS" if status == 200 else "FAIL", "message": "成功"}
                ).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/payments/wechat/notify"

    def wait(self, n: int, timeout: float = 5.0) -> list[tuple[dict[str, str], bytes, float, int]]:
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.received) >= n, timeout):
                raise AssertionError(f"expected {n} notifications, got {len(self.received)}")
            return list(self.received)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def new_fake(keys: Keys, receiver: Receiver, **kwargs: Any) -> WeChatPayFake:
    fake = WeChatPayFake(
        mchid=MCHID,
        appid=APPID,
        service_id=SERVICE_ID,
        merchant_serial_no=MERCHANT_SERIAL,
        merchant_public_key=keys.merchant.public_key(),
        platform_private_key=keys.platform,
        apiv3_key=keys.apiv3,
        platform_public_key_id=PUBLIC_KEY_ID,
        **kwargs,
    )
    fake.complaint_notify_url = receiver.url
    fake.known_merchants[PARTNER] = PARTNER_NAME
    return fake.start()


@pytest.fixture
def fake(keys: Keys, receiver: Receiver) -> Iterator[WeChatPayFake]:
    f = new_fake(keys, receiver)
    yield f
    f.stop()


@pytest.fixture
def make(
    keys: Keys, fake: WeChatPayFake, receiver: Receiver, tmp_path: Path
) -> Callable[..., WeChatPayScoreProvider]:
    """A new adapter instance (each call is a "cloud restart": it shares nothing in memory)."""
    key_file = tmp_path / "apiclient_key.pem"
    key_file.write_text(pem(keys.merchant))
    env = {"WECHAT_APIV3_KEY": keys.apiv3, "WECHAT_PAY_PUBLIC_KEY": public_pem(keys.platform)}

    def build(environ: dict[str, str] | None = None, **overrides: Any) -> WeChatPayScoreProvider:
        values: dict[str, Any] = {
            "mchid": MCHID,
            "appid": APPID,
            "service_id": SERVICE_ID,
            "merchant_serial_no": MERCHANT_SERIAL,
            "notify_url": receiver.url,
            "private_key_file": str(key_file),
            "apiv3_key_env": "WECHAT_APIV3_KEY",
            "platform_public_key_id": PUBLIC_KEY_ID,
            "platform_public_key_env": "WECHAT_PAY_PUBLIC_KEY",
            "gateway": fake.base_url,
            "connect_timeout_s": 0.5,
            "read_timeout_s": 0.4,
            "profit_sharing": True,
        }
        values.update(overrides)
        values = {k: v for k, v in values.items() if v is not None}
        return WeChatPayScoreProvider.from_mapping(values, environ=env if environ is None else environ)

    return build


@pytest.fixture
def wx(make: Callable[..., WeChatPayScoreProvider]) -> WeChatPayScoreProvider:
    return make()


def events(wx: WeChatPayScoreProvider, receiver: Receiver, n: int) -> list[ProviderEvent]:
    """The first ``n`` deliveries, verified and parsed by the adapter."""
    return [wx.parse_notification(h, body) for h, body, _, _ in receiver.wait(n)[:n]]


def hold_key(rental: str, n: int = 0) -> str:
    return rental_key(rental, "hold", n)


def confirmed(
    wx: WeChatPayScoreProvider, fake: WeChatPayFake, rental: str, amount: int = 9900, openid: str = "o-renter"
) -> str:
    hold = wx.authorize(openid, amount, "CNY", hold_key(rental))
    assert hold.client_action is not None
    assert fake.user_confirm(hold.hold_ref, openid, dict(hold.client_action["extraData"]))
    return hold.hold_ref


def paid(
    wx: WeChatPayScoreProvider, fake: WeChatPayFake, rental: str, fee: int = 450, amount: int = 9900
) -> str:
    ref = confirmed(wx, fake, rental, amount)
    wx.capture(ref, fee, rental_key(rental, "capture", 0))
    assert wx.service_order(ref).paid
    return ref


# --- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "environ", "says"),
    [
        ({"mchid": None}, None, "missing mchid"),
        ({"service_id": None, "appid": None}, None, "missing appid, service_id"),
        ({"typo_key": "x"}, None, "unknown key(s) typo_key"),
        ({}, {"WECHAT_PAY_PUBLIC_KEY": "x"}, "WECHAT_APIV3_KEY"),
        ({"apiv3_key_env": None}, None, "set apiv3_key_file or apiv3_key_env"),
        ({}, {"WECHAT_APIV3_KEY": "short", "WECHAT_PAY_PUBLIC_KEY": "x"}, "must be 32 bytes"),
        ({"private_key_file": "/nonexistent/apiclient_key.pem"}, None, "private_key_file /nonexistent"),
        ({"platform_public_key_id": None, "platform_public_key_env": None}, None, "platform_cert_dir"),
        ({"platform_public_key_id": None}, None, "platform_public_key_id is required"),
        ({"read_timeout_s": "soon"}, None, "read_timeout_s"),
    ],
)
def test_construction_is_refused_with_the_missing_or_bad_value_named(
    make: Callable[..., WeChatPayScoreProvider],
    overrides: dict[str, Any],
    environ: dict[str, str] | None,
    says: str,
) -> None:
    with pytest.raises(ConfigError, match=None) as e:
        make(environ=environ, **overrides)
    assert says in str(e.value)


def test_a_key_that_is_not_a_key_is_refused(
    make: Callable[..., WeChatPayScoreProvider], tmp_path: Path, keys: Keys
) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text(
        f"-----BEGIN {PEM}-----\nnot base64\n-----END {PEM}-----\n"
    )  # PEM: see below, no key in the repo
    with pytest.raises(ConfigError, match="merchant private key"):
        make(private_key_file=str(bad))
    env = {"WECHAT_APIV3_KEY": keys.apiv3, "WECHAT_PAY_PUBLIC_KEY": "garbage"}
    with pytest.raises(ConfigError, match="public key"):
        make(environ=env)


def test_it_is_a_real_provider(wx: WeChatPayScoreProvider) -> None:
    provider: RealProvider = wx  # (checked by mypy: the Protocol's methods and their parameters)
    assert provider.name == "wechat"


def test_wrong_currency_or_amount_is_refused_before_any_request(
    wx: WeChatPayScoreProvider, fake: WeChatPayFake
) -> None:
    for currency, amount in (("EUR", 100), ("CNY", 0), ("CNY", -5)):
        with pytest.raises(InvalidRequest):
            wx.authorize("o-renter", amount, currency, hold_key("R0"))
    assert fake.requests == []


# --- the life cycle ---------------------------------------------------------------------------


def test_hold_confirm_partial_capture_and_collection(
    wx: WeChatPayScoreProvider, fake: WeChatPayFake, receiver: Receiver
) -> None:
    hold = wx.authorize("o-renter", 9900, "CNY", hold_key("R1"))
    assert (hold.status, hold.amount, hold.currency) == ("pending", 9900, "CNY")
    assert hold.hold_ref == wx.out_order_no(hold_key("R1")) and len(hold.hold_ref) == 32
    order = fake.orders[hold.hold_ref]
    assert order["risk_fund"]["name"] == "DEPOSIT" and order["risk_fund"]["amount"] == 9900
    assert order["time_range"] == {"start_time": "OnAccept"} and order["notify_url"] == receiver.url
    action = hold.client_action
    assert action is not None and action["businessType"] == "wxpayScoreUse"
    assert action["package"] == order["package"] == action["extraData"]["package"]
    assert wx.hold_status(hold.hold_ref) == "pending"

    forged = {**action["extraData"], "sign": "0" * 64}
    with pytest.raises(ValueError, match="sign"):
        fake.user_confirm(hold.hold_ref, "o-renter", forged)
    assert fake.user_confirm(hold.hold_ref, "o-renter", dict(action["extraData"]))
    [confirm] = events(wx, receiver, 1)
    assert (confirm.kind, confirm.hold_ref, confirm.amount, confirm.currency) == (
        "hold.confirmed",
        hold.hold_ref,
        9900,
        "CNY",
    )
    assert confirm.provider_type == "PAYSCORE.USER_CONFIRM" and confirm.data["openid"] == "o-renter"
    assert wx.hold_status(hold.hold_ref) == "held"

    capture = wx.capture(hold.hold_ref, 450, rental_key("R1", "capture", 0))
    assert (capture.hold_ref, capture.amount, capture.released) == (hold.hold_ref, 450, 9450)
    assert capture.capture_ref == order["order_id"]
    assert order["post_payments"][0]["amount"] == 450 and order["total_amount"] == 450
    [_, captured] = events(wx, receiver, 2)
    assert (captured.kind, captured.hold_ref, captured.amount) == ("hold.captured", hold.hold_ref, 450)
    assert captured.data["transaction_id"] == order["transaction_id"]
    assert wx.hold_status(hold.hold_ref) == "captured"
    assert fake.orders[hold.hold_ref]["state"] == "DONE"
    assert (fake.count("create"), fake.count("complete"), fake.count("collect")) == (1, 1, 1)


def test_capture_of_the_whole_hold_releases_nothing(wx: WeChatPayScoreProvider, fake: WeChatPayFake) -> None:
    ref = confirmed(wx, fake, "R2", amount=3000)
    capture = wx.capture(ref, 3000, rental_key("R2", "capture", 0))
    assert (capture.amount, capture.released) == (3000, 0)
    with pytest.raises(InvalidRequest):
        wx.capture(confirmed(wx, fake, "R2b", amount=3000), 3001, rental_key("R2b", "capture", 0))


def test_refunds_in_parts_up_to_what_was_collected(
    wx: WeChatPayScoreProvider, fake: WeChatPayFake, receiver: Receiver
) -> None:
    ref = paid(wx, fake, "R3")
    first = wx.refund(ref, 100, rental_key("R3", "refund", f"0:{ref}"))
    second = wx.refund(ref, 350, rental_key("R3", "refund", f"1:{ref}"))
    assert (first.amount, second.amount) == (100, 350) and first.refund_ref != second.refund_ref
    with pytest.raises(InvalidRequest, match="可退金额"):
        wx.refund(ref, 1, rental_key("R3", "refund", f"2:{ref}"))
    got = [e for e in events(wx, receiver, 4) if e.kind == "refund.succeeded"]
    assert sorted((e.data["refund_id"], e.amount) for e in got) == sorted(
        [(first.refund_ref, 100), (second.refund_ref, 350)]
    )
    assert {e.hold_ref for e in got} == {ref}
    assert fake.count("refund") == 2


def test_a_refund_that_fails_at_wechat_is_reported(
    wx: WeChatPayScoreProvider, fake: WeChatPayFake, receiver: Receiver
) -> None:
    ref = paid(wx, fake, "R3b")
    fake.refund_outcomes.append("ABNORMAL")
    refund = wx.refund(ref, 100, rental_key("R3b", "refund", f"0:{ref}"))
    failed = events(wx, receiver, 3)[2]
    assert (failed.kind, failed.provider_type, failed.amount) == ("payment.failed", "REFUND.ABNORMAL", 100)
    assert failed.data["operation"] == "refund" and failed.data["refund_id"] == refund.refund_ref


def test_void_before_confirmation_after_it_and_after_a_restart(
    make: Callable[..., WeChatPayScoreProvider], fake: WeChatPayFake
) -> None:
    wx = make()
    pending = wx.authorize("o-renter", 9900, "CNY", hold_key("R4")).hold_ref
    held = confirmed(wx, fake, "R5")
    for ref, rental in ((pending, "R4"), (held, "R5")):
        void = wx.void(ref, rental_key(rental, "void", 0))
        assert (void.hold_ref, void.released) == (ref, 9900)
        assert fake.orders[ref]["state"] == "REVOKED" and wx.hold_status(ref) == "voided"
        assert make().void(ref, rental_key(rental, "void", 0)) == void  # a restart repeats it
        with pytest.raises(InvalidRequest):
            wx.capture(ref, 100, rental_key(rental, "capture", 0))
        event = wx.reconcile(ref)
        assert event is not None and event.kind == "hold.voided"
    assert fake.count("cancel") == 2


def test_a_completed_order_cannot_be_voided(wx: WeChatPayScoreProvider, fake: WeChatPayFake) -> None:
    ref = paid(wx, fake, "R6")
    with pytest.raises(InvalidRequest, match="refund instead"):
        wx.void(ref, rental_key("R6", "void", 0))
    assert fake.count("cancel") == 0


def test_unknown_holds_are_invalid_requests(wx: WeChatPayScoreProvider) -> None:
    for ref in ("PS" + "0" * 30, "not/a/number"):
        with pytest.raises(InvalidRequest):
            wx.hold_status(ref)
        with pytest.raises(InvalidRequest):
            wx.capture(ref, 100, rental_key("R7", "capture", 0))


# --- failure modes ------------------------------------------------------------------------------


def test_renter_never_confirms_and_the_order_expires(
    make: Callable[..., WeChatPayScoreProvider], fake: WeChatPayFake, receiver: Receiver
) -> None:
    wx = make()
    hold = wx.authorize("o-renter", 9900, "CNY", hold_key("R8"))
    assert hold.expires_at == pytest.approx(time.time() + 30 * DAY, abs=5)
    fake.advance(30 * DAY - 60)
    assert wx.hold_status(hold.hold_ref) == "pending"
    fake.advance(61)
    assert wx.hold_status(hold.hold_ref) == "expired"
    event = wx.reconcile(hold.hold_ref)
    assert event is not None and (event.kind, event.hold_ref) == ("hold.expired", hold.hold_ref)
    assert make().reconcile(hold.hold_ref) == event  # the same id however often it is asked
    with pytest.raises(HoldExpired):
        wx.capture(hold.hold_ref, 450, rental_key("R8", "capture", 0))
    assert wx.void(hold.hold_ref, rental_key("R8", "void", 0)).released == 0
    assert not fake.user_confirm(hold.hold_ref, "o-renter")
    with pytest.raises(HoldExpired):
        make().authorize("o-renter", 9900, "CNY", hold_key("R8"))
    assert receiver.received == []  # WeChat sends nothing for an expiry


def test_a_renter_whose_score_is_too_low_cannot_confirm(
    wx: WeChatPayScoreProvider, fake: WeChatPayFake, receiver: Receiver
) -> None:
    fake.low_score_openids.add("o-low")
    hold = wx.authorize("o-low", 9900, "CNY", hold_key("R9"))
    assert hold.client_action is not None
    assert not fake.user_confirm(hold.hold_ref, "o-low", dict(hold.client_action["extraData"]))
    assert wx.hold_status(hold.hold_ref) == "pending" and wx.reconcile(hold.hold_ref) is None
    time.sleep(0.1)
    assert receiver.received == []


def test_declines_at_creation_and_a_retry_after_a_decline(
    wx: WeChatPayScoreProvider, fake: WeChatPayFake
) -> None:
    with pytest.raises(Declined) as e:
        wx.authorize("o-renter", fake.max_risk_amount + 1, "CNY", hold_key("R10"))
    assert e.value.code == "card_declined" and "RULE_LIMIT" in str(e.value)
    fake.fail_next("create", status=403, code="RULE_LIMIT", message="用户不满足使用条件")
    with pytest.raises(Declined, match="用户不满足"):
        wx.authorize("o-renter", 9900, "CNY", hold_key("R11"))
    assert fake.count("create") == 0
    assert wx.authorize("o-renter", 9900, "CNY", hold_key("R11")).status == "pending"  # no memory of declines
    fake.fail_next("create", status=403, code="NO_AUTH", message="商户无权限")
    with pytest.raises(PaymentError) as e2:
        wx.authorize("o-renter", 9900, "CNY", hold_key("R12"))
    assert not isinstance(e2.value, Declined)


def test_collection_fails_then_the_renter_pays(
    wx: WeChatPayScoreProvider, fake: WeChatPayFake, receiver: Receiver
) -> None:
    fake.unpayable_openids.add("o-broke")
    hold = wx.authorize("o-broke", 9900, "CNY", hold_key("R13"))
    assert hold.client_action is not None
    assert fake.user_confirm(hold.hold_ref, "o-broke", dict(hold.client_action["extraData"]))
    capture = wx.capture(hold.hold_ref, 700, rental_key("R13", "capture", 0))
    assert capture.amount == 700
    assert wx.hold_status(hold.hold_ref) == "captured" and not wx.service_order(hold.hold_ref).paid
    failed = wx.reconcile(hold.hold_ref)
    assert failed is not None and (failed.kind, failed.amount) == ("payment.failed", 700)
    with pytest.raises(InvalidRequest, match="not been collected"):
        wx.refund(hold.hold_ref, 100, rental_key("R13", "refund", f"0:{hold.hold_ref}"))
    receiver.wait(1)
    time.sleep(0.1)
    assert len(receiver.received) == 1  # only the confirmation: a failed collection is silent
    fake.collect(hold.hold_ref)
    [_, later] = events(wx, receiver, 2)
    assert (later.kind, later.amount) == ("hold.captured", 700)
    ok = wx.reconcile(hold.hold_ref)
    assert ok is not None and ok.kind == "hold.captured" and ok.event_id != failed.event_id


#: Each step, the fake's operation that takes its effect, and how the effect is counted.
STEPS = ("authorize", "capture", "void", "refund", "payout", "statement")
OPERATION = {
    "authorize": ("create", "create"),
    "capture": ("complete", "complete"),
    "void": ("cancel", "cancel"),
    "refund": ("refund", "refund"),
    "payout": ("profitsharing", "profitsharing"),
    "statement": ("tradebill", None),
}


def run_step(step: str, wx: WeChatPayScoreProvider, fake: WeChatPayFake, prepared: str | None) -> Any:
    if step == "authorize":
        return wx.authorize("o-renter", 9900, "CNY", hold_key("RS"))
    assert prepared is not None
    if step == "capture":
        return wx.capture(prepared, 450, rental_key("RS", "capture", 0))
    if step == "void":
        return wx.void(prepared, rental_key("RS", "void", 0))
    if step == "refund":
        return wx.refund(prepared, 200, rental_key("RS", "refund", f"0:{prepared}"))
    if step == "payout":
        return wx.payout(PARTNER, 135, "CNY", prepared, rental_key("RS", "payout", 0))
    return wx.statement(datetime.fromtimestamp(fake.now(), UTC).date())


def prepare(step: str, wx: WeChatPayScoreProvider, fake: WeChatPayFake) -> str | None:
    if step == "authorize":
        return None
    if step in ("capture", "void"):
        return confirmed(wx, fake, "RS")
    if step == "statement":
        fake.set_time(time.time() - 3 * DAY)  # a day whose bills exist
    ref = paid(wx, fake, "RS")
    if step == "payout":
        wx.add_receiver(PARTNER, PARTNER_NAME)
    return ref


def comparable(result: Any) -> Any:
    """Holds carry a fresh client_action signature and expiry per answer: compare the rest."""
    if isinstance(result, Hold):
        return (result.hold_ref, result.amount, result.currency, result.status)
    if isinstance(result, Payout):  # its status moves on by itself (pending, then paid)
        return (result.payout_ref, result.destination, result.amount, result.currency)
    return result


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize(
    "fault",
    ["500 before", "500 after", "timeout before", "timeout after", "no fault"],
)
def test_a_step_repeated_by_a_restarted_cloud_has_one_effect(
    make: Callable[..., WeChatPayScoreProvider], fake: WeChatPayFake, step: str, fault: str
) -> None:
    wx = make()
    prepared = prepare(step, wx, fake)
    operation, effect = OPERATION[step]
    before = fake.count(effect) if effect else 0
    if fault != "no fault":
        kind, when = fault.split()
        if kind == "500":
            fake.fail_next(operation, status=500, after=when == "after")
        else:
            fake.timeout_next(operation, seconds=0.5, after=when == "after")
        with pytest.raises(ProviderUnavailable):
            run_step(step, make(read_timeout_s=0.2), fake, prepared)
        if effect:
            assert fake.count(effect) - before == (1 if when == "after" else 0)
        first = None
    else:
        first = run_step(step, wx, fake, prepared)
    again = run_step(step, make(), fake, prepared)  # a new instance, the same key
    if first is not None:
        assert comparable(again) == comparable(first)
    third = run_step(step, make(), fake, prepared)
    assert comparable(third) == comparable(again)
    if effect:
        assert fake.count(effect) - before == 1
    if step == "statement":
        assert [line.kind for line in again] == ["capture", "fee"]


def test_the_same_key_for_another_amount_is_a_conflict(
    make: Callable[..., WeChatPayScoreProvider], fake: WeChatPayFake
) -> None:
    wx = make()
    wx.authorize("o-renter", 9900, "CNY", hold_key("R14"))
    with pytest.raises(IdempotencyConflict):
        make().authorize("o-renter", 5000, "CNY", hold_key("R14"))
    ref = paid(wx, fake, "R15")
    wx.refund(ref, 100, rental_key("R15", "refund", f"0:{ref}"))
    with pytest.raises(IdempotencyConflict):
        make().refund(ref, 200, rental_key("R15", "refund", f"0:{ref}"))
    wx.add_receiver(PARTNER, PARTNER_NAME)
    wx.payout(PARTNER, 100, "CNY", ref, rental_key("R15", "payout", 0))
    with pytest.raises(IdempotencyConflict):
        make().payout(PARTNER, 120, "CNY", ref, rental_key("R15", "payout", 0))
    with pytest.raises(InvalidRequest, match="completed with 450"):
        make().capture(ref, 460, rental_key("R15", "capture", 0))
    assert (fake.count("create"), fake.count("refund"), fake.count("profitsharing")) == (2, 1, 1)


def test_an_answer_whose_signature_does_not_verify_is_not_trusted(
    wx: WeChatPayScoreProvider, fake: WeChatPayFake
) -> None:
    fake.corrupt_signature_next("create")
    with pytest.raises(ProviderUnavailable) as e:
        wx.authorize("o-renter", 9900, "CNY", hold_key("R16"))
    assert e.value.code == "response_unverified"
    assert fake.count("create") == 1  # it did take effect: the repeat returns it
    assert wx.authorize("o-renter", 9900, "CNY", hold_key("R16")).hold_ref == wx.out_order_no(hold_key("R16"))
    assert fake.count("create") == 1
    ref = confirmed(wx, fake, "R17")
    fake.corrupt_signature_next("query")
    with pytest.raises(ProviderUnavailable):
        wx.hold_status(ref)


def test_the_fake_refuses_requests_not_signed_by_the_merchant(
    make: Callable[..., WeChatPayScoreProvider], fake: WeChatPayFake, keys: Keys, tmp_path: Path
) -> None:
    stranger = tmp_path / "stranger.pem"
    stranger.write_text(pem(keys.stranger))
    with pytest.raises(PaymentError) as e:
        make(private_key_file=str(stranger)).authorize("o-renter", 9900, "CNY", hold_key("R18"))
    assert e.value.code == "wechat_sign_error"
    with pytest.raises(PaymentError) as e:
        make(merchant_serial_no="0" * 40).authorize("o-renter", 9900, "CNY", hold_key("R18"))
    assert e.value.code == "wechat_sign_error"
    assert fake.count("create") == 0

    path = f"/v3/payscore/serviceorder?service_id={SERVICE_ID}&appid={APPID}&out_order_no=X"
    assert requests.get(fake.base_url + path, timeout=5).status_code == 401

    def get(ts: int, key: rsa.RSAPrivateKey = keys.merchant, signed_path: str = path) -> requests.Response:
        nonce = "N" * 32
        signature = rsa_sign(key, f"GET\n{signed_path}\n{ts}\n{nonce}\n\n")
        auth = (
            f'WECHATPAY2-SHA256-RSA2048 mchid="{MCHID}",nonce_str="{nonce}",signature="{signature}",'
            f'timestamp="{ts}",serial_no="{MERCHANT_SERIAL}"'
        )
        return requests.get(fake.base_url + path, headers={"Authorization": auth}, timeout=5)

    now = int(time.time())
    assert get(now).status_code == 404  # signed right: the order does not exist
    for answer in (get(now - 600), get(now, keys.stranger), get(now, signed_path=path.replace("=X", "=Y"))):
        assert (answer.status_code, answer.json()["code"]) == (401, "SIGN_ERROR")
    signer = load_private_key(pem(keys.merchant))  # and a POST through the SDK's own signer
    body = json.dumps({"out_order_no": "A1"})
    auth = build_authorization("/v3/payscore/serviceorder", "POST", MCHID, MERCHANT_SERIAL, signer, data=body)
    tampered = requests.post(
        fake.base_url + "/v3/payscore/serviceorder",
        data=body.replace("A1", "A2"),
        headers={"Authorization": auth, "Content-Type": "application/json"},
        timeout=5,
    )
    assert (tampered.status_code, tampered.json()["code"]) == (401, "SIGN_ERROR")


# --- notifications -----------------------------------------------------------------------------


def test_duplicated_notifications_carry_one_event_id(
    wx: WeChatPayScoreProvider, fake: WeChatPayFake, receiver: Receiver
) -> None:
    fake.notify_copies = 3
    confirmed(wx, fake, "R19")
    got = events(wx, receiver, 3)
    assert len({e.event_id for e in got}) == 1 and {e.kind for e in got} == {"hold.confirmed"}


def test_a_delayed_notification_arrives_after_the_answer(
    wx: WeChatPayScoreProvider, fake: WeChatPayFake, receiver: Receiver
) -> None:
    ref = confirmed(wx, fake, "R20")
    receiver.wait(1)
    fake.notify_delay_s = 0.3
    wx.capture(ref, 450, rental_key("R20", "capture", 0))
    answered = time.time()
    _, _, arrived, _ = receiver.wait(2)[1]
    assert arrived - answered >= 0.2


def test_a_notification_may_arrive_before_the_api_answer(
    wx: WeChatPayScoreProvider, fake: WeChatPayFake, receiver: Receiver
) -> None:
    ref = confirmed(wx, fake, "R21")
    receiver.wait(1)
    fake.notify_before_answer = True
    wx.capture(ref, 450, rental_key("R21", "capture", 0))
    answered = time.time()
    headers, body, arrived, _ = receiver.received[1]
    assert arrived < answered
    assert wx.parse_notification(headers, body).kind == "hold.captured"  # the adapter keeps no state


def test_notifications_out_of_order_each_stand_alone(
    wx: WeChatPayScoreProvider, fake: WeChatPayFake, receiver: Receiver
) -> None:
    fake.pause_notifications()
    ref = confirmed(wx, fake, "R22")
    wx.capture(ref, 450, rental_key("R22", "capture", 0))
    fake.release_notifications(reverse=True)
    got = events(wx, receiver, 2)
    assert [e.kind for e in got] == ["hold.captured", "hold.confirmed"]
    assert {e.hold_ref for e in got} == {ref}


def test_an_unacknowledged_notification_is_delivered_again(
    wx: WeChatPayScoreProvider, fake: WeChatPayFake, receiver: Receiver
) -> None:
    receiver.fail = 2
    confirmed(wx, fake, "R23")
    got = receiver.wait(3)
    assert [status for *_, status in got] == [500, 500, 200]
    assert len({wx.parse_notification(h, b).event_id for h, b, _, _ in got}) == 1


def forged(keys: Keys, body: bytes, key: rsa.RSAPrivateKey | None = None, **headers: str) -> dict[str, str]:
    ts, nonce = str(int(time.time())), "forged-nonce"
    out = {
        "Wechatpay-Timestamp": ts,
        "Wechatpay-Nonce": nonce,
        "Wechatpay-Signature": rsa_sign(key or keys.platform, f"{ts}\n{nonce}\n{body.decode()}\n"),
        "Wechatpay-Serial": PUBLIC_KEY_ID,
        "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
    }
    out.update(headers)
    return out


def test_notifications_are_verified_and_decrypted(
    wx: WeChatPayScoreProvider, fake: WeChatPayFake, receiver: Receiver, keys: Keys
) -> None:
    confirmed(wx, fake, "R24")
    [(headers, body, _, _)] = receiver.wait(1)
    assert wx.parse_notification({k.lower(): v for k, v in headers.items()}, body).kind == "hold.confirmed"

    def refused(h: dict[str, str], b: bytes = body) -> str:
        with pytest.raises(WebhookRejected) as e:
            wx.parse_notification(h, b)
        return str(e.value)

    assert "signature" in refused(headers, body.replace(b'"event_type"', b'"event_type" '))
    assert "without Wechatpay-Signature" in refused(
        {k: v for k, v in headers.items() if k != "Wechatpay-Signature"}
    )
    assert "unknown WeChat Pay public key" in refused({**headers, "Wechatpay-Serial": "PUB_KEY_ID_OTHER"})
    assert "unsupported signature type" in refused({**headers, "Wechatpay-Signature-Type": "HMAC-SHA256"})
    assert "signature" in refused(forged(keys, body, keys.stranger))
    stale = forged(keys, body, Wechatpay_Timestamp="0")
    stale["Wechatpay-Timestamp"] = str(int(time.time()) - 600)
    stale["Wechatpay-Signature"] = rsa_sign(
        keys.platform, f"{stale['Wechatpay-Timestamp']}\nforged-nonce\n{body.decode()}\n"
    )
    assert "tolerance" in refused(stale)

    envelope = json.loads(body)
    resource = {"mchid": "1900000999", "out_refund_no": "RF1", "refund_id": "1", "amount": {"refund": 1}}
    envelope.update(
        event_type="REFUND.SUCCESS", resource=aes_gcm_encrypt(keys.apiv3, json.dumps(resource), "refund")
    )
    other = json.dumps(envelope).encode()
    assert "merchant 1900000999" in refused(forged(keys, other), other)
    envelope["resource"] = aes_gcm_encrypt("b" * 32, json.dumps({**resource, "mchid": MCHID}), "refund")
    wrong_key = json.dumps(envelope).encode()
    assert "decrypt" in refused(forged(keys, wrong_key), wrong_key)
    envelope.update(
        event_type="TRANSACTION.SUCCESS", resource=aes_gcm_encrypt(keys.apiv3, "{}", "transaction")
    )
    unknown = json.dumps(envelope).encode()
    assert "not one this adapter handles" in refused(forged(keys, unknown), unknown)


def test_a_notification_signed_with_a_skewed_clock_is_refused(
    wx: WeChatPayScoreProvider, fake: WeChatPayFake, receiver: Receiver
) -> None:
    fake.notify_timestamp_offset_s = -400
    confirmed(wx, fake, "R25")
    [(headers, body, _, _)] = receiver.wait(1)
    with pytest.raises(WebhookRejected, match="tolerance"):
        wx.parse_notification(headers, body)


# --- statement, payout, dispute ----------------------------------------------------------------


def at_utc(day: date, hour: int, minute: int = 0) -> float:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC).timestamp()


def test_the_statement_of_a_day_matches_what_happened(
    wx: WeChatPayScoreProvider, fake: WeChatPayFake
) -> None:
    day = (datetime.now(UTC) - timedelta(days=3)).date()
    fake.set_time(at_utc(day, 3))  # 11:00 in Beijing
    first = paid(wx, fake, "R26", fee=450)
    refund = wx.refund(first, 100, rental_key("R26", "refund", f"0:{first}"))
    fake.set_time(at_utc(day, 23, 30))  # 07:30 the next day in Beijing: in the next Beijing bill
    late = paid(wx, fake, "R27", fee=300)
    fake.set_time(at_utc(day + timedelta(days=1), 0, 30))  # the next UTC day: not in this statement
    paid(wx, fake, "R28", fee=999)

    lines = wx.statement(day)
    tx1, tx2 = fake.orders[first]["transaction_id"], fake.orders[late]["transaction_id"]
    assert [(line.provider_ref, line.kind, line.amount, line.hold_ref) for line in lines] == [
        (tx1, "capture", 450, first),
        (f"{tx1}:fee", "fee", -3, first),  # 0.6 % of 4.50 CNY = 0.027 CNY, rounded to 3 fen
        (refund.refund_ref, "refund", -100, first),
        (f"{refund.refund_ref}:fee", "fee", 1, first),  # the fee on the refunded part comes back
        (tx2, "capture", 300, late),
        (f"{tx2}:fee", "fee", -2, late),
    ]
    assert {line.currency for line in lines} == {"CNY"}
    assert lines[0].at == pytest.approx(at_utc(day, 3), abs=5)
    assert all(at_utc(day, 0) <= line.at < at_utc(day + timedelta(days=1), 0) for line in lines)


def test_statement_without_trades_not_ready_or_damaged(
    wx: WeChatPayScoreProvider, fake: WeChatPayFake
) -> None:
    day = (datetime.now(UTC) - timedelta(days=5)).date()
    assert wx.statement(day) == []  # NO_STATEMENT_EXIST for both Beijing days
    fake.set_time(at_utc(day, 4))
    paid(wx, fake, "R29")
    fake.fail_next("tradebill", status=400, code="STATEMENT_CREATING", message="账单生成中")
    with pytest.raises(ProviderUnavailable, match="still making"):
        wx.statement(day)
    for damage, says in (("tamper", "SHA1"), ("truncate", "summary")):
        fake.bill_fault = damage
        with pytest.raises(ProviderUnavailable, match=says):
            wx.statement(day)
    fake.bill_fault = None
    assert [line.kind for line in wx.statement(day)] == ["capture", "fee"]
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date()
    requests_before = len(fake.requests)
    with pytest.raises(ProviderUnavailable, match="ask again after"):
        wx.statement(yesterday)  # the next Beijing day's bill is not made yet
    assert len(fake.requests) == requests_before


def test_the_bill_parser_reads_the_documented_format() -> None:
    text = (
        "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,"
        "货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,"
        "商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注\n"
        "`2022-03-21 13:51:31,`wxfdc955f7104ad557,`180023671,`176531292,`,`420000612032130748613220688,"
        "`2021WERUN1647840687637,`oZWaCKXip5njeEiloC4oeOV1TTsk,`JSAPI,`SUCCESS,`OTHERS,`CNY,`0.01,`0.00,`0,`0,"
        "`0.00,`0.00,`,`,`微信云托管支付测试,`,`0.00000,`0.90%,`0.01,`0.00,`\n"
        "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\n"
        "`1,`0.01,`0.00,`0.00,`0.00000,`0.01,`0.00\n"
    )  # (a published example of the format)
    [line] = parse_trade_bill(text)
    assert (line.provider_ref, line.kind, line.amount, line.hold_ref) == (
        "420000612032130748613220688",
        "capture",
        1,
        "2021WERUN1647840687637",
    )
    assert line.at == datetime(2022, 3, 21, 5, 51, 31, tzinfo=UTC).timestamp()
    with pytest.raises(ProviderUnavailable):
        parse_trade_bill(text.replace("`1,`0.01", "`2,`0.01"))


def test_payout_is_profit_sharing_of_the_payment(
    make: Callable[..., WeChatPayScoreProvider], fake: WeChatPayFake
) -> None:
    wx = make()
    ref = paid(wx, fake, "R30", fee=450)
    key = rental_key("R30", "payout", 0)
    with pytest.raises(InvalidRequest, match="未添加"):
        wx.payout(PARTNER, 100, "CNY", ref, key)
    with pytest.raises(InvalidRequest, match="不匹配"):
        wx.add_receiver(PARTNER, "别的公司")
    wx.add_receiver(PARTNER, PARTNER_NAME)
    assert fake.receivers[("MERCHANT_ID", PARTNER)]["relation_type"] == "PARTNER"
    with pytest.raises(InvalidRequest, match="最大分账比例"):
        wx.payout(PARTNER, 136, "CNY", ref, key)  # 30 % of 450 is 135
    with pytest.raises(InvalidRequest, match="hold_ref"):
        wx.payout(PARTNER, 100, "CNY", None, key)
    payout = wx.payout(PARTNER, 135, "CNY", ref, key)
    assert (payout.destination, payout.amount, payout.currency, payout.status) == (
        PARTNER,
        135,
        "CNY",
        "pending",
    )
    deadline = time.time() + 5
    while wx.payout_status(PARTNER, 135, ref, key).status != "paid":
        assert time.time() < deadline
        time.sleep(0.02)
    again = make().payout(PARTNER, 135, "CNY", ref, key)
    assert (again.payout_ref, again.status) == (payout.payout_ref, "paid")
    assert fake.count("profitsharing") == 1 and fake.payments[fake.orders[ref]["transaction_id"]]["unfrozen"]

    plain = make(profit_sharing=False)
    other = paid(plain, fake, "R31")
    with pytest.raises(InvalidRequest, match="分账标记"):
        plain.payout(PARTNER, 10, "CNY", other, rental_key("R31", "payout", 0))
    unpaid = confirmed(wx, fake, "R32")
    with pytest.raises(InvalidRequest, match="not been collected"):
        wx.payout(PARTNER, 10, "CNY", unpaid, rental_key("R32", "payout", 0))


def test_a_complaint_is_the_dispute(
    wx: WeChatPayScoreProvider, fake: WeChatPayFake, receiver: Receiver
) -> None:
    ref = paid(wx, fake, "R33")
    seen = len(receiver.wait(2))
    won = fake.open_complaint(ref)
    fake.resolve_complaint(won, refunded=False)
    lost = fake.open_complaint(ref, amount=200)
    fake.resolve_complaint(lost, refunded=True)
    got = events(wx, receiver, seen + 4)[seen:]
    assert [(e.kind, e.hold_ref, e.data["complaint_id"]) for e in got] == [
        ("dispute.opened", ref, won),
        ("dispute.closed", ref, won),
        ("dispute.opened", ref, lost),
        ("dispute.closed", ref, lost),
    ]
    assert (got[0].amount, got[2].amount) == (450, 200)
    assert (got[1].data["outcome"], got[3].data["outcome"]) == ("won", "lost")


# --- platform certificate mode -------------------------------------------------------------------


def test_platform_certificate_mode_with_a_key_rotation(
    keys: Keys, receiver: Receiver, tmp_path: Path
) -> None:
    cert = self_signed_certificate(keys.platform)
    fake = WeChatPayFake(
        mchid=MCHID,
        appid=APPID,
        service_id=SERVICE_ID,
        merchant_serial_no=MERCHANT_SERIAL,
        merchant_public_key=keys.merchant.public_key(),
        platform_private_key=keys.platform,
        apiv3_key=keys.apiv3,
        platform_certificate=cert,
    ).start()
    try:
        key_file = tmp_path / "apiclient_key.pem"
        key_file.write_text(pem(keys.merchant))
        cert_dir = tmp_path / "wechatpay-certs"
        config = WeChatPayScoreConfig(
            mchid=MCHID,
            appid=APPID,
            service_id=SERVICE_ID,
            merchant_serial_no=MERCHANT_SERIAL,
            notify_url=receiver.url,
            private_key_file=str(key_file),
            apiv3_key_env="K",
            platform_cert_dir=str(cert_dir),
            gateway=fake.base_url,
        )
        fake.fail_next("certificates", status=500)
        with pytest.raises(ProviderUnavailable, match="certificate"):
            WeChatPayScoreProvider(config, environ={"K": keys.apiv3})  # no certificate, no start
        wx = WeChatPayScoreProvider(config, environ={"K": keys.apiv3})
        assert [p.name for p in cert_dir.iterdir()] == [f"{cert.serial_number:X}.pem"]
        hold = wx.authorize("o-renter", 9900, "CNY", hold_key("R34"))
        assert hold.client_action is not None
        fake.user_confirm(hold.hold_ref, "o-renter", dict(hold.client_action["extraData"]))
        assert events(wx, receiver, 1)[0].kind == "hold.confirmed"

        fake.rotate_platform_key(keys.platform2, self_signed_certificate(keys.platform2, days=60))
        assert wx.hold_status(hold.hold_ref) == "held"  # the SDK fetched the new certificate
        wx.capture(hold.hold_ref, 450, rental_key("R34", "capture", 0))
        assert events(wx, receiver, 2)[1].kind == "hold.captured"
        assert len(list(cert_dir.iterdir())) == 2

        [(headers, body, _, _)] = receiver.wait(1)[:1]
        with pytest.raises(WebhookRejected):
            wx.parse_notification({**headers, "Wechatpay-Serial": "PUB_KEY_ID_X"}, body)
        unknown = base64.b16encode(b"\x01\x02").decode()
        with pytest.raises(WebhookRejected):
            wx.parse_notification({**headers, "Wechatpay-Serial": unknown}, body)
    finally:
        fake.stop()
