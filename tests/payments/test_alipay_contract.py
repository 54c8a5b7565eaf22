"""Contract tests of the Alipay fund-authorization adapter: the real python-alipay-sdk against the
local fake gateway (tests/fakes/alipay_fake.py), keys generated here.

A rental's money life (freeze the renter confirms, partial and full capture, void, refunds,
the statement of the day, the merchant's settle) and every failure mode the fake plays; each
step repeated by a new adapter ("the cloud restarted") with the same key gets the same result
and the fake shows one effect.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cloud.config import ConfigError
from cloud.payments.alipay_provider import (
    AlipayDeclined,
    AlipayFundAuthProvider,
    parse_account_bill,
    parse_trade_bill,
)
from cloud.payments.provider import (
    Capture,
    Declined,
    Hold,
    HoldExpired,
    IdempotencyConflict,
    InvalidRequest,
    PaymentError,
    ProviderEvent,
    ProviderUnavailable,
    StatementLine,
    rental_key,
)
from cloud.payments.webhooks import WebhookRejected
from tests.fakes.alipay_fake import (
    AlipayFake,
    NotificationReceiver,
    generate_rsa_keypair,
    rsa2_sign,
    sign_content,
)

PEM = "PRIVATE" + " KEY"  # spelled in two parts: tests/chaos/test_repo_secrets.py finds no key here

APP_ID = "2021004100000001"
SELLER = "2088000000000001"
BUYER = "2088102146225135"
MERCHANT = "2088000000000099"
SERVICE_ID = "2020042800000000000001450466"
CATEGORY = "RENT_POWERBANK"
HOLD = 9900  # fen: the battery's price, 99 CNY
Factory = Callable[..., AlipayFundAuthProvider]


@pytest.fixture(scope="module")
def keys() -> dict[str, str]:
    app_private, app_public = generate_rsa_keypair()
    alipay_private, alipay_public = generate_rsa_keypair()
    return {
        "app_private": app_private,
        "app_public": app_public,
        "alipay_private": alipay_private,
        "alipay_public": alipay_public,
    }


@pytest.fixture
def receiver() -> Iterator[NotificationReceiver]:
    """The cloud's notify_url, one per test (a late delivery of another test goes nowhere)."""
    r = NotificationReceiver()
    yield r
    r.stop()


@pytest.fixture
def fake(keys: dict[str, str]) -> Iterator[AlipayFake]:
    f = AlipayFake(
        app_id=APP_ID,
        app_public_key=keys["app_public"],
        alipay_private_key=keys["alipay_private"],
        seller_id=SELLER,
        auth_ttl_s=7 * 86400,
    )
    with f:
        yield f


@pytest.fixture
def make(fake: AlipayFake, keys: dict[str, str], receiver: NotificationReceiver) -> Factory:
    """A new adapter each call: a cloud process (started again) with the same configuration."""

    def build(**overrides: Any) -> AlipayFundAuthProvider:
        env = {"ALIPAY_APP_KEY": keys["app_private"], "ALIPAY_PUBLIC_KEY": keys["alipay_public"]}
        values: dict[str, Any] = {
            "app_id": APP_ID,
            "payee_user_id": SELLER,
            "notify_url": receiver.url,
            "service_id": SERVICE_ID,
            "category": CATEGORY,
            "app_private_key_env": "ALIPAY_APP_KEY",
            "alipay_public_key_env": "ALIPAY_PUBLIC_KEY",
            "gateway": fake.gateway_url,
            "timeout_s": 0.5,
            "hold_ttl_s": 7 * 86400,
            "confirm_timeout_s": 900,
            "environ": env,
            "clock": fake.now,
            **overrides,
        }
        return AlipayFundAuthProvider(**values)

    return build


def wait_for(pred: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def events(
    p: AlipayFundAuthProvider, receiver: NotificationReceiver, notify_type: str, n: int = 1
) -> list[ProviderEvent]:
    """The first ``n`` notifications of ``notify_type`` that reached the notify_url, parsed."""
    got = wait_for(
        lambda: (lambda r: r if len(r) >= n else None)(list(receiver.of_type(notify_type))),
        what=f"{n} {notify_type} notification(s)",
    )
    return [p.parse_notification(r.headers, r.body) for r in got]


def held(
    p: AlipayFundAuthProvider,
    fake: AlipayFake,
    key: str = "rental:R1:hold:0",
    amount: int = HOLD,
    buyer: str = BUYER,
) -> Hold:
    """A hold the renter confirmed in the Alipay app."""
    hold = p.authorize("", amount, "CNY", key)
    assert hold.status == "pending" and hold.client_action is not None
    result = fake.renter_submits(hold.client_action["order_str"], buyer)
    assert result["resultCode"] == "9000", result
    now = p.app_result(hold.hold_ref, result["result"])
    assert now.status == "held"
    return now


def order_string_biz(order_str: str) -> tuple[dict[str, str], dict[str, Any]]:
    params = dict(urllib.parse.parse_qsl(order_str))
    return params, json.loads(params["biz_content"])


def renotify(note_body: bytes, key: str, **changes: str) -> bytes:
    """A notification body with ``changes``, signed again with ``key`` (a forger's or Alipay's)."""
    params = dict(urllib.parse.parse_qsl(note_body.decode()))
    params.update(changes)
    params.pop("sign")
    params["sign"] = rsa2_sign(key, sign_content(params, drop=("sign", "sign_type"), keep_empty=True))
    return urllib.parse.urlencode(params).encode()


# --- the hold: a credit freeze the renter confirms ---------------------------------------------


def test_authorize_is_a_pending_freeze_with_the_credit_parameters(
    make: Factory, fake: AlipayFake, receiver: NotificationReceiver
) -> None:
    p = make()
    hold = p.authorize("", HOLD, "CNY", rental_key("R1", "hold", 0))
    assert hold.status == "pending" and hold.amount == HOLD and hold.currency == "CNY"
    assert hold.client_action is not None and hold.client_action["out_order_no"] == hold.hold_ref
    params, biz = order_string_biz(hold.client_action["order_str"])
    assert params["method"] == "alipay.fund.auth.order.app.freeze" and params["sign_type"] == "RSA2"
    assert params["notify_url"] == receiver.url
    assert biz["out_order_no"] == hold.hold_ref and biz["amount"] == "99.00"
    assert biz["product_code"] == "PREAUTH_PAY" and biz["payee_user_id"] == SELLER
    assert json.loads(biz["extra_param"]) == {"category": CATEGORY, "serviceId": SERVICE_ID}
    assert biz["timeout_express"] == "15m"
    # signed locally; the one request asked whether the key froze before (a replay after a crash)
    assert fake.requests == ["alipay.fund.auth.operation.detail.query"] and fake.orders == {}
    assert p.hold_status(hold.hold_ref) == "pending"

    result = fake.renter_submits(hold.client_action["order_str"], BUYER)
    assert result["resultCode"] == "9000"
    (confirmed,) = events(p, receiver, "fund_auth_freeze")
    assert confirmed.kind == "hold.confirmed" and confirmed.hold_ref == hold.hold_ref
    assert confirmed.amount == HOLD and confirmed.currency == "CNY"
    assert confirmed.data["pre_auth_type"] == "CREDIT_AUTH" and confirmed.data["auth_no"]
    assert p.hold_status(hold.hold_ref) == "held"
    assert p.app_result(hold.hold_ref, result["result"]).status == "held"
    assert fake.effect_count("freeze", hold.hold_ref) == 1


def test_authorize_again_after_a_restart_is_the_same_hold(make: Factory, fake: AlipayFake) -> None:
    key = rental_key("R1", "hold", 0)
    first = make().authorize("", HOLD, "CNY", key)
    again = make().authorize("", HOLD, "CNY", key)  # the cloud restarted before it recorded the hold
    assert again.hold_ref == first.hold_ref and again.status == "pending"
    assert again.client_action is not None
    fake.renter_submits(again.client_action["order_str"], BUYER)
    assert first.client_action is not None
    assert fake.renter_submits(first.client_action["order_str"], BUYER)["resultCode"] == "9000"
    after = make().authorize("", HOLD, "CNY", key)
    assert after.hold_ref == first.hold_ref and after.status == "held"
    assert fake.effect_count("freeze") == 1
    with pytest.raises(IdempotencyConflict):
        make().authorize("", HOLD + 100, "CNY", key)
    other = make().authorize("", HOLD, "CNY", rental_key("R1", "hold", 1))
    assert other.hold_ref != first.hold_ref


def test_authorize_refuses_bad_requests(make: Factory) -> None:
    p = make()
    with pytest.raises(InvalidRequest, match="CNY"):
        p.authorize("", HOLD, "EUR", "k1")
    with pytest.raises(InvalidRequest):
        p.authorize("", 0, "CNY", "k2")
    with pytest.raises(InvalidRequest):
        p.hold_status("hold_from_another_provider")


# --- capture, void, refund -------------------------------------------------------------------


def test_partial_capture_takes_the_fee_and_unfreezes_the_rest(
    make: Factory, fake: AlipayFake, receiver: NotificationReceiver
) -> None:
    p = make()
    hold = held(p, fake)
    cap = p.capture(hold.hold_ref, 300, rental_key("R1", "capture", 0))
    assert cap == Capture(hold.hold_ref, cap.capture_ref, 300, HOLD - 300)
    biz = fake.last_biz("alipay.trade.pay")
    assert biz["auth_no"] == fake.order(hold.hold_ref).auth_no
    assert biz["product_code"] == "PREAUTH_PAY" and biz["auth_confirm_mode"] == "COMPLETE"
    assert biz["total_amount"] == "3.00" and biz["buyer_id"] == BUYER and biz["seller_id"] == SELLER
    order = fake.order(hold.hold_ref)
    assert order.status == "FINISH" and order.rest == 0 and order.paid == 300
    assert p.hold_status(hold.hold_ref) == "captured"
    (captured,) = events(p, receiver, "trade_status_sync")
    assert captured.kind == "hold.captured" and captured.hold_ref == hold.hold_ref
    assert captured.amount == 300 and captured.data["ref"] == cap.capture_ref
    with pytest.raises(IdempotencyConflict):  # one capture per hold: another amount is refused
        p.capture(hold.hold_ref, 500, rental_key("R1", "capture", 0))


def test_full_capture(make: Factory, fake: AlipayFake) -> None:
    p = make()
    hold = held(p, fake)
    cap = p.capture(hold.hold_ref, HOLD, rental_key("R1", "capture", 0))
    assert (cap.amount, cap.released) == (HOLD, 0)
    with pytest.raises(InvalidRequest):
        p.capture(held(p, fake, "rental:R2:hold:0").hold_ref, HOLD + 1, rental_key("R2", "capture", 0))


def test_capture_of_a_pending_hold_is_refused(make: Factory, fake: AlipayFake) -> None:
    p = make()
    hold = p.authorize("", HOLD, "CNY", "rental:R1:hold:0")
    with pytest.raises(InvalidRequest, match="pending"):
        p.capture(hold.hold_ref, 100, "rental:R1:capture:0")
    assert fake.effect_count("pay") == 0


def test_void_unfreezes_the_whole_hold(
    make: Factory, fake: AlipayFake, receiver: NotificationReceiver
) -> None:
    p = make()
    hold = held(p, fake)
    void = p.void(hold.hold_ref, rental_key("R1", "void", 0))
    assert (void.hold_ref, void.released) == (hold.hold_ref, HOLD)
    biz = fake.last_biz("alipay.fund.auth.order.unfreeze")
    assert biz["amount"] == "99.00" and biz["auth_no"] == fake.order(hold.hold_ref).auth_no
    assert p.hold_status(hold.hold_ref) == "voided"
    (voided,) = events(p, receiver, "fund_auth_unfreeze")
    assert voided.kind == "hold.voided" and voided.hold_ref == hold.hold_ref and voided.amount == HOLD
    assert voided.data["ref"] == hold.hold_ref  # what the cloud records a void under
    assert (
        make().void(hold.hold_ref, rental_key("R1", "void", 0)).released == HOLD
    )  # replayed after a restart
    assert p.void(hold.hold_ref, rental_key("R1", "void", 1)).released == 0  # nothing left to release
    assert fake.effect_count("unfreeze") == 1
    with pytest.raises(HoldExpired):  # Alipay answers ACQ.AUTH_ORDER_HAS_CLOSED for an unfrozen order
        p.capture(hold.hold_ref, 100, rental_key("R1", "capture", 0))


def test_void_of_a_pending_hold_closes_the_freeze_order(make: Factory, fake: AlipayFake) -> None:
    p = make()
    unopened = p.authorize("", HOLD, "CNY", "rental:R1:hold:0")
    assert p.void(unopened.hold_ref, "rental:R1:void:0").released == 0  # Alipay never heard of it

    hold = p.authorize("", HOLD, "CNY", "rental:R2:hold:0")
    assert hold.client_action is not None
    assert fake.renter_submits(hold.client_action["order_str"], BUYER, confirm=False)["resultCode"] == "6001"
    assert p.hold_status(hold.hold_ref) == "pending"
    assert p.void(hold.hold_ref, "rental:R2:void:0").released == 0
    assert fake.order(hold.hold_ref).status == "CLOSED" and fake.effect_count("cancel") == 1
    late = fake.renter_submits(hold.client_action["order_str"], BUYER)  # the renter confirms too late
    assert late["resultCode"] == "4000" and fake.effect_count("freeze") == 0
    with pytest.raises(Declined):
        p.app_result(hold.hold_ref, late["result"])
    assert p.hold_status(hold.hold_ref) == "expired"


def test_partial_refunds_up_to_the_capture(
    make: Factory, fake: AlipayFake, receiver: NotificationReceiver
) -> None:
    p = make()
    hold = held(p, fake)
    p.capture(hold.hold_ref, 3000, rental_key("R1", "capture", 0))
    first = p.refund(hold.hold_ref, 1000, rental_key("R1", "refund", f"0:{hold.hold_ref}"))
    assert (first.amount, first.refunded_total) == (1000, 1000)
    assert fake.last_biz("alipay.trade.refund")["out_request_no"] == first.refund_ref
    second = p.refund(hold.hold_ref, 2000, rental_key("R1", "refund", f"1:{hold.hold_ref}"))
    assert (second.amount, second.refunded_total) == (2000, 3000) and second.refund_ref != first.refund_ref
    with pytest.raises(InvalidRequest):
        p.refund(hold.hold_ref, 1, rental_key("R1", "refund", f"2:{hold.hold_ref}"))
    replay = make().refund(hold.hold_ref, 1000, rental_key("R1", "refund", f"0:{hold.hold_ref}"))
    assert (replay.refund_ref, replay.amount) == (first.refund_ref, 1000)
    with pytest.raises(IdempotencyConflict):
        p.refund(hold.hold_ref, 999, rental_key("R1", "refund", f"0:{hold.hold_ref}"))
    assert fake.effect_count("refund") == 2
    refunds = [e for e in events(p, receiver, "trade_status_sync", 3) if e.kind == "refund.succeeded"]
    assert {e.data["ref"] for e in refunds} == {first.refund_ref, second.refund_ref}
    with pytest.raises(InvalidRequest):  # nothing captured on a hold that was only frozen
        p.refund(held(p, fake, "rental:R2:hold:0").hold_ref, 100, "rental:R2:refund:0")


def test_no_disputes_for_this_flow(make: Factory, fake: AlipayFake, receiver: NotificationReceiver) -> None:
    """Alipay documents no chargeback or dispute notification for fund authorization: any
    notification type the adapter does not know is refused, never guessed."""
    p = make()
    held(p, fake)
    (note,) = list(receiver.of_type("fund_auth_freeze"))
    with pytest.raises(WebhookRejected, match="unsupported"):
        forged = renotify(note.body, fake.alipay_private_key, notify_type="trade_complain")
        p.parse_notification(note.headers, forged)


# --- statement and payout --------------------------------------------------------------------


def test_statement_lines_of_the_day_match_what_happened(make: Factory, fake: AlipayFake) -> None:
    p = make()
    a = held(p, fake, "rental:R1:hold:0")
    b = held(p, fake, "rental:R2:hold:0")
    ca = p.capture(a.hold_ref, 300, "rental:R1:capture:0")
    cb = p.capture(b.hold_ref, HOLD, "rental:R2:capture:0")
    ra = p.refund(a.hold_ref, 100, "rental:R1:refund:0")
    out = p.payout(MERCHANT, 6000, "CNY", b.hold_ref, "payout:M1:0")
    day = datetime.fromtimestamp(fake.now(), UTC).date()
    assert p.statement(day) == []  # Alipay makes a day's bill the day after
    fake.advance(2 * 86400)
    lines = p.statement(day)

    def fee(fen: int) -> int:
        return (fen * fake.fee_rate_bp + 5000) // 10000

    expected = {
        (ca.capture_ref, "capture", 300, a.hold_ref),
        (f"{ca.capture_ref}:fee", "fee", -fee(300), a.hold_ref),
        (cb.capture_ref, "capture", HOLD, b.hold_ref),
        (f"{cb.capture_ref}:fee", "fee", -fee(HOLD), b.hold_ref),
        (ra.refund_ref, "refund", -100, a.hold_ref),
        (f"{ra.refund_ref}:fee", "fee", fee(100), a.hold_ref),
        (out.payout_ref, "payout", -6000, None),  # from the account bill (signcustomer)
    }
    assert {(ln.provider_ref, ln.kind, ln.amount, ln.hold_ref) for ln in lines} == expected
    assert all(ln.currency == "CNY" and abs(ln.at - (fake.now() - 2 * 86400)) < 60 for ln in lines)
    assert p.statement(day - timedelta(days=365)) == []


def test_the_bill_is_read_as_alipay_writes_it() -> None:
    """GBK text, ids padded with a tab, the detail file beside its summary, '#' comment lines."""
    import io
    import zipfile

    header = (
        "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,"
        "订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,"
        "券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注"
    )
    ref = "PBH" + "a" * 29
    rows = [
        f"2024091322001000000000000001\t,{ref}P\t,交易,租金,2024-09-13 10:00:00,2024-09-13 10:00:05,,,,,"
        "ali***@x.com,12.30,12.30,0.00,0.00,0.00,0.00,0.00,,0.00,0.00,,-0.07,0.00,",
        f"2024091322001000000000000001\t,{ref}P\t,退款,租金,2024-09-13 10:00:00,2024-09-13 11:00:00,,,,,"
        "ali***@x.com,12.30,-2.30,0.00,0.00,0.00,0.00,0.00,,0.00,0.00,PBRx,0.01,0.00,",
    ]
    detail = "\n".join(
        [
            "#支付宝业务明细查询",
            "#账号：[20880000000000010156]",
            "#----业务明细列表----",
            header,
            *rows,
            "#----业务明细列表结束----",
            "#交易合计：1笔",
        ]
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("20880000000000010156_20240913_业务明细.csv", detail.encode("gbk"))
        z.writestr(
            "20880000000000010156_20240913_业务明细(汇总).csv",
            "#汇总\n门店编号,交易订单总笔数\n,1\n".encode("gbk"),
        )
    lines = parse_trade_bill(out.getvalue())
    at = datetime(2024, 9, 13, 2, 0, 5, tzinfo=UTC).timestamp()
    assert lines[0] == StatementLine("2024091322001000000000000001", "capture", 1230, "CNY", at, ref)
    assert [(ln.kind, ln.amount) for ln in lines] == [
        ("capture", 1230),
        ("fee", -7),
        ("refund", -230),
        ("fee", 1),
    ]
    assert lines[2].provider_ref == "PBRx"


def test_the_account_bill_gives_the_payouts() -> None:
    """The signcustomer bill: the summary first, then the detail; only 分账 rows are payouts."""
    import io
    import zipfile

    header = "账务流水号,业务流水号,商户订单号,商品名称,发生时间,对方账号,收入金额（+元）,支出金额（-元）,账户余额（元）,交易渠道,业务类型,备注"
    rows = [
        "30001\t,2024091322001000000000000001\t,PBHxP\t,租金\t,2024-09-13 10:00:05,2088102146225135\t,12.30,0.00,12.30,支付宝,在线支付,",
        "30002\t,2024091300000000000000000009\t,PBSx\t,租金\t,2024-09-13 12:00:00,2088000000000099\t,0.00,-6.00,6.30,支付宝,分账,",
    ]
    detail = "\n".join(
        [
            "#支付宝账务明细查询",
            "#账号：[20880000000000010156]",
            "#----账务明细列表----",
            header,
            *rows,
            "#----账务明细列表结束----",
        ]
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("x_账务明细(汇总).csv", "#支付宝账务汇总查询\n类型,收入笔数\n合计,1\n".encode("gbk"))
        z.writestr("x_账务明细.csv", detail.encode("gbk"))
    at = datetime(2024, 9, 13, 4, 0, 0, tzinfo=UTC).timestamp()
    assert parse_account_bill(out.getvalue()) == [
        StatementLine("2024091300000000000000000009", "payout", -600, "CNY", at)
    ]


def test_payout_settles_the_merchant_share_of_a_payment(make: Factory, fake: AlipayFake) -> None:
    p = make()
    hold = held(p, fake)
    cap = p.capture(hold.hold_ref, 3000, "rental:R1:capture:0")
    out = p.payout(MERCHANT, 1800, "CNY", hold.hold_ref, "payout:M1:2024-09")
    assert (out.destination, out.amount, out.currency, out.status) == (MERCHANT, 1800, "CNY", "paid")
    biz = fake.last_biz("alipay.trade.order.settle")
    assert biz["trade_no"] == cap.capture_ref
    assert biz["royalty_parameters"] == [
        {
            "royalty_type": "transfer",
            "trans_in_type": "userId",
            "trans_in": MERCHANT,
            "amount": "18.00",
            "desc": f"merchant share {hold.hold_ref}",
        }
    ]
    assert make().payout(MERCHANT, 1800, "CNY", hold.hold_ref, "payout:M1:2024-09") == out  # after a restart
    assert fake.effect_count("settle") == 1
    with pytest.raises(IdempotencyConflict):
        p.payout(MERCHANT, 1700, "CNY", hold.hold_ref, "payout:M1:2024-09")
    with pytest.raises(InvalidRequest):  # more than is left of the payment
        p.payout(MERCHANT, 1300, "CNY", hold.hold_ref, "payout:M1:2024-10")
    with pytest.raises(InvalidRequest):
        p.payout("not-an-account", 100, "CNY", hold.hold_ref, "payout:M2:2024-09")
    with pytest.raises(InvalidRequest):
        p.payout(MERCHANT, 100, "CNY", None, "payout:M1:2024-11")
    with pytest.raises(InvalidRequest):
        p.payout(MERCHANT, 100, "CNY", held(p, fake, "rental:R2:hold:0").hold_ref, "payout:M1:2024-12")


# --- failure modes ---------------------------------------------------------------------------


def test_freeze_refused_by_credit_is_declined(
    make: Factory, fake: AlipayFake, receiver: NotificationReceiver
) -> None:
    fake.decline_users[BUYER] = "ACQ.ZM_CREDIT_AUTH_FAIL"
    p = make()
    hold = p.authorize("", HOLD, "CNY", "rental:R1:hold:0")
    assert hold.client_action is not None
    result = fake.renter_submits(hold.client_action["order_str"], BUYER)
    assert result["resultCode"] == "4000"
    with pytest.raises(AlipayDeclined) as refused:
        p.app_result(hold.hold_ref, result["result"])
    assert refused.value.code == "card_declined" and refused.value.provider_code == "ACQ.ZM_CREDIT_AUTH_FAIL"
    assert p.hold_status(hold.hold_ref) == "pending"  # the renter may still pay a real deposit, until...
    fake.advance(901)
    assert p.hold_status(hold.hold_ref) == "expired"
    with pytest.raises(HoldExpired):
        p.authorize("", HOLD, "CNY", "rental:R1:hold:0")
    assert list(receiver.of_type("fund_auth_freeze")) == [] and fake.effect_count("freeze") == 0


def test_renter_who_never_confirms(make: Factory, fake: AlipayFake, receiver: NotificationReceiver) -> None:
    p = make()
    hold = p.authorize("", HOLD, "CNY", "rental:R1:hold:0")
    assert hold.client_action is not None
    fake.renter_submits(hold.client_action["order_str"], BUYER, confirm=False)  # opened, then walked away
    assert p.hold_status(hold.hold_ref) == "pending"
    fake.advance(901)  # timeout_express (15 m) passed
    assert p.hold_status(hold.hold_ref) == "expired"
    assert receiver.received == []  # no notification: the order just closed

    stale = p.authorize("", HOLD, "CNY", "rental:R2:hold:0")  # the order string is never opened in time
    fake.advance(901)
    assert stale.client_action is not None
    late = fake.renter_submits(stale.client_action["order_str"], BUYER)
    assert late["resultCode"] == "4000" and fake.effect_count("freeze") == 0


def test_authorization_that_expires(make: Factory, fake: AlipayFake, receiver: NotificationReceiver) -> None:
    p = make()
    hold = held(p, fake)
    assert hold.expires_at <= fake.now() + 7 * 86400
    fake.advance(7 * 86400)  # the fake unfreezes at auth_ttl_s and tells the app gateway
    (expired,) = events(p, receiver, "fund_auth_unfreeze")
    assert expired.kind == "hold.expired" and expired.hold_ref == hold.hold_ref
    assert p.hold_status(hold.hold_ref) == "expired"
    with pytest.raises(HoldExpired):
        p.capture(hold.hold_ref, 300, "rental:R1:capture:0")
    assert p.void(hold.hold_ref, "rental:R1:void:0").released == 0
    assert fake.effect_count("pay") == 0


def test_insufficient_balance_keeps_the_fee_due(make: Factory, fake: AlipayFake) -> None:
    p = make()
    hold = held(p, fake)
    fake.set_balance(BUYER, 100)  # the credit freeze reserved nothing: the payment draws on the balance
    with pytest.raises(AlipayDeclined) as short:
        p.capture(hold.hold_ref, 300, "rental:R1:capture:0")
    assert (
        short.value.code == "insufficient_funds"
        and short.value.provider_code == "ACQ.BUYER_BALANCE_NOT_ENOUGH"
    )
    assert isinstance(short.value, Declined)
    assert p.hold_status(hold.hold_ref) == "held" and fake.effect_count("pay") == 0
    fake.set_balance(BUYER, 1000)  # topped up: the same capture goes through
    assert make().capture(hold.hold_ref, 300, "rental:R1:capture:0").amount == 300
    assert fake.effect_count("pay") == 1


FAULTS = [
    pytest.param({"status": 502}, id="http-502"),
    pytest.param({"status": 500, "after_effect": True}, id="http-500-after-effect"),
    pytest.param({"sub_code": "ACQ.SYSTEM_ERROR"}, id="ACQ.SYSTEM_ERROR"),
    pytest.param({"sub_code": "ACQ.SYSTEM_ERROR", "after_effect": True}, id="ACQ.SYSTEM_ERROR-after-effect"),
    pytest.param({"sub_code": "aop.ACQ.SYSTEM_ERROR", "code": "20000"}, id="aop.ACQ.SYSTEM_ERROR"),
]


@pytest.mark.parametrize("fault", FAULTS)
def test_provider_errors_are_unavailable_and_a_retry_is_safe(
    make: Factory, fake: AlipayFake, fault: dict[str, Any]
) -> None:
    p = make()
    hold = held(p, fake)
    fake.fail_next("alipay.trade.pay", **fault)
    with pytest.raises(ProviderUnavailable):
        p.capture(hold.hold_ref, 300, "rental:R1:capture:0")
    assert fake.effect_count("pay") == (1 if fault.get("after_effect") else 0)
    cap = p.capture(hold.hold_ref, 300, "rental:R1:capture:0")
    assert (cap.amount, cap.released) == (300, HOLD - 300)
    assert fake.effect_count("pay") == 1


def test_an_unverifiable_answer_is_unavailable(make: Factory, fake: AlipayFake) -> None:
    p = make()
    hold = held(p, fake)
    fake.corrupt_next_sign("alipay.trade.pay")
    with pytest.raises(ProviderUnavailable, match="signature"):
        p.capture(hold.hold_ref, 300, "rental:R1:capture:0")
    assert p.capture(hold.hold_ref, 300, "rental:R1:capture:0").amount == 300
    assert fake.effect_count("pay") == 1


def test_requests_are_signed_with_the_app_key(make: Factory, fake: AlipayFake, keys: dict[str, str]) -> None:
    p = make()
    hold = held(p, fake)
    intruder, _ = generate_rsa_keypair()
    wrong = make(environ={"ALIPAY_APP_KEY": intruder, "ALIPAY_PUBLIC_KEY": keys["alipay_public"]})
    with pytest.raises(PaymentError) as refused:
        wrong.capture(hold.hold_ref, 300, "rental:R1:capture:0")
    assert refused.value.code == "alipay_rejected" and "isv.invalid-signature" in str(refused.value)
    assert fake.effect_count("pay") == 0

    tampered = p.authorize("", HOLD, "CNY", "rental:R2:hold:0")  # the amount changed on the phone
    assert tampered.client_action is not None
    altered = tampered.client_action["order_str"].replace("99.00", "0.01")
    answer = fake.renter_submits(altered, BUYER)
    assert answer["resultCode"] == "4000" and "isv.invalid-signature" in answer["result"]
    assert fake.effect_count("freeze") == 1
    with pytest.raises(WebhookRejected):  # the gateway's refusal is unsigned: not an Alipay answer to trust
        p.app_result(tampered.hold_ref, answer["result"])


def test_notifications_are_verified(
    make: Factory, fake: AlipayFake, receiver: NotificationReceiver, keys: dict[str, str]
) -> None:
    p = make()
    held(p, fake)
    (note,) = wait_for(lambda: list(receiver.of_type("fund_auth_freeze")), what="freeze notification")
    assert p.parse_notification(note.headers, note.body).kind == "hold.confirmed"
    with_empty = renotify(
        note.body, keys["alipay_private"], passback_params=""
    )  # signed with "passback_params="
    assert p.parse_notification(note.headers, with_empty).kind == "hold.confirmed"
    params = dict(urllib.parse.parse_qsl(note.body.decode()))
    altered = urllib.parse.urlencode({**params, "amount": "0.01"}).encode()
    with pytest.raises(WebhookRejected, match="signature"):
        p.parse_notification(note.headers, altered)
    with pytest.raises(WebhookRejected, match="signature"):  # signed, but not by Alipay
        p.parse_notification(note.headers, renotify(note.body, keys["app_private"]))
    with pytest.raises(WebhookRejected, match="app"):
        p.parse_notification(
            note.headers, renotify(note.body, keys["alipay_private"], app_id="2021009999999999")
        )
    with pytest.raises(WebhookRejected, match="ours"):
        p.parse_notification(note.headers, renotify(note.body, keys["alipay_private"], out_order_no="X1"))
    unsigned = urllib.parse.urlencode({k: v for k, v in params.items() if k != "sign"}).encode()
    for body in (unsigned, b"", b"\xff\xfe", b"not a form"):
        with pytest.raises(WebhookRejected):
            p.parse_notification(note.headers, body)


def test_notifications_duplicated_delayed_reordered_and_before_the_answer(
    make: Factory, fake: AlipayFake, receiver: NotificationReceiver
) -> None:
    p = make()
    fake.notify_copies = 2
    hold = held(p, fake)
    a, b = events(p, receiver, "fund_auth_freeze", 2)
    assert a == b  # one event, delivered twice: the same notify_id
    fake.notify_copies = 1

    fake.notify_mode = "manual"  # delayed: the capture and a refund answer first
    cap = p.capture(hold.hold_ref, 3000, "rental:R1:capture:0")
    ref = p.refund(hold.hold_ref, 500, "rental:R1:refund:0")
    assert list(receiver.of_type("trade_status_sync")) == []
    fake.deliver(reverse=True)  # ...and arrive the wrong way round
    refund_ev, captured_ev = events(p, receiver, "trade_status_sync", 2)
    assert (refund_ev.kind, refund_ev.data["ref"]) == ("refund.succeeded", ref.refund_ref)
    assert (captured_ev.kind, captured_ev.data["ref"]) == ("hold.captured", cap.capture_ref)

    fake.notify_mode = "before"  # the notification is there before the API answers
    receiver.clear()
    other = held(p, fake, "rental:R2:hold:0")
    receiver.clear()
    cap2 = p.capture(other.hold_ref, 200, "rental:R2:capture:0")
    (early,) = list(receiver.of_type("trade_status_sync"))  # no waiting: it was delivered first
    assert p.parse_notification(early.headers, early.body).data["ref"] == cap2.capture_ref

    fake.notify_mode = "after"
    receiver.answer = "fail"  # the cloud did not answer "success": Alipay delivers again later
    third = held(p, fake, "rental:R3:hold:0")
    wait_for(lambda: fake.queued, what="a notification to retry")
    receiver.answer = "success"
    fake.deliver()
    got = [p.parse_notification(r.headers, r.body) for r in receiver.of_type("fund_auth_freeze")]
    assert [e.hold_ref for e in got].count(third.hold_ref) == 2 and len({e.event_id for e in got[-2:]}) == 1


def test_timeout_is_unavailable(make: Factory, fake: AlipayFake) -> None:
    p = make()
    hold = held(p, fake)
    fake.timeout_next("alipay.fund.auth.operation.detail.query", 1.0)
    with pytest.raises(ProviderUnavailable):
        p.hold_status(hold.hold_ref)
    assert p.hold_status(hold.hold_ref) == "held"


# --- every step repeated by a restarted cloud: the same result, one effect -------------------

STEPS: dict[str, tuple[str, str, Callable[[AlipayFundAuthProvider, Hold], Any]]] = {
    "capture": ("alipay.trade.pay", "pay", lambda p, h: p.capture(h.hold_ref, 300, "rental:R1:capture:0")),
    "void": (
        "alipay.fund.auth.order.unfreeze",
        "unfreeze",
        lambda p, h: p.void(h.hold_ref, "rental:R1:void:0"),
    ),
    "refund": ("alipay.trade.refund", "refund", lambda p, h: p.refund(h.hold_ref, 100, "rental:R1:refund:0")),
    "payout": (
        "alipay.trade.order.settle",
        "settle",
        lambda p, h: p.payout(MERCHANT, 100, "CNY", h.hold_ref, "payout:M1:0"),
    ),
}


@pytest.mark.parametrize("step", list(STEPS))
def test_a_step_interrupted_by_a_restart_has_its_effect_once(
    make: Factory, fake: AlipayFake, step: str
) -> None:
    method, effect, run = STEPS[step]
    p = make()
    hold = held(p, fake)
    if step in ("refund", "payout"):
        p.capture(hold.hold_ref, 3000, "rental:R1:capture:0")
    fake.timeout_next(method, 1.0)  # the answer is lost: the cloud crashes waiting for it
    with pytest.raises(ProviderUnavailable):
        run(p, hold)
    wait_for(lambda: fake.effect_count(effect) == 1, what=f"the {effect} to happen at Alipay")
    first = run(make(), hold)  # the cloud restarted and repeats the step with the same key
    assert run(make(), hold) == first
    assert fake.effect_count(effect) == 1


# --- configuration ---------------------------------------------------------------------------


def test_config_refuses_missing_credentials(make: Factory, keys: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ALIPAY_APP_KEY"):
        make(environ={"ALIPAY_PUBLIC_KEY": keys["alipay_public"]})
    with pytest.raises(ConfigError, match="Alipay public key"):
        make(alipay_public_key_env=None)
    with pytest.raises(ConfigError, match="service_id"):
        make(service_id="")
    with pytest.raises(ConfigError, match="cannot read"):
        make(app_private_key_env=None, app_private_key_file=str(tmp_path / "missing.pem"))
    bad = tmp_path / "bad.pem"
    bad.write_text(
        f"-----BEGIN {PEM}-----\nnot a key\n-----END {PEM}-----\n"
    )  # PEM: see below, no key in the repo
    with pytest.raises(ConfigError, match="not a valid RSA key"):
        make(app_private_key_env=None, app_private_key_file=str(bad))
    with pytest.raises(ConfigError, match="rent_description"):
        make(deposit_product_mode="POSTPAY_UNCERTAIN")
    with pytest.raises(ConfigError, match="unknown config keys app_secret"):
        AlipayFundAuthProvider.from_config({"app_id": APP_ID, "app_secret": "x"})
    with pytest.raises(ConfigError, match="payee_user_id"):
        AlipayFundAuthProvider.from_config({"app_id": APP_ID})


def test_config_from_files_and_bare_base64_keys(
    make: Factory, fake: AlipayFake, keys: dict[str, str], tmp_path: Path, receiver: NotificationReceiver
) -> None:
    """Alipay's console hands keys out as one line of base64: accepted as well as PEM files."""
    bare = "".join(ln for ln in keys["app_private"].splitlines() if not ln.startswith("-----"))
    (tmp_path / "app.key").write_text(bare + "\n")
    (tmp_path / "alipay.pub").write_text(keys["alipay_public"])
    p = AlipayFundAuthProvider.from_config(
        {
            "app_id": APP_ID,
            "payee_user_id": SELLER,
            "notify_url": receiver.url,
            "service_id": SERVICE_ID,
            "category": CATEGORY,
            "app_private_key_file": str(tmp_path / "app.key"),
            "alipay_public_key_file": str(tmp_path / "alipay.pub"),
            "gateway": fake.gateway_url,
            "deposit_product_mode": "POSTPAY_UNCERTAIN",
            "rent_description": "1.50元/30分钟，99元封顶",
        },
        environ={},
    )
    assert p.name == "alipay"
    hold = held(p, fake)
    biz = fake.last_biz("alipay.fund.auth.order.app.freeze")
    assert biz["deposit_product_mode"] == "POSTPAY_UNCERTAIN"
    assert biz["post_payments"] == [{"name": "充电宝租金", "description": "1.50元/30分钟，99元封顶"}]
    assert p.hold_status(hold.hold_ref) == "held"
